"""Omni-Net flows, functional MAML and the policy-gradient pieces, with real gradients."""

import pytest
import torch
from torch.func import functional_call

from omnirl.agents import GaussianMLPPolicy
from omnirl.agents.omni_net import FLOWS, OmniNetPolicy
from omnirl.functional import flow_params, unstack
from omnirl.maml import adapt_tasks
from omnirl.pg import (
    PGBatch,
    batch_surrogate,
    distill_loss,
    policy_dist,
    task_dist,
    task_surrogate,
)


def one_task(batch, b):
    """Task b's columns as a one-task batch (task-major layout)."""
    k = batch.obs_TNO.shape[1] // batch.num_tasks
    return PGBatch(*(x[:, b * k : (b + 1) * k] for x in batch[:5]), 1)


def inner_step(policy, params, support, lr, first_order=False):
    """Reference single-task inner step, written out independently of the batched one."""
    dist = policy_dist(policy, params, support.obs_TNO, None)
    grads = torch.autograd.grad(
        batch_surrogate(dist, support), list(params.values()), create_graph=not first_order
    )
    return {name: p - lr * g for (name, p), g in zip(params.items(), grads, strict=True)}


def random_batch(policy, flow=None, T=5, N=6, obs_dim=3, tasks=2, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(T, N, obs_dim, generator=g, dtype=dtype)
    with torch.no_grad():
        dist = policy_dist(policy, None, obs, flow)
        act = dist.sample()
        logp = dist.log_prob(act).sum(-1)
    adv = torch.randn(T, N, generator=g, dtype=dtype)
    valid = torch.ones(T, N, dtype=dtype)
    valid[3:, 0] = 0  # one short episode
    return PGBatch(obs, act, logp, adv, valid, tasks)


@pytest.mark.parametrize("flow", FLOWS)
def test_functional_call_with_own_parameters_equals_module_call(flow):
    policy = OmniNetPolicy(3, 2, hidden=(8, 8), rank=2)
    obs = torch.randn(7, 3)
    params = dict(policy.named_parameters())
    direct, functional = (
        policy(obs, flow=flow),
        functional_call(policy, params, (obs,), {"flow": flow}),
    )
    torch.testing.assert_close(functional.loc, direct.loc, rtol=0, atol=0)
    torch.testing.assert_close(functional.scale, direct.scale, rtol=0, atol=0)
    plain = GaussianMLPPolicy(3, 2, hidden=(8,))
    torch.testing.assert_close(
        functional_call(plain, dict(plain.named_parameters()), (obs,)).loc,
        plain(obs).loc,
        rtol=0,
        atol=0,
    )


def test_flows_share_features_at_init_and_diverge_after_an_update():
    torch.manual_seed(0)
    policy = OmniNetPolicy(3, 2, hidden=(8, 8), rank=2)
    obs = torch.randn(10, 3)
    joint = policy.features(obs, "joint")
    torch.testing.assert_close(policy.features(obs, "pre"), joint, rtol=0, atol=0)
    torch.testing.assert_close(policy.features(obs, "meta"), joint, rtol=0, atol=0)
    for flow in ("pre", "meta"):  # and the same policy: the heads start as copies
        same = policy(obs, flow=flow).loc
        torch.testing.assert_close(same, policy(obs, flow="joint").loc, rtol=0, atol=0)
    batch = random_batch(policy, "pre", tasks=1)
    optimizer = torch.optim.SGD(policy.parameters(), lr=0.5)
    for _ in range(2):  # the first step moves the zero factor, the second uses it
        optimizer.zero_grad()
        batch_surrogate(policy_dist(policy, None, batch.obs_TNO, "pre"), batch).backward()
        optimizer.step()
    assert (policy.features(obs, "pre") - policy.features(obs, "joint")).abs().max() > 1e-4


@pytest.mark.parametrize("flow", FLOWS)
def test_each_flow_loss_reaches_exactly_its_parameters(flow):
    torch.manual_seed(1)
    policy = OmniNetPolicy(3, 2, hidden=(8, 8), rank=2)
    for p in policy.parameters():  # non-zero branches, so every used path carries gradient
        torch.nn.init.normal_(p, std=0.3)
    batch = random_batch(policy, flow, tasks=1)
    names, params = zip(*policy.named_parameters(), strict=True)
    loss = batch_surrogate(policy_dist(policy, None, batch.obs_TNO, flow), batch)
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    used = set(policy.flow_parameter_names(flow))
    for name, grad in zip(names, grads, strict=True):
        if name in used:
            assert grad is not None and grad.abs().sum() > 0, name
        else:
            assert grad is None or not grad.any(), name
    assert any(".pre." in n for n in used) == (flow == "pre")
    assert any(".meta." in n for n in used) == (flow == "meta")


def meta_objective(policy, support, query, lr, first_order):
    adapted = adapt_tasks(
        policy, flow_params(policy, None), support.by_task(), None, [lr], first_order
    )
    query_b = query.by_task()
    return task_surrogate(task_dist(policy, adapted, query_b.obs_BTKO, None), query_b).mean()


def tiny_problem():
    torch.manual_seed(2)
    policy = GaussianMLPPolicy(3, 2, hidden=(4,)).double()
    support = random_batch(policy, seed=3, dtype=torch.float64)
    query = random_batch(policy, seed=4, dtype=torch.float64)
    return policy, support, query


def test_second_order_meta_gradient_matches_finite_differences(numeric_gradient):
    policy, support, query = tiny_problem()
    lr = 0.5
    params = list(policy.parameters())
    grads = torch.autograd.grad(meta_objective(policy, support, query, lr, False), params)
    analytic = torch.cat([g.reshape(-1) for g in grads])
    numeric = numeric_gradient(lambda: meta_objective(policy, support, query, lr, False), params)
    torch.testing.assert_close(analytic, numeric, rtol=1e-5, atol=1e-7)


def test_first_order_drops_the_second_order_term():
    policy, support, query = tiny_problem()
    lr = 0.5
    params = list(policy.parameters())
    first = torch.autograd.grad(meta_objective(policy, support, query, lr, True), params)
    second = torch.autograd.grad(meta_objective(policy, support, query, lr, False), params)
    # First order: the gradient of the query loss at the adapted parameters, as if they were leaves.
    expected = [torch.zeros_like(p) for p in params]
    for b in range(support.num_tasks):
        adapted = inner_step(policy, flow_params(policy, None), one_task(support, b), lr, True)
        leaves = {k: v.detach().requires_grad_() for k, v in adapted.items()}
        loss = batch_surrogate(
            policy_dist(policy, leaves, one_task(query, b).obs_TNO, None), one_task(query, b)
        )
        for acc, g in zip(expected, torch.autograd.grad(loss, list(leaves.values())), strict=True):
            acc += g / support.num_tasks
    for f, e in zip(first, expected, strict=True):
        torch.testing.assert_close(f, e)
    assert any((f - s).abs().max() > 1e-6 for f, s in zip(first, second, strict=True))


def test_inner_step_returns_new_dict_and_leaves_module_untouched():
    policy, support, _ = tiny_problem()
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    params = flow_params(policy, None)
    adapted = unstack(adapt_tasks(policy, params, support.by_task(), None, [0.1]))[0]
    assert adapted is not params and set(adapted) == set(params)
    assert any(not torch.equal(adapted[k], params[k]) for k in params)
    for k, v in policy.state_dict().items():
        assert torch.equal(v, before[k])


def test_pg_surrogate_and_distill_by_hand():
    policy = GaussianMLPPolicy(1, 1, hidden=(2,))
    batch = random_batch(policy, obs_dim=1, tasks=1)
    dist = policy_dist(policy, None, batch.obs_TNO, None)
    # at the behaviour policy the ratio is 1: L = -mean_valid(A)
    expected = -(batch.adv_TN * batch.valid_TN).sum() / batch.valid_TN.sum()
    torch.testing.assert_close(batch_surrogate(dist, batch), expected)
    capped = batch._replace(logp_TN=batch.logp_TN - 1.0)  # ratio e > 1.2: capped
    torch.testing.assert_close(batch_surrogate(dist, capped, ratio_cap=1.2), 1.2 * expected)
    student = torch.tensor([[[1.0, 2.0]], [[0.0, 0.0]]])
    teacher = torch.tensor([[[0.0, 0.0]], [[5.0, 5.0]]])
    valid = torch.tensor([[1.0], [0.0]])
    torch.testing.assert_close(distill_loss(student, teacher, valid), torch.tensor(2.5))


def test_batched_adaptation_equals_per_task_adaptation():
    policy, support, query = tiny_problem()
    params = flow_params(policy, None)
    batched = unstack(adapt_tasks(policy, params, support.by_task(), None, [0.3, 0.1]))
    for b in range(support.num_tasks):
        single = inner_step(policy, params, one_task(support, b), 0.3)
        single = inner_step(policy, single, one_task(support, b), 0.1)
        for name in params:
            torch.testing.assert_close(batched[b][name], single[name])
