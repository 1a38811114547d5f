"""The EMA teacher (omnirl.ema)."""

import copy
import math

import pytest
import torch
from torch import nn

from omnirl.agents import GaussianMLPPolicy
from omnirl.ema import EMATeacher


def perturb(module, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


def snapshot(module):
    return [p.detach().clone() for p in module.parameters()]


def test_update_follows_the_ema_formula_over_several_steps():
    torch.manual_seed(0)
    student = GaussianMLPPolicy(3, 2, hidden=(4,))
    teacher = EMATeacher(student, ema_decay=0.9)
    for step in range(3):
        perturb(student, seed=step)
        old_teacher = snapshot(teacher.module)
        teacher.update(student)
        pairs = zip(teacher.module.parameters(), old_teacher, student.parameters(), strict=True)
        for t, o, s in pairs:
            torch.testing.assert_close(t, 0.9 * o + 0.1 * s)
            assert not torch.equal(t, s)  # it lags behind the student


def test_teacher_starts_as_an_independent_copy_of_the_student():
    torch.manual_seed(1)
    student = GaussianMLPPolicy(3, 2, hidden=(4,))
    teacher = EMATeacher(student)
    assert teacher.ema_decay == 0.99
    for t, s in zip(teacher.module.parameters(), student.parameters(), strict=True):
        assert torch.equal(t, s) and t.data_ptr() != s.data_ptr()
    before = snapshot(teacher.module)
    perturb(student, seed=0)  # only update() moves the teacher
    for t, b in zip(teacher.module.parameters(), before, strict=True):
        assert torch.equal(t, b)


def test_teacher_is_frozen_in_eval_mode_and_never_receives_gradients():
    torch.manual_seed(2)
    student = GaussianMLPPolicy(3, 2, hidden=(4,))
    teacher = EMATeacher(student)
    assert not teacher.module.training
    assert all(not p.requires_grad for p in teacher.module.parameters())
    # The student keeps its own mode and trainability.
    assert student.training and all(p.requires_grad for p in student.parameters())
    # A distillation loss towards the teacher's output trains the student only.
    obs = torch.randn(5, 3)
    target = teacher(obs)
    assert not target.loc.requires_grad
    loss = (student(obs).loc - target.loc).pow(2).sum() + 1.0
    loss.backward()
    assert all(p.grad is not None for p in student.parameters() if p is not student.log_std)
    assert all(p.grad is None for p in teacher.module.parameters())
    teacher.update(student)
    assert not teacher.module.training
    assert all(not p.requires_grad and p.grad is None for p in teacher.module.parameters())


def test_call_forwards_to_the_teacher_module():
    torch.manual_seed(3)
    teacher = EMATeacher(GaussianMLPPolicy(3, 2, hidden=(4,)))
    obs = torch.randn(7, 3)
    out = teacher(obs)
    torch.testing.assert_close(out.loc, teacher.module(obs).loc, rtol=0, atol=0)
    torch.testing.assert_close(out.scale, teacher.module(obs).scale, rtol=0, atol=0)
    with pytest.raises(ValueError, match="single flow"):  # keyword arguments are passed on
        teacher(obs, flow="pre")


def test_update_copies_buffers():
    torch.manual_seed(4)
    student = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    teacher = EMATeacher(student, ema_decay=0.5)
    student(torch.randn(16, 3) * 3 + 1)  # train mode: moves the running statistics
    assert not torch.equal(student[1].running_mean, teacher.module[1].running_mean)
    teacher.update(student)
    for t, s in zip(teacher.module.buffers(), student.buffers(), strict=True):
        assert torch.equal(t, s)


def test_zero_decay_makes_the_teacher_the_latest_student():
    torch.manual_seed(5)
    student = GaussianMLPPolicy(3, 2, hidden=(4,))
    teacher = EMATeacher(student, ema_decay=0.0)
    perturb(student, seed=1)
    teacher.update(student)
    for t, s in zip(teacher.module.parameters(), student.parameters(), strict=True):
        torch.testing.assert_close(t, s.detach())


def test_state_dict_round_trip_restores_parameters_and_decay():
    torch.manual_seed(6)
    student = GaussianMLPPolicy(3, 2, hidden=(4,))
    teacher = EMATeacher(student, ema_decay=0.9)
    perturb(student, seed=2)
    teacher.update(student)
    state = copy.deepcopy(teacher.state_dict())
    assert state["ema_decay"] == 0.9
    restored = EMATeacher(GaussianMLPPolicy(3, 2, hidden=(4,)), ema_decay=0.5)
    restored.load_state_dict(state)
    assert restored.ema_decay == 0.9
    for a, b in zip(restored.module.parameters(), teacher.module.parameters(), strict=True):
        assert torch.equal(a, b)
    assert all(not p.requires_grad for p in restored.module.parameters())
    # The two continue identically.
    perturb(student, seed=3)
    teacher.update(student)
    restored.update(student)
    for a, b in zip(restored.module.parameters(), teacher.module.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("decay", [1.0, 1.5, -0.1, math.nan])
def test_invalid_decay_raises(decay):
    student = GaussianMLPPolicy(3, 2, hidden=(4,))
    with pytest.raises(ValueError, match="ema_decay"):
        EMATeacher(student, ema_decay=decay)
    teacher = EMATeacher(student, ema_decay=0.9)
    other = GaussianMLPPolicy(3, 2, hidden=(4,))
    perturb(other, seed=4)
    state = EMATeacher(other, ema_decay=0.5).state_dict()
    before = snapshot(teacher.module)
    with pytest.raises(ValueError, match="ema_decay"):
        teacher.load_state_dict({**state, "ema_decay": decay})
    assert teacher.ema_decay == 0.9  # nothing half-loaded: neither decay nor parameters
    for t, b in zip(teacher.module.parameters(), before, strict=True):
        assert torch.equal(t, b)
