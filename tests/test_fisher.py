"""The structured KL-Hessian products equal double backward through the whole KL."""

import pytest
import torch

from omnirl.agents.omni import OmniAgent
from omnirl.agents.terms import MetaTerm, PretrainTerm
from omnirl.config import load_config
from omnirl.optim import hessian_vector_product
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


def generic_and_structured(agent, seed=0):
    params = list(agent.policy.parameters())
    kl = agent.objective(create_graph=True)[1]  # first evaluation also fixes the old policies
    v = torch.randn(
        sum(p.numel() for p in params),
        generator=torch.Generator().manual_seed(seed),
        dtype=torch.float64,
    )
    return hessian_vector_product(kl, params, 0.0)(v), agent.fisher_product()(v)


@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("ratio_cap", [None, 1.2])
def test_meta_term_product_equals_double_backward(first_order, ratio_cap):
    agent = omni_agent()
    policy = agent.policy
    support, query = batch_for(policy, "meta", 1).by_task(), batch_for(policy, "meta", 2).by_task()
    agent.terms = {"meta": MetaTerm("meta", support, query, [0.4], first_order, ratio_cap)}
    generic, structured = generic_and_structured(agent)
    torch.testing.assert_close(structured, generic, rtol=1e-7, atol=1e-9)
    assert generic.abs().max() > 1e-3


def test_omni_objective_product_equals_double_backward():
    agent = omni_agent()
    agent.terms = omni_terms(agent.policy)
    generic, structured = generic_and_structured(agent, seed=1)
    torch.testing.assert_close(structured, generic, rtol=1e-7, atol=1e-9)


def test_joint_weight_scales_only_the_joint_flow_loss():
    agent, weighted = omni_agent("joint_weight=1"), omni_agent("joint_weight=0.25")
    weighted.policy.load_state_dict(agent.policy.state_dict())
    agent.terms, weighted.terms = omni_terms(agent.policy), omni_terms(weighted.policy)
    loss_1, kl_1, metrics = agent.objective(create_graph=False)
    loss_w, kl_w, _ = weighted.objective(create_graph=False)
    pg = {key: metrics[f"{key}_pg"] for key in agent.terms}
    torch.testing.assert_close(loss_1, sum(pg.values()))
    torch.testing.assert_close(
        loss_w, pg["pre"] + pg["meta"] + 0.25 * (pg["joint_pre"] + pg["joint_meta"])
    )
    torch.testing.assert_close(kl_w, kl_1)  # the trust region is the same
    # Every term's KL is reported; before any step all are zero.
    assert {f"{key}_kl" for key in agent.terms} <= metrics.keys()


def test_more_inner_steps_fall_back_to_double_backward():
    agent = omni_agent()
    support, query = (
        batch_for(agent.policy, "meta", 1).by_task(),
        batch_for(agent.policy, "meta", 2).by_task(),
    )
    agent.terms = {"meta": MetaTerm("meta", support, query, [0.3, 0.15])}
    agent.objective(create_graph=True)
    assert agent.fisher_product() is None


def blocky(batch, stride):
    """``batch`` with every block of ``stride`` time steps a copy of its first step.

    Every strided average of such a batch equals the full average exactly, so products
    estimated on every ``stride``-th step must equal the exact ones.
    """
    return PGBatch(*(x[::stride].repeat_interleave(stride, 0) for x in batch[:5]), batch[5])


def structured_and_exact(agent, terms, stride, seed=0):
    """The stride-``stride`` structured product and double backward through the full KL."""
    agent.terms = terms
    params = list(agent.policy.parameters())
    kl = agent.objective(create_graph=True)[1]
    v = torch.randn(
        sum(p.numel() for p in params),
        generator=torch.Generator().manual_seed(seed),
        dtype=torch.float64,
    )
    exact = hessian_vector_product(kl, params, 0.0)(v)
    agent.cfg = agent.cfg.__class__(**{**agent.cfg.__dict__, "fvp_stride": stride})
    return agent.fisher_product()(v), exact


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


def test_strided_product_estimates_the_exact_one():
    # On ordinary data the stride-10 product is an estimate from a tenth of the steps: close
    # to the exact product, not equal to it.
    agent = omni_agent()
    T = 200
    support = batch_for(agent.policy, "meta", 1, T=T).by_task()
    query = batch_for(agent.policy, "meta", 2, T=T).by_task()
    terms = {"meta": MetaTerm("meta", support, query, [0.4])}
    strided, exact = structured_and_exact(agent, terms, 10, seed=3)
    cosine = torch.nn.functional.cosine_similarity(strided, exact, dim=0)
    assert 0.9 < cosine < 1 - 1e-9
