"""The RL agents' explicit objective and real outer steps on a tiny Navigation2D config."""

import math

import numpy as np
import pytest
import torch
from torch.distributions import Normal

from omnirl import registry
from omnirl.agents.objective import Distill, MetaTerm, Objective, PretrainTerm, flow_kl_weights
from omnirl.agents.omni_net import OmniNetPolicy
from omnirl.agents.policies import GaussianMLPPolicy
from omnirl.collector import Collector
from omnirl.config import load_config
from omnirl.learner import TaskDraw
from omnirl.pg import PGBatch, policy_dist, policy_distill

# ----------------------------------------------------------------------------- the objective


def random_batch(policy, flow, seed, num_tasks=2, T=6, N=4, obs_dim=2):
    """Episodes P drawn from ``policy``'s ``flow``, with one episode ending early."""
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(T, N, obs_dim, generator=g)
    with torch.no_grad():
        dist = policy_dist(policy, None, obs, flow)
        act = dist.loc + dist.scale * torch.randn(dist.loc.shape, generator=g)
        logp = dist.log_prob(act).sum(-1)
    valid = torch.ones(T, N)
    valid[3:, 1] = 0
    return PGBatch(obs, act, logp, torch.randn(T, N, generator=g), valid, num_tasks)


def omni_policy():
    torch.manual_seed(0)
    policy = OmniNetPolicy(2, 2, hidden=(6, 6), rank=2)
    with torch.no_grad():  # non-zero branches: the flows differ
        for p in policy.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return policy


def teacher(policy, flow, batch, kind="mean_sq"):
    """A teacher's policy on ``batch`` a little away from ``policy``'s: means and spreads moved."""
    with torch.no_grad():
        dist = policy_dist(policy, None, batch.obs_TNO, flow)
    return Distill(Normal(dist.loc + 0.1, dist.scale * 1.3), 0.5, kind)


def by_task(distill, num_tasks):
    """``distill`` with the teacher's ``(T, N, A)`` split by task into ``(B, T, K, A)``."""

    def split(x):
        t, n, a = x.shape
        return x.reshape(t, num_tasks, n // num_tasks, a).transpose(0, 1)

    loc, scale = split(distill.teacher.loc), split(distill.teacher.scale)
    return Distill(Normal(loc, scale), distill.weight, distill.kind)


def term_cases():
    """One objective term of every kind: (policy, term)."""
    plain = GaussianMLPPolicy(2, 2, hidden=(6,))
    omni = omni_policy()
    pre, support, query = (random_batch(omni, "meta", s) for s in (1, 2, 3))
    plain_s, plain_q = (random_batch(plain, None, s).by_task() for s in (4, 5))
    teacher_q = by_task(teacher(omni, "meta", query), 2)
    teacher_kl = by_task(teacher(omni, "meta", query, "kl"), 2)
    return {
        "pretrain": (plain, PretrainTerm(None, random_batch(plain, None, 6))),
        "pretrain-capped-distilled": (
            omni,
            PretrainTerm("pre", pre, 1.2, teacher(omni, "pre", pre)),
        ),
        "pretrain-kl-distilled": (
            omni,
            PretrainTerm("pre", pre, 1.2, teacher(omni, "pre", pre, "kl")),
        ),
        "meta-second-order": (plain, MetaTerm(None, plain_s, plain_q, [0.3])),
        "meta-first-order": (plain, MetaTerm(None, plain_s, plain_q, [0.3], first_order=True)),
        "meta-two-steps": (plain, MetaTerm(None, plain_s, plain_q, [0.3, 0.2])),
        "meta-capped-distilled": (
            omni,
            MetaTerm("meta", support.by_task(), query.by_task(), [0.3], False, 1.2, teacher_q),
        ),
        "meta-kl-distilled": (
            omni,
            MetaTerm("meta", support.by_task(), query.by_task(), [0.3], False, 1.2, teacher_kl),
        ),
    }


@pytest.mark.parametrize("case", list(term_cases()))
def test_objective_kl_is_exactly_zero_at_construction_with_zero_gradient(case):
    policy, term = term_cases()[case]
    objective = Objective(policy, {"term": term})
    # The evaluation made at construction (the outer step's gradient is taken there) and a
    # fresh one at the same parameters.
    for loss, kl, metrics in (objective.start, objective(create_graph=True)):
        assert kl.item() == 0.0 and metrics["term_kl"].item() == 0.0
        grads = torch.autograd.grad(kl, objective.params, allow_unused=True, retain_graph=True)
        assert all(g is None or torch.count_nonzero(g) == 0 for g in grads)
        assert any(g is not None for g in grads)  # the KL does depend on the parameters
        # ... and the loss has a real gradient there.
        loss_grads = torch.autograd.grad(loss, objective.params, allow_unused=True)
        assert any(g is not None and g.abs().max() > 0 for g in loss_grads)


def test_objective_fixes_the_old_policy_at_construction_not_at_the_first_call():
    policy, term = term_cases()["meta-second-order"]
    objective = Objective(policy, {"meta": term})
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.05)
    moved = objective(create_graph=False).kl  # the first call already sees the move
    assert moved > 1e-6
    assert Objective(policy, {"meta": term})(create_graph=False).kl.item() == 0.0


def test_trust_region_weighs_flows_equally_and_terms_within_a_flow():
    _, pre = term_cases()["pretrain-capped-distilled"]
    _, meta = term_cases()["meta-capped-distilled"]
    joint_pre = PretrainTerm("joint", pre.batch, 1.2)
    joint_meta = MetaTerm("joint", meta.support, meta.query, [0.3])
    terms = {"pre": pre, "meta": meta, "joint_pre": joint_pre, "joint_meta": joint_meta}
    weights = flow_kl_weights(terms)
    assert weights == pytest.approx(
        {"pre": 1 / 3, "meta": 1 / 3, "joint_pre": 1 / 6, "joint_meta": 1 / 6}
    )


@pytest.mark.parametrize("case", ["meta-capped-distilled", "meta-kl-distilled"])
def test_objective_loss_adds_the_unweighted_distillation_term_with_its_weight(case):
    policy, term = term_cases()[case]
    loss, _, metrics = Objective(policy, {"meta": term}, {"meta": 2.0})(create_graph=False)
    assert metrics["meta_distill"] > 0
    torch.testing.assert_close(loss, 2.0 * (metrics["meta_pg"] + 0.5 * metrics["meta_distill"]))


def test_kl_distillation_by_hand_per_state_summed_over_actions_mean_over_valid_steps():
    # Two states (the second invalid), two action dimensions.
    student = Normal(
        torch.tensor([[[1.0, 0.0]], [[9.0, 9.0]]]), torch.tensor([[[2.0, 1.0]], [[1.0, 1.0]]])
    )
    teacher_ = Normal(
        torch.tensor([[[0.0, 0.0]], [[0.0, 0.0]]]), torch.tensor([[[1.0, 0.5]], [[1.0, 1.0]]])
    )
    valid = torch.tensor([[1.0], [0.0]])
    # KL(N(0, 1) || N(1, 2)) = log 2 + 2/8 - 1/2; KL(N(0, .5) || N(0, 1)) = log 2 + .25/2 - 1/2
    expected = (math.log(2) + 0.25 - 0.5) + (math.log(2) + 0.125 - 0.5)
    torch.testing.assert_close(
        policy_distill(student, teacher_, valid, kind="kl"), torch.tensor(expected)
    )
    # mean_sq: the paper's form on the means, mean over action dimensions: (1 + 0) / 2
    torch.testing.assert_close(policy_distill(student, teacher_, valid), torch.tensor(0.5))
    # Per task (B, T, K, A): the same state as one task's only valid step.
    per_task = policy_distill(
        Normal(student.loc[None], student.scale[None]),
        Normal(teacher_.loc[None], teacher_.scale[None]),
        valid[None],
        (1, 2),
        "kl",
    )
    torch.testing.assert_close(per_task, torch.tensor([expected]))
    with pytest.raises(ValueError, match="distill: 'l2' is not one of mean_sq, kl"):
        policy_distill(student, teacher_, valid, kind="l2")


def test_kl_distillation_is_scale_free_and_trains_the_spread_mean_sq_only_the_means():
    policy, term = term_cases()["pretrain-kl-distilled"]
    dist = term.distribution(policy, create_graph=True)
    kl = policy_distill(dist, term.distill.teacher, term.batch.valid_TN, kind="kl")
    # Actions, means and spreads all 10x: the same KL; mean_sq grows 100x.
    big = lambda d: Normal(10 * d.loc, 10 * d.scale)  # noqa: E731
    scaled = policy_distill(big(dist), big(term.distill.teacher), term.batch.valid_TN, kind="kl")
    torch.testing.assert_close(scaled, kl)
    sq = policy_distill(dist, term.distill.teacher, term.batch.valid_TN)
    sq_big = policy_distill(big(dist), big(term.distill.teacher), term.batch.valid_TN)
    torch.testing.assert_close(sq_big, 100 * sq)
    # KL pulls the pre flow's spread towards the teacher's, mean_sq leaves it alone.
    log_std = dict(policy.named_parameters())["heads.pre.log_std"]
    (g_kl,) = torch.autograd.grad(kl, log_std, retain_graph=True)
    (g_sq,) = torch.autograd.grad(sq, log_std, allow_unused=True, materialize_grads=True)
    assert g_kl.abs().max() > 0 and g_sq.abs().max() == 0


# --------------------------------------------------------------------- real outer steps


def make_draw(*sets):
    """A tiny Navigation2D agent, a real collector and one iteration's task draw."""
    cfg = load_config("smoke-navigation-2d", [*sets, "torch_threads=1", "horizon=8"])
    family = registry.get_family(cfg.family)
    torch.manual_seed(cfg.seed)
    agent = registry.load_learner(cfg.agent, "rl")(cfg, 2, 2)
    collector = Collector(family.env_id, seed=cfg.seed)
    tasks = family.tasks.sample(cfg.tasks_per_iteration, np.random.default_rng(0))
    return agent, collector, TaskDraw(collector, tasks, 11)


def record_groups(collector):
    """Wrap ``collector.collect`` to record every pass's rollout flows."""
    passes, collect = [], collector.collect

    def recording(policy, tasks, episodes_per_task, groups, *args, **kwargs):
        passes.append([g.flow for g in groups])
        return collect(policy, tasks, episodes_per_task, groups, *args, **kwargs)

    collector.collect = recording
    return passes


def run_iteration(*sets):
    agent, collector, draw = make_draw(*sets)
    passes = record_groups(collector)
    before = {k: v.clone() for k, v in agent.policy.state_dict().items()}
    try:
        metrics = agent.update(draw)
    finally:
        collector.close()
    changed = {k for k, v in agent.policy.state_dict().items() if not torch.equal(v, before[k])}
    assert metrics and all(math.isfinite(v) for v in metrics.values())
    return agent, metrics, changed, passes, collector.stats["env_steps"]


def test_omni_joint_rollouts_own_collects_the_joint_flows_episodes_and_steps():
    _, reuse, _, reuse_passes, reuse_steps = run_iteration("agent=omni", "joint_rollouts=reuse")
    agent, own, changed, own_passes, own_steps = run_iteration("agent=omni", "joint_rollouts=own")
    assert reuse_passes == [["pre", "meta"], ["meta"]]
    assert own_passes == [["pre", "meta", "joint", "joint"], ["meta", "joint"]]
    assert own_steps > reuse_steps
    assert own["train/accepted"] == 1.0 and 0 < own["train/kl"] <= agent.cfg.max_kl
    assert {"train/joint_pre_pg", "train/joint_meta_pg", "train/joint_meta_kl"} <= own.keys()
    assert own["train/joint_meta_pg"] != reuse["train/joint_meta_pg"]  # other episodes
    # The joint flow's own parameters moved (and the branches of the other flows).
    assert any("joint" in name for name in changed) and len(changed) > 4


@pytest.mark.parametrize("agent_name", ["omni", "maml"])
def test_adam_outer_step_updates_the_policy_with_finite_metrics(agent_name):
    agent, metrics, changed, _, _ = run_iteration(f"agent={agent_name}", "outer_optimizer=adam")
    # Every parameter moved, but the pre branches' first factors: their gradient is zero while
    # the second factors are at their zero initialisation (the meta flow's inner step moves its).
    unchanged = set(agent.policy.state_dict()) - changed
    assert all(".pre.down." in name for name in unchanged) and len(changed) > len(unchanged)
    assert metrics["train/kl"] == 0.0 and metrics["train/grad_norm"] > 0
    assert "train/step_fraction" not in metrics and "train/loss_before" not in metrics
    assert agent.optimizer.state_dict()["state"][0]["step"] == 1
    if agent_name == "maml":
        assert metrics["train/loss"] == metrics["train/meta_pg"]
    else:  # first iteration: the teacher equals the student, the distillation terms are 0
        pg = {k: metrics[f"train/{k}_pg"] for k in ("pre", "meta", "joint_pre", "joint_meta")}
        expected = pg["pre"] + pg["meta"] + 0.5 * (pg["joint_pre"] + pg["joint_meta"])
        assert metrics["train/loss"] == pytest.approx(expected, rel=1e-5, abs=1e-7)


def test_maml_trpo_step_logs_the_objective_as_train_loss():
    agent, metrics, changed, passes, _ = run_iteration("agent=maml")
    assert passes == [[None], [None]]
    assert "train/loss_before" not in metrics
    assert metrics["train/loss"] == metrics["train/meta_pg"]
    if metrics["train/accepted"]:
        assert metrics["train/loss_after"] < metrics["train/loss"]
        assert 0 < metrics["train/kl"] <= agent.cfg.max_kl and changed
    else:
        assert not changed
