"""The batched collector: layout, masks, task assignment, groups, reproducibility."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from omnirl.agents import GaussianMLPPolicy
from omnirl.collector import Collector, RolloutGroup
from omnirl.envs.base import TaskEnvMixin
from omnirl.envs.tasks import TaskSpace, Uniform

LENGTHS = TaskSpace(fields={"length": Uniform(1, 10)}, summary="episode ends after `length` steps")


class CountdownEnv(TaskEnvMixin, gym.Env):
    """Known episode lengths: terminates after int(length) steps; reward = length; obs = step."""

    task_space = LENGTHS

    def __init__(self):
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
        self.action_space = gym.spaces.Box(-1, 1, (1,), np.float32)
        self._init_task(None)

    def _set_task_arrays(self, tasks):
        self._length = int(tasks[0]["length"])

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._apply_reset_options(options)
        self._t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self._t += 1
        return (
            np.array([self._t], np.float32),
            float(self._task["length"]),
            self._t >= self._length,
            False,
            {},
        )


gym.register("omnirl-test/Countdown-v0", entry_point=CountdownEnv, max_episode_steps=12)


def test_shapes_masks_and_task_layout_on_known_lengths():
    tasks = [{"length": 3.0}, {"length": 7.0}, {"length": 1.0}]
    policy = GaussianMLPPolicy(1, 1, hidden=(8,))
    with Collector("omnirl-test/Countdown-v0", seed=0) as collector:  # no native vector env: sync
        [episodes] = collector.collect(policy, tasks, episodes_per_task=4)
    assert episodes.obs_TNO.shape == (12, 12, 1) and episodes.act_TNA.shape == (12, 12, 1)
    assert episodes.rew_TN.shape == episodes.valid_TN.shape == episodes.logp_TN.shape == (12, 12)
    assert episodes.task_N.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert (episodes.num_tasks, episodes.episodes_per_task) == (3, 4)
    assert episodes.lengths_N.tolist() == [3.0] * 4 + [7.0] * 4 + [1.0] * 4
    # reward = the task's length: every sub-env of task b ran task b
    np.testing.assert_array_equal(episodes.returns_N.numpy(), [9.0] * 4 + [49.0] * 4 + [1.0] * 4)
    np.testing.assert_array_equal(episodes.task_returns_B().numpy(), [9.0, 49.0, 1.0])
    # observations are the step counter inside the episode, zero after it
    expected_obs = torch.arange(12.0)[:, None] * episodes.valid_TN
    torch.testing.assert_close(episodes.obs_TNO[..., 0], expected_obs)
    assert (episodes.act_TNA[episodes.valid_TN == 0] == 0).all()


def test_logp_is_the_behaviour_log_probability():
    policy = GaussianMLPPolicy(2, 2, hidden=(16,), init_std=0.3)
    tasks = [{"goal": [0.2, 0.3]}, {"goal": [-0.4, 0.1]}]
    [episodes] = Collector("omnirl/Navigation2D-v1", seed=1).collect(policy, tasks, 3, horizon=20)
    with torch.no_grad():
        expected = policy(episodes.obs_TNO).log_prob(episodes.act_TNA).sum(-1) * episodes.valid_TN
    torch.testing.assert_close(episodes.logp_TN, expected, rtol=1e-5, atol=1e-5)


def test_each_task_runs_on_its_own_sub_envs_native():
    # Navigation's reward is -||next_obs - goal||: recompute it with each sub-env's task goal.
    tasks = [{"goal": [0.4, -0.3]}, {"goal": [-0.2, 0.25]}, {"goal": [0.0, 0.5]}]
    policy = GaussianMLPPolicy(2, 2, hidden=(8,), init_std=0.05)
    [episodes] = Collector("omnirl/Navigation2D-v1", seed=0).collect(policy, tasks, 5, horizon=30)
    goals_N2 = torch.tensor([tasks[b]["goal"] for b in episodes.task_N.tolist()])
    pos_TN2 = episodes.obs_TNO[:-1] + 0.1 * episodes.act_TNA[:-1].clamp(-1.0, 1.0)
    expected_TN = -(pos_TN2 - goals_N2).norm(dim=-1) * episodes.valid_TN[:-1]
    torch.testing.assert_close(episodes.rew_TN[:-1], expected_TN, rtol=1e-4, atol=1e-5)


def test_halfcheetah_tasks_assigned_task_major():
    tasks = [{"velocity": 0.5}, {"velocity": 1.5}]
    with Collector("omnirl/HalfCheetahVel-v0", seed=0) as collector:
        policy = GaussianMLPPolicy(17, 6, hidden=(8,))
        [episodes] = collector.collect(policy, tasks, 3, horizon=5)
        [env] = collector._envs.values()
        assert [t["velocity"] for t in env.get_attr("task")] == [0.5] * 3 + [1.5] * 3
    assert episodes.valid_TN.sum() == 5 * 6


def test_reproducible_for_the_same_seed():
    policy = GaussianMLPPolicy(17, 6, hidden=(8,))
    tasks = [{"direction": 1.0}, {"direction": -1.0}]
    first = Collector("omnirl/HalfCheetahDir-v0", seed=3).collect(policy, tasks, 2, horizon=10)[0]
    second = Collector("omnirl/HalfCheetahDir-v0", seed=3).collect(policy, tasks, 2, horizon=10)[0]
    other = Collector("omnirl/HalfCheetahDir-v0", seed=4).collect(policy, tasks, 2, horizon=10)[0]
    for a, b in zip(first, second, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(first.obs_TNO, other.obs_TNO)
    # A per-call seed restarts both streams, whatever ran before.
    collector = Collector("omnirl/HalfCheetahDir-v0", seed=99)
    collector.collect(policy, tasks, 2, horizon=10)
    again = collector.collect(policy, tasks, 2, horizon=10, seed=3)[0]
    torch.testing.assert_close(again.act_TNA, first.act_TNA, rtol=0, atol=0)


def test_groups_with_shared_and_per_task_parameters():
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(2, 2, hidden=(8,), init_std=1e-3)
    own = {k: v.detach().clone() for k, v in policy.named_parameters()}
    shifted = dict(own, **{"mean.bias": own["mean.bias"] + 0.05})
    tasks = [{"goal": [0.3, 0.3]}, {"goal": [-0.3, 0.3]}]
    groups = [
        RolloutGroup(),  # the module's own parameters
        RolloutGroup(params=[own, shifted]),  # task 1 acts with a shifted mean
        RolloutGroup(params={"mean.bias": own["mean.bias"] - 0.05}),  # a partial dict for all tasks
    ]
    plain, per_task, partial = Collector("omnirl/Navigation2D-v1", seed=0).collect(
        policy, tasks, 2, groups, horizon=4
    )
    assert plain.obs_TNO.shape == per_task.obs_TNO.shape == (4, 4, 2)
    first_step_mean = policy(torch.zeros(1, 2)).loc.detach()
    torch.testing.assert_close(plain.act_TNA[0], first_step_mean.expand(4, 2), atol=1e-2, rtol=0)
    shift = torch.tensor([0.0, 0.0, 0.05, 0.05])[:, None]
    torch.testing.assert_close(per_task.act_TNA[0], first_step_mean + shift, atol=1e-2, rtol=0)
    torch.testing.assert_close(
        partial.act_TNA[0], (first_step_mean - 0.05).expand(4, 2), atol=1e-2, rtol=0
    )


def test_bad_collect_arguments():
    policy = GaussianMLPPolicy(2, 2, hidden=(8,))
    collector = Collector("omnirl/Navigation2D-v1", seed=0)
    with pytest.raises(ValueError, match="one parameter set per task"):
        collector.collect(policy, [{"goal": [0, 0]}] * 2, 1, [RolloutGroup(params=[{}])])
    with pytest.raises(ValueError, match="at least one task"):
        collector.collect(policy, [], 1)
    with pytest.raises(ValueError, match="out of range"):
        collector.collect(policy, [{"goal": [2, 0]}], 1)
    with pytest.raises(ValueError, match="vectorization must be one of"):
        Collector("omnirl/Navigation2D-v1", vectorization="threads").collect(
            policy, [{"goal": [0, 0]}], 1
        )


def _omni_groups(obs_dim, act_dim, num_tasks):
    """An Omni-Net with non-zero branches and two groups: the pre flow, per-task meta params."""
    from omnirl.agents.omni_net import OmniNetPolicy
    from omnirl.functional import flow_params

    torch.manual_seed(0)
    policy = OmniNetPolicy(obs_dim, act_dim, hidden=(16, 16), rank=2)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.1 * torch.randn_like(p))
    meta = flow_params(policy, "meta")
    per_task = [{k: v + 0.01 * b for k, v in meta.items()} for b in range(num_tasks)]
    return policy, [RolloutGroup("pre"), RolloutGroup("meta", per_task)]


@pytest.mark.parametrize(
    "family, num_tasks, episodes, horizon",
    [
        ("halfcheetah-vel", 9, 8, 12),  # one group: halves of 32 and 40 sub-envs
        ("hopper-rand-params", 9, 8, 60),  # random domains, early terminations, autoresets
    ],
)
def test_overlapped_collector_equals_the_sequential_one_bit_for_bit(
    family, num_tasks, episodes, horizon
):
    from omnirl.registry import get_family

    spec = get_family(family)
    probe = gym.make(spec.env_id)
    obs_dim, act_dim = probe.observation_space.shape[0], probe.action_space.shape[0]
    probe.close()
    policy, groups = _omni_groups(obs_dim, act_dim, num_tasks)
    tasks = spec.tasks.sample(num_tasks, np.random.default_rng(1))
    runs = {}
    for overlap in (False, True):
        with Collector(spec.env_id, seed=3, overlap=overlap) as collector:
            # Two collections: the second continues the seed stream the first left.
            runs[overlap] = [
                *collector.collect(policy, tasks, episodes, groups, horizon=horizon),
                *collector.collect(policy, tasks, episodes, groups[:1], horizon=horizon),
            ]
            assert bool(collector._parts(1, num_tasks * episodes, episodes)) == overlap
            assert bool(collector._parts(2, num_tasks * episodes, episodes)) == overlap
    for sequential, overlapped in zip(runs[False], runs[True], strict=True):
        for a, b in zip(sequential, overlapped, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    if family == "hopper-rand-params":  # the episodes did end early
        assert runs[True][0].valid_TN.sum() < runs[True][0].valid_TN.numel()


def test_native_collector_steps_only_running_episodes_and_equals_the_sync_one():
    # Hopper's episodes end early: the native vector env steps only the running ones, Gymnasium's
    # SyncVectorEnv autoresets the finished ones and keeps stepping them; the episodes are equal.
    from omnirl.registry import get_family

    spec = get_family("hopper-rand-params")
    policy = GaussianMLPPolicy(11, 3, (16,))
    tasks = spec.tasks.sample(3, np.random.default_rng(2))
    runs = {}
    for mode in ("native", "sync"):
        with Collector(spec.env_id, seed=4, vectorization=mode) as collector:
            runs[mode] = [collector.collect(policy, tasks, 4, horizon=80)[0] for _ in range(2)]
            if mode == "native":  # each sub-env stopped stepping when its episode ended
                elapsed = collector._vector_env(12).unwrapped._elapsed
                assert elapsed.tolist() == runs[mode][1].valid_TN.sum(0).int().tolist()
    for native, sync in zip(runs["native"], runs["sync"], strict=True):
        for a, b in zip(native, sync, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    lengths = runs["native"][0].valid_TN.sum(0)
    assert lengths.min() < lengths.max() < 80  # finished episodes idled while others ran


def test_overlapped_collection_splits_between_groups_or_into_halves_of_many_rows():
    assert not Collector("omnirl/HalfCheetahVel-v0")._parts(2, 40, 20)  # opt-in
    # Between groups; one group only into halves of enough rows for the same rounding.
    collector = Collector("omnirl/HalfCheetahVel-v0", overlap=True)
    assert [(p.lo, p.hi) for p in collector._parts(3, 10, 2)] == [(0, 10), (10, 30)]
    assert [(p.lo, p.hi) for p in collector._parts(1, 72, 8)] == [(0, 32), (32, 72)]
    assert collector._parts(1, 60, 2) is None  # halves under 32 rows: the batch steps as one
    collector.close()
