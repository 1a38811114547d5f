"""The structured KL-Hessian products equal double backward through the whole KL."""

import pytest
import torch

from omnirl.agents.objective import MetaTerm, Objective, PretrainTerm
from omnirl.agents.omni import OmniAgent
from omnirl.config import load_config
from omnirl.optim import flat_grad, hessian_vector_product
from omnirl.pg import PGBatch, policy_dist


def batch_for(policy, flow, seed, num_tasks=2, T=4, N=6, obs_dim=2):
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(T, N, obs_dim, generator=g, dtype=torch.float64)
    with torch.no_grad():
        dist = policy_dist(policy, None, obs, flow)
        act = dist.loc + dist.scale * torch.randn(dist.loc.shape, generator=g, dtype=torch.float64)
        logp = dist.log_prob(act).sum(-1)
    adv = torch.randn(T, N, generator=g, dtype=torch.float64)
    valid = torch.ones(T, N, dtype=torch.float64)
    valid[2:, 1] = 0
    return PGBatch(obs, act, logp, adv, valid, num_tasks)


def omni_agent(*overrides):
    torch.manual_seed(1)  # seeded: no test depends on the tests that ran before it
    sets = ["agent=omni", "hidden_sizes=[5, 5]", "branch_rank=2", *overrides]
    cfg = load_config("smoke-navigation-2d", sets)
    agent = OmniAgent(cfg, obs_dim=2, act_dim=2)
    agent.policy.double()
    agent.teacher.module.double()
    with torch.no_grad():  # non-zero branches: every path of the product is exercised
        for p in agent.policy.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return agent


def omni_terms(policy):
    pre, support, query = (
        batch_for(policy, f, s) for f, s in (("pre", 3), ("meta", 4), ("meta", 5))
    )
    return {
        "pre": PretrainTerm("pre", pre),
        "meta": MetaTerm("meta", support.by_task(), query.by_task(), [0.3]),
        "joint_pre": PretrainTerm("joint", pre, 1.2),
        "joint_meta": MetaTerm("joint", support.by_task(), query.by_task(), [0.3], False, 1.2),
    }


def random_vector(params, seed):
    return torch.randn(
        sum(p.numel() for p in params),
        generator=torch.Generator().manual_seed(seed),
        dtype=torch.float64,
    )


def generic_and_structured(objective, seed=0):
    params = objective.params
    kl = objective(create_graph=True).kl  # the old policies were fixed at construction
    v = random_vector(params, seed)
    return hessian_vector_product(kl, params, 0.0)(v), objective.fisher_product()(v)


@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("ratio_cap", [None, 1.2])
def test_meta_term_product_equals_double_backward(first_order, ratio_cap):
    agent = omni_agent()
    policy = agent.policy
    support, query = batch_for(policy, "meta", 1).by_task(), batch_for(policy, "meta", 2).by_task()
    terms = {"meta": MetaTerm("meta", support, query, [0.4], first_order, ratio_cap)}
    generic, structured = generic_and_structured(Objective(policy, terms))
    torch.testing.assert_close(structured, generic, rtol=1e-7, atol=1e-9)
    assert generic.abs().max() > 1e-3


def test_omni_objective_product_equals_double_backward():
    agent = omni_agent()
    objective = Objective(agent.policy, omni_terms(agent.policy), agent.loss_weights)
    generic, structured = generic_and_structured(objective, seed=1)
    torch.testing.assert_close(structured, generic, rtol=1e-7, atol=1e-9)


def test_joint_weight_scales_only_the_joint_flow_loss():
    agent, weighted = omni_agent("joint_weight=1"), omni_agent("joint_weight=0.25")
    weighted.policy.load_state_dict(agent.policy.state_dict())
    objective = Objective(agent.policy, omni_terms(agent.policy), agent.loss_weights)
    objective_w = Objective(weighted.policy, omni_terms(weighted.policy), weighted.loss_weights)
    loss_1, kl_1, metrics = objective(create_graph=False)
    loss_w, kl_w, _ = objective_w(create_graph=False)
    pg = {key: metrics[f"{key}_pg"] for key in objective.terms}
    torch.testing.assert_close(loss_1, sum(pg.values()))
    torch.testing.assert_close(
        loss_w, pg["pre"] + pg["meta"] + 0.25 * (pg["joint_pre"] + pg["joint_meta"])
    )
    torch.testing.assert_close(kl_w, kl_1)  # the trust region is the same
    # Every term's KL is reported; before any step all are zero.
    assert {f"{key}_kl" for key in objective.terms} <= metrics.keys()


def test_more_inner_steps_fall_back_to_double_backward():
    agent = omni_agent()
    support, query = (
        batch_for(agent.policy, "meta", 1).by_task(),
        batch_for(agent.policy, "meta", 2).by_task(),
    )
    objective = Objective(agent.policy, {"meta": MetaTerm("meta", support, query, [0.3, 0.15])})
    assert objective.fisher_product() is None


def blocky(batch, stride):
    """``batch`` with every block of ``stride`` time steps a copy of its first step.

    Every strided average of such a batch equals the full average exactly, so products
    estimated on every ``stride``-th step must equal the exact ones.
    """
    return PGBatch(*(x[::stride].repeat_interleave(stride, 0) for x in batch[:5]), batch[5])


def structured_and_exact(agent, terms, stride, seed=0):
    """The stride-``stride`` structured product and double backward through the full KL."""
    objective = Objective(agent.policy, terms)
    params = objective.params
    kl = objective(create_graph=True).kl
    v = random_vector(params, seed)
    exact = hessian_vector_product(kl, params, 0.0)(v)
    return objective.fisher_product(stride)(v), exact


def test_strided_product_adapts_on_the_full_support():
    # First order (J = I) with a blocky query: the strided Fisher average is exact, so the
    # product equals the exact one if and only if theta' is adapted on the whole support.
    agent = omni_agent()
    T, stride = 40, 10
    support = batch_for(agent.policy, "meta", 1, T=T).by_task()
    query = blocky(batch_for(agent.policy, "meta", 2, T=T), stride).by_task()
    terms = {"meta": MetaTerm("meta", support, query, [0.4], first_order=True)}
    strided, exact = structured_and_exact(agent, terms, stride)
    torch.testing.assert_close(strided, exact, rtol=1e-7, atol=1e-9)
    assert exact.abs().max() > 1e-3


@pytest.mark.parametrize("stride", [1, 10])
def test_strided_omni_product_equals_double_backward_on_blocky_data(stride):
    # Second order, all four omni terms: with blocky data every strided average is exact.
    agent = omni_agent()
    T = 40
    pre, support, query = (
        blocky(batch_for(agent.policy, f, s, T=T), 10)
        for f, s in (("pre", 3), ("meta", 4), ("meta", 5))
    )
    terms = {
        "pre": PretrainTerm("pre", pre),
        "meta": MetaTerm("meta", support.by_task(), query.by_task(), [0.3]),
        "joint_pre": PretrainTerm("joint", pre, 1.2),
        "joint_meta": MetaTerm("joint", support.by_task(), query.by_task(), [0.3], False, 1.2),
    }
    strided, exact = structured_and_exact(agent, terms, stride, seed=2)
    torch.testing.assert_close(strided, exact, rtol=1e-7, atol=1e-9)
    assert exact.abs().max() > 1e-3


@pytest.mark.parametrize("first_order", [False, True])
def test_strided_product_is_symmetric_positive_semidefinite(first_order):
    # On ordinary data the stride-10 product is an estimate from a tenth of the steps; it must
    # still be what conjugate gradient needs: sum_b J_b^T F_b J_b is symmetric and PSD.
    agent = omni_agent()
    T = 200
    support = batch_for(agent.policy, "meta", 1, T=T).by_task()
    query = batch_for(agent.policy, "meta", 2, T=T).by_task()
    terms = {"meta": MetaTerm("meta", support, query, [0.4], first_order)}
    objective = Objective(agent.policy, terms)
    product = objective.fisher_product(10)
    u, v = random_vector(objective.params, 4), random_vector(objective.params, 5)
    torch.testing.assert_close(u.dot(product(v)), v.dot(product(u)), rtol=1e-9, atol=1e-12)
    for w in (u, v, u - v):
        assert w.dot(product(w)) >= 0
    strided, exact = structured_and_exact(agent, terms, 10, seed=3)
    assert not torch.allclose(strided, exact)  # an estimate, not the exact product


@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("stride", [1, 10])
def test_a_meta_term_started_from_the_rollout_adaptation_steps_as_one_that_adapts_again(
    first_order, stride
):
    # The agents adapt once at the step's start (Agent.adapt_at_start: its values collect Q, its
    # graph starts the objective). The objective, its gradient, the Fisher products and the
    # TRPO step must be those of a term that adapts again, bit for bit (one term: no gradient
    # is accumulated in another order).
    from omnirl.agents.objective import trpo_update
    from omnirl.functional import flow_params
    from omnirl.maml import adapt_tasks

    results = []
    for given in (False, True):
        agent = omni_agent(f"first_order={str(first_order).lower()}", f"fvp_stride={stride}")
        support = batch_for(agent.policy, "meta", 2, T=100).by_task()
        query = batch_for(agent.policy, "meta", 12, T=100).by_task()
        start = None
        if given:
            params = flow_params(agent.policy, "meta")
            start = adapt_tasks(agent.policy, params, support, "meta", [0.4], first_order)
        term = MetaTerm("meta", support, query, [0.4], first_order, start=start)
        objective = Objective(agent.policy, {"meta": term})
        loss = objective.start.loss
        grad = flat_grad(loss, objective.params, retain_graph=True)
        product = objective.fisher_product(stride)(random_vector(objective.params, 7))
        metrics = trpo_update(objective, agent.cfg)
        after = torch.cat([p.detach().reshape(-1) for p in objective.params])
        results.append((loss.detach(), grad, product, metrics, after))
    (loss_a, grad_a, prod_a, m_a, after_a), (loss_b, grad_b, prod_b, m_b, after_b) = results
    assert torch.equal(loss_a, loss_b)
    assert torch.equal(grad_a, grad_b) and grad_a.abs().max() > 0
    assert torch.equal(prod_a, prod_b) and prod_a.abs().max() > 0
    assert m_a == m_b and m_a["train/accepted"] == 1.0
    assert torch.equal(after_a, after_b)
