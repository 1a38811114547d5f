"""Outer-loop pieces: conjugate gradient, the TRPO step, the EMA teacher."""

import pytest
import torch
from torch.distributions import kl_divergence

from omnirl.agents import GaussianMLPPolicy
from omnirl.ema import EMATeacher
from omnirl.optim import conjugate_gradient, hessian_vector_product, trpo_step


def test_conjugate_gradient_solves_an_spd_system():
    g = torch.Generator().manual_seed(0)
    m = torch.randn(12, 12, generator=g, dtype=torch.float64)
    a = m @ m.T + 0.5 * torch.eye(12, dtype=torch.float64)
    b = torch.randn(12, generator=g, dtype=torch.float64)
    x = conjugate_gradient(lambda v: a @ v, b, iters=50, residual_tol=1e-20)
    torch.testing.assert_close(x, torch.linalg.solve(a, b), rtol=1e-6, atol=1e-8)
    diagonal = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    x = conjugate_gradient(lambda v: diagonal @ v, torch.ones(3, dtype=torch.float64), iters=3)
    torch.testing.assert_close(x, torch.tensor([1.0, 0.5, 1 / 3], dtype=torch.float64))


def test_hessian_vector_product_matches_the_explicit_hessian():
    w = torch.randn(5, dtype=torch.float64, requires_grad=True)
    v = torch.randn(5, dtype=torch.float64)

    def f(x):
        return (x.sin() * x.roll(1)).sum() + x.pow(4).sum()

    product = hessian_vector_product(f(w), [w], damping=0.1)(v)
    expected = torch.autograd.functional.hessian(f, w.detach()) @ v + 0.1 * v
    torch.testing.assert_close(product, expected)


def policy_problem(seed=0, zero_advantages=False):
    torch.manual_seed(seed)
    policy = GaussianMLPPolicy(3, 2, hidden=(8,))
    obs = torch.randn(256, 3)
    with torch.no_grad():
        old = policy(obs)
        act = old.sample()
        logp_old = old.log_prob(act).sum(-1)
    adv = torch.zeros(256) if zero_advantages else torch.randn(256)

    def loss_fn():
        return -(torch.exp(policy(obs).log_prob(act).sum(-1) - logp_old) * adv).mean()

    def kl_fn():
        return kl_divergence(old, policy(obs)).sum(-1).mean()

    return policy, loss_fn, kl_fn


def test_trpo_step_improves_within_the_trust_region():
    policy, loss_fn, kl_fn = policy_problem()
    with torch.no_grad():
        before = loss_fn().item()
    metrics = trpo_step(list(policy.parameters()), loss_fn, kl_fn, max_kl=0.01)
    with torch.no_grad():
        after, kl = loss_fn().item(), kl_fn().item()
    assert metrics["accepted"] == 1.0
    assert after < before and kl <= 0.01 + 1e-9
    assert metrics["loss_after"] == pytest.approx(after) and metrics["kl"] == pytest.approx(kl)


def test_trpo_step_rejected_restores_parameters_exactly():
    policy, loss_fn, _ = policy_problem(seed=1)
    start = [p.detach().clone() for p in policy.parameters()]
    reference = [p.detach().clone() for p in policy.parameters()]

    def huge_kl():  # zero at the start, far outside the region for any move
        return 1e6 * sum(
            ((p - r) ** 2).sum() for p, r in zip(policy.parameters(), reference, strict=True)
        ) + 1e3 * sum(
            (p - r).abs().sum() for p, r in zip(policy.parameters(), reference, strict=True)
        )

    metrics = trpo_step(list(policy.parameters()), loss_fn, huge_kl, max_kl=1e-12, ls_max_steps=3)
    assert metrics["accepted"] == 0.0 and metrics["ls_steps"] == 3.0
    for p, s in zip(policy.parameters(), start, strict=True):
        assert torch.equal(p, s)


def test_trpo_step_with_zero_gradient_does_nothing():
    policy, loss_fn, kl_fn = policy_problem(zero_advantages=True)
    start = [p.detach().clone() for p in policy.parameters()]
    metrics = trpo_step(list(policy.parameters()), loss_fn, kl_fn, max_kl=0.01)
    assert metrics["accepted"] == 0.0 and metrics["grad_norm"] == 0.0
    assert all(torch.equal(p, s) for p, s in zip(policy.parameters(), start, strict=True))


def test_ema_teacher_follows_the_formula():
    torch.manual_seed(0)
    student = GaussianMLPPolicy(3, 2, hidden=(4,))
    teacher = EMATeacher(student, ema_decay=0.9)
    assert not teacher.module.training
    assert all(not p.requires_grad for p in teacher.module.parameters())
    old = [p.clone() for p in teacher.module.parameters()]
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p))
    teacher.update(student)
    for t, o, s in zip(teacher.module.parameters(), old, student.parameters(), strict=True):
        torch.testing.assert_close(t, 0.9 * o + 0.1 * s)
    restored = EMATeacher(GaussianMLPPolicy(3, 2, hidden=(4,)), ema_decay=0.5)
    restored.load_state_dict(teacher.state_dict())
    assert restored.ema_decay == 0.9
    for a, b in zip(restored.module.parameters(), teacher.module.parameters(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="ema_decay"):
        EMATeacher(student, ema_decay=1.0)
