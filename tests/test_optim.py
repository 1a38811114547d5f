"""Conjugate gradient, KL-Hessian products and the TRPO step (omnirl.optim)."""

import math

import pytest
import torch
from torch.distributions import kl_divergence
from torch.nn.utils import parameters_to_vector

from omnirl.agents import GaussianMLPPolicy
from omnirl.optim import (
    assign_flat,
    conjugate_gradient,
    flat_grad,
    hessian_vector_product,
    trpo_step,
)

F64 = torch.float64


@pytest.fixture(autouse=True)
def one_torch_thread():
    # These problems are tiny; intra-op threads only add synchronisation (100x slower on a
    # busy 2-core machine).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class CountingMatVec:
    """``x -> A x`` for an explicit matrix, counting the calls."""

    def __init__(self, a):
        self.a = a
        self.calls = 0

    def __call__(self, v):
        self.calls += 1
        return self.a @ v


# ----------------------------------------------------------------------- conjugate gradient
def test_cg_solves_a_random_spd_system():
    g = torch.Generator().manual_seed(0)
    m = torch.randn(12, 12, generator=g, dtype=F64)
    a = m @ m.T + 0.5 * torch.eye(12, dtype=F64)
    b = torch.randn(12, generator=g, dtype=F64)
    x = conjugate_gradient(lambda v: a @ v, b, iters=100, residual_tol=1e-24)
    torch.testing.assert_close(x, torch.linalg.solve(a, b), rtol=1e-6, atol=1e-6)
    assert torch.linalg.vector_norm(a @ x - b) < 1e-9


def test_cg_on_a_diagonal_matrix_converges_in_n_iterations():
    diagonal = torch.tensor([1.0, 2.0, 3.0, 5.0, 8.0, 13.0], dtype=F64)  # n distinct eigenvalues
    b = torch.ones(6, dtype=F64)
    expected = b / diagonal
    matvec = CountingMatVec(torch.diag(diagonal))
    x = conjugate_gradient(matvec, b, iters=6, residual_tol=0.0)
    torch.testing.assert_close(x, expected, rtol=1e-12, atol=1e-12)
    # One iteration fewer is not enough: the n iterations are really needed ...
    short = conjugate_gradient(matvec, b, iters=5, residual_tol=0.0)
    assert torch.linalg.vector_norm(short - expected) > 1e-3
    # ... and with a budget to spare, the residual test stops it right after them.
    matvec.calls = 0
    x = conjugate_gradient(matvec, b, iters=100, residual_tol=1e-20)
    torch.testing.assert_close(x, expected, rtol=1e-12, atol=1e-12)
    assert matvec.calls == 6


def test_cg_with_zero_rhs_returns_zero_without_a_product():
    matvec = CountingMatVec(torch.eye(4, dtype=F64))
    x = conjugate_gradient(matvec, torch.zeros(4, dtype=F64))
    assert torch.equal(x, torch.zeros(4, dtype=F64)) and matvec.calls == 0


def test_cg_stops_at_non_positive_curvature_instead_of_dividing_by_it():
    x = conjugate_gradient(lambda v: -v, torch.ones(3, dtype=F64))  # negative definite
    assert torch.equal(x, torch.zeros(3, dtype=F64))
    x = conjugate_gradient(lambda v: torch.zeros_like(v), torch.ones(3, dtype=F64))  # singular
    assert torch.equal(x, torch.zeros(3, dtype=F64))


# ------------------------------------------------------------------- Hessian-vector product
def test_hessian_vector_product_matches_the_explicit_hessian():
    g = torch.Generator().manual_seed(1)
    w0 = torch.randn(6, generator=g, dtype=F64)
    v = torch.randn(6, generator=g, dtype=F64)

    def f(x):
        return (x.sin() * x.roll(1)).sum() + x.pow(4).sum() + x[0] * x[3] * x[5]

    w = w0.clone().requires_grad_()
    product = hessian_vector_product(f(w), [w], damping=0.1)
    hessian = torch.autograd.functional.hessian(f, w0)
    torch.testing.assert_close(product(v), hessian @ v + 0.1 * v)
    # Reusable: the graph of the gradient is retained between products.
    torch.testing.assert_close(product(2 * v), 2 * (hessian @ v + 0.1 * v))


def test_hessian_vector_product_over_several_parameters_and_unused_ones():
    g = torch.Generator().manual_seed(2)
    a = torch.randn(2, 3, generator=g, dtype=F64, requires_grad=True)
    b = torch.randn(3, generator=g, dtype=F64, requires_grad=True)
    unused = torch.randn(2, generator=g, dtype=F64, requires_grad=True)

    def f(flat):
        fa, fb = flat[:6].view(2, 3), flat[6:9]
        return (fa @ fb).pow(2).sum() + fb.exp().sum()

    flat0 = torch.cat([a.detach().reshape(-1), b.detach(), unused.detach()])
    v = torch.randn(11, generator=g, dtype=F64)
    product = hessian_vector_product(f(torch.cat([a.reshape(-1), b])), [a, b, unused], 0.0)
    expected = torch.autograd.functional.hessian(f, flat0) @ v
    torch.testing.assert_close(product(v), expected)
    assert torch.equal(product(v)[9:], torch.zeros(2, dtype=F64))


class CountedCube(torch.autograd.Function):
    """``x^3`` whose first-order backward counts its calls (its own ops stay differentiable)."""

    backward_calls = 0

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x**3

    @staticmethod
    def backward(ctx, grad_out):
        CountedCube.backward_calls += 1
        (x,) = ctx.saved_tensors
        return 3 * x**2 * grad_out


def test_hessian_vector_product_builds_the_gradient_once():
    w = torch.tensor([0.5, -1.0, 2.0], dtype=F64, requires_grad=True)
    CountedCube.backward_calls = 0
    product = hessian_vector_product(CountedCube.apply(w).sum(), [w], damping=0.0)
    assert CountedCube.backward_calls == 1
    for seed in range(3):
        v = torch.randn(3, generator=torch.Generator().manual_seed(seed), dtype=F64)
        torch.testing.assert_close(product(v), 6 * w.detach() * v)  # H = diag(6 w)
    # Three products, each a backward over the gradient's graph, none through the KL's again.
    assert CountedCube.backward_calls == 1


def test_hessian_vector_product_of_a_linear_kl_is_the_damping_alone():
    w = torch.randn(4, dtype=F64, requires_grad=True)
    v = torch.randn(4, dtype=F64)
    product = hessian_vector_product((3.0 * w).sum(), [w], damping=0.25)
    torch.testing.assert_close(product(v), 0.25 * v)


# ------------------------------------------------------------------------ flat helpers
def test_flat_grad_and_assign_flat_round_trip_in_place():
    policy = GaussianMLPPolicy(3, 2, hidden=(4,))
    params = list(policy.parameters())
    grad = flat_grad(sum(p.sum() for p in params), params)
    assert torch.equal(grad, torch.ones(sum(p.numel() for p in params)))
    pointers = [p.data_ptr() for p in params]
    target = torch.arange(grad.numel(), dtype=torch.float32)
    assign_flat(params, target)
    assert torch.equal(parameters_to_vector(params), target)
    assert [p.data_ptr() for p in params] == pointers  # the parameters' own storage
    assert all(p.requires_grad and p.is_leaf for p in params)
    with pytest.raises(ValueError, match="entries"):
        assign_flat(params, torch.zeros(grad.numel() + 1))


# ------------------------------------------------------------------------------ TRPO
def policy_problem(seed=0, zero_advantages=False):
    """A Gaussian policy with fixed observations, actions and advantages, as in MAML-TRPO."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    policy = GaussianMLPPolicy(3, 2, hidden=(8,))
    obs = torch.randn(256, 3, generator=g)
    with torch.no_grad():
        old = policy(obs)  # the behaviour policy, fixed
        act = old.loc + old.scale * torch.randn(256, 2, generator=g)
        logp_old = old.log_prob(act).sum(-1)
    adv = torch.zeros(256) if zero_advantages else torch.randn(256, generator=g)

    def loss_fn():
        ratio = torch.exp(policy(obs).log_prob(act).sum(-1) - logp_old)
        return -(ratio * adv).mean()

    def kl_fn():
        return kl_divergence(old, policy(obs)).sum(-1).mean()

    return policy, loss_fn, kl_fn


def snapshot(module):
    return [p.detach().clone() for p in module.parameters()]


def assert_bitwise_equal(module, originals):
    for p, o in zip(module.parameters(), originals, strict=True):
        assert torch.equal(p, o)


def test_trpo_step_lowers_the_loss_within_the_trust_region():
    policy, loss_fn, kl_fn = policy_problem()
    pointers = [p.data_ptr() for p in policy.parameters()]
    with torch.no_grad():
        before = loss_fn().item()
    metrics = trpo_step(list(policy.parameters()), loss_fn, kl_fn, max_kl=0.01)
    with torch.no_grad():
        after, kl = loss_fn().item(), kl_fn().item()
    assert metrics["accepted"] == 1.0
    assert after < before
    assert kl <= 0.01 + 1e-9
    # The step is scaled to the trust region, not a timid one: the quadratic KL model is close.
    assert kl > 0.2 * 0.01
    assert metrics["loss"] == pytest.approx(before, rel=1e-6)
    assert metrics["loss_after"] == pytest.approx(after, rel=1e-6)
    assert metrics["kl"] == pytest.approx(kl, rel=1e-5)
    assert metrics["grad_norm"] > 0
    assert 1 <= metrics["ls_steps"] <= 15
    assert metrics["step_fraction"] == pytest.approx(0.8 ** (metrics["ls_steps"] - 1))
    assert all(torch.isfinite(p).all() for p in policy.parameters())
    assert [p.data_ptr() for p in policy.parameters()] == pointers  # updated in place


def test_trpo_step_on_a_quadratic_model_takes_the_exact_natural_gradient_step():
    # L = g.theta and KL = 1/2 d^T A d with d = theta - theta_0: the quadratic model is exact, so
    # the full step -sqrt(2 max_kl / g^T F^-1 g) F^-1 g (F = A + damping) is taken at once.
    g = torch.Generator().manual_seed(3)
    m = torch.randn(5, 5, generator=g, dtype=F64)
    a = m @ m.T + torch.eye(5, dtype=F64)
    grad = torch.randn(5, generator=g, dtype=F64)
    theta0 = torch.randn(5, generator=g, dtype=F64)
    theta = theta0.clone().requires_grad_()
    max_kl, damping = 0.05, 1e-5

    def kl_fn():
        d = theta - theta0
        return 0.5 * d @ a @ d

    metrics = trpo_step([theta], lambda: grad @ theta, kl_fn, max_kl, cg_damping=damping)
    fisher = a + damping * torch.eye(5, dtype=F64)
    s = torch.linalg.solve(fisher, grad)
    expected = theta0 - s * torch.sqrt(2 * max_kl / (grad @ s))
    assert metrics["accepted"] == 1.0 and metrics["step_fraction"] == 1.0
    assert metrics["ls_steps"] == 1.0
    torch.testing.assert_close(theta.detach(), expected, rtol=1e-8, atol=1e-10)
    assert metrics["kl"] == pytest.approx(max_kl, rel=1e-3) and metrics["kl"] <= max_kl
    assert metrics["grad_norm"] == pytest.approx(float(grad.norm()))


def test_trpo_step_rejected_by_the_kl_restores_parameters_bit_for_bit():
    policy, loss_fn, _ = policy_problem(seed=1)
    start = snapshot(policy)
    losses = []

    def recording_loss():
        loss = loss_fn()
        if not torch.is_grad_enabled():
            losses.append(loss.item())
        return loss

    def kl_fn():
        # Zero with zero gradient at the start and a Hessian of 2 I, so the step is well
        # defined; the L1 term (invisible to the Hessian) puts every candidate far outside.
        d = [p - s for p, s in zip(policy.parameters(), start, strict=True)]
        return sum((x**2).sum() for x in d) + 1e3 * sum(x.abs().sum() for x in d)

    metrics = trpo_step(list(policy.parameters()), recording_loss, kl_fn, max_kl=0.01)
    assert metrics["accepted"] == 0.0 and metrics["step_fraction"] == 0.0
    assert metrics["ls_steps"] == 15.0 and len(losses) == 15
    assert min(losses) < metrics["loss"]  # the loss would have improved: the KL said no
    assert metrics["loss_after"] == metrics["loss"] and metrics["kl"] == 0.0
    assert_bitwise_equal(policy, start)


def test_trpo_step_rejected_by_the_loss_restores_parameters_bit_for_bit():
    torch.manual_seed(4)
    w = torch.randn(7, requires_grad=True)
    w0 = w.detach().clone()
    direction = torch.randn(7)

    def loss_fn():  # gradient -direction at the start, yet every move costs more than it gains
        return -(direction @ w) + 100.0 * (w - w0).abs().sum()

    def kl_fn():
        return ((w - w0) ** 2).sum()

    metrics = trpo_step([w], loss_fn, kl_fn, max_kl=0.01, ls_max_steps=4)
    assert metrics["accepted"] == 0.0 and metrics["ls_steps"] == 4.0
    assert metrics["grad_norm"] == pytest.approx(float(direction.norm()))
    assert torch.equal(w.detach(), w0)


def test_trpo_step_with_zero_gradient_makes_no_step():
    policy, loss_fn, kl_fn = policy_problem(zero_advantages=True)
    start = snapshot(policy)
    calls = {"loss": 0, "kl": 0, "fvp": 0}

    def counted(fn, key):
        def wrapped():
            calls[key] += 1
            return fn()

        return wrapped

    def fvp_fn():
        calls["fvp"] += 1
        return None

    metrics = trpo_step(
        list(policy.parameters()),
        counted(loss_fn, "loss"),
        counted(kl_fn, "kl"),
        max_kl=0.01,
        fvp_fn=fvp_fn,
    )
    assert metrics["accepted"] == 0.0 and metrics["grad_norm"] == 0.0
    # Nothing past the gradient: no curvature products, no line search.
    assert metrics["ls_steps"] == 0.0 and calls == {"loss": 1, "kl": 1, "fvp": 0}
    assert_bitwise_equal(policy, start)


def test_trpo_step_with_a_non_finite_gradient_makes_no_step():
    w = torch.ones(3, requires_grad=True)

    def loss_fn():  # finite (zero) loss whose gradient 1 / (2 sqrt(w - 1)) is infinite
        return (w - 1).sqrt().sum()

    metrics = trpo_step([w], loss_fn, lambda: ((w - 1) ** 2).sum(), max_kl=0.01)
    assert metrics["loss"] == 0.0 and math.isinf(metrics["grad_norm"])
    assert metrics["accepted"] == 0.0 and metrics["ls_steps"] == 0.0
    assert torch.equal(w.detach(), torch.ones(3))


def test_trpo_step_with_non_positive_curvature_makes_no_step():
    w = torch.tensor([0.3, -0.2], dtype=F64, requires_grad=True)
    w0 = w.detach().clone()
    metrics = trpo_step(
        [w],
        lambda: w.sum(),
        lambda: -((w - w0) ** 2).sum(),  # not a KL: negative curvature, so shs <= 0
        max_kl=0.01,
        cg_damping=0.0,
    )
    assert metrics["accepted"] == 0.0 and metrics["ls_steps"] == 0.0
    assert torch.equal(w.detach(), w0)


def test_trpo_step_restores_parameters_when_the_line_search_raises():
    policy, loss_fn, kl_fn = policy_problem(seed=2)
    start = snapshot(policy)

    def failing_loss():
        if not torch.is_grad_enabled():
            raise FloatingPointError("non-finite outer loss")
        return loss_fn()

    with pytest.raises(FloatingPointError):
        trpo_step(list(policy.parameters()), failing_loss, kl_fn, max_kl=0.01)
    assert_bitwise_equal(policy, start)


def test_trpo_step_with_a_structured_product_matches_the_generic_one():
    policy_a, loss_a, kl_a = policy_problem(seed=5)
    policy_b, loss_b, kl_b = policy_problem(seed=5)
    params_b = list(policy_b.parameters())

    def fvp_fn():  # the same Hessian by another route, without the damping (trpo_step adds it)
        return hessian_vector_product(kl_b(), params_b, damping=0.0)

    metrics_a = trpo_step(list(policy_a.parameters()), loss_a, kl_a, max_kl=0.01)
    metrics_b = trpo_step(params_b, loss_b, kl_b, max_kl=0.01, fvp_fn=fvp_fn)
    assert metrics_a["accepted"] == metrics_b["accepted"] == 1.0
    for pa, pb in zip(policy_a.parameters(), params_b, strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-4, atol=1e-6)
    # A builder returning None falls back to differentiating kl_fn twice.
    policy_c, loss_c, kl_c = policy_problem(seed=5)
    trpo_step(list(policy_c.parameters()), loss_c, kl_c, max_kl=0.01, fvp_fn=lambda: None)
    for pa, pc in zip(policy_a.parameters(), policy_c.parameters(), strict=True):
        assert torch.equal(pa, pc)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_kl": 0.0}, "max_kl"),
        ({"max_kl": -1.0}, "max_kl"),
        ({"max_kl": 0.01, "ls_backtrack_ratio": 1.0}, "ls_backtrack_ratio"),
        ({"max_kl": 0.01, "ls_backtrack_ratio": 0.0}, "ls_backtrack_ratio"),
    ],
)
def test_trpo_step_rejects_invalid_settings(kwargs, match):
    w = torch.ones(2, requires_grad=True)
    with pytest.raises(ValueError, match=match):
        trpo_step([w], lambda: w.sum(), lambda: (w**2).sum(), **kwargs)
