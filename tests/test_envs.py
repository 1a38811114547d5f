"""The task families: Gymnasium API, determinism, vector == single, physics == HalfCheetah-v5."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from omnirl.envs.half_cheetah import action_to_ctrl


def sample_tasks(env_id, n, rng):
    return gym.make(env_id).unwrapped.sample_tasks(n, rng)


def random_actions(space, rng, shape=()):
    # Twice the box: exercises the clipping path too.
    low, high = 2 * space.low, 2 * space.high
    return rng.uniform(low, high, size=(*shape, *space.shape)).astype(np.float32)


def rollout(env, actions, seed, task):
    obs, _ = env.reset(seed=seed, options={"task": task})
    trace = [obs]
    for action in actions:
        obs, reward, terminated, truncated, _ = env.step(action)
        trace += [obs, reward, terminated, truncated]
        if terminated or truncated:
            obs, _ = env.reset()
            trace.append(obs)
    return trace


def test_check_env(env_id):
    env = gym.make(env_id)
    check_env(env.unwrapped)
    env.close()


def test_same_seed_same_trajectory(env_id, rng):
    env = gym.make(env_id)
    task = env.unwrapped.sample_tasks(1, rng)[0]
    actions = random_actions(env.action_space, rng, (60,))
    first, second = rollout(env, actions, 7, task), rollout(gym.make(env_id), actions, 7, task)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    if "Navigation" not in env_id:  # MuJoCo families: the reset noise depends on the seed
        other = rollout(gym.make(env_id), actions, 8, task)
        assert not np.array_equal(first[0], other[0])


def step_single_envs(env_id, tasks, seed, actions_TNA):
    """N separately made single envs with NEXT_STEP autoreset, the reference semantics."""
    envs = [gym.make(env_id) for _ in tasks]
    obs = [
        env.reset(seed=seed + i, options={"task": t})[0]
        for i, (env, t) in enumerate(zip(envs, tasks, strict=True))
    ]
    trace = [np.stack(obs)]
    ended = [False] * len(envs)
    for actions in actions_TNA:
        step = []
        for i, env in enumerate(envs):
            if ended[i]:
                step.append((env.reset()[0], 0.0, False, False))
                ended[i] = False
            else:
                o, r, term, trunc, _ = env.step(actions[i])
                step.append((o, r, term, trunc))
                ended[i] = term or trunc
        for k in range(4):
            trace.append(np.array([s[k] for s in step]))
    return trace


def step_vector_env(env, tasks, seed, actions_TNA):
    env.set_attr("task", tasks)
    trace = [env.reset(seed=seed)[0]]
    for actions in actions_TNA:
        trace.extend(env.step(actions)[:4])
    return trace


def test_native_vector_env_equals_single_envs(env_id, rng):
    n = 5
    horizon = gym.spec(env_id).max_episode_steps
    tasks = sample_tasks(env_id, n, rng)
    native = gym.make_vec(env_id, num_envs=n, vectorization_mode="vector_entry_point")
    actions = random_actions(native.single_action_space, rng, (horizon + 15, n))
    expected = step_single_envs(env_id, tasks, 3, actions)
    got = step_vector_env(native, tasks, 3, actions)
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, np.asarray(b, dtype=a.dtype))
    # ... and equals Gymnasium's SyncVectorEnv of the same env, the path foreign families take.
    sync = gym.make_vec(env_id, num_envs=n, vectorization_mode="sync")
    for a, b in zip(got, step_vector_env(sync, tasks, 3, actions), strict=True):
        np.testing.assert_array_equal(a, b)


def test_masked_step_freezes_the_sub_envs_left_out(env_id, rng):
    # Sub-env i is left out from step stop[i] on (as a collector leaves out finished episodes),
    # and the rows still stepped equal an unmasked run of the same batch step for step.
    n, steps = 4, 40
    tasks = sample_tasks(env_id, n, rng)
    actions = random_actions(gym.make(env_id).action_space, rng, (steps, n))
    stop = np.array([steps, 25, 10, 0])
    full = gym.make_vec(env_id, num_envs=n, vectorization_mode="vector_entry_point")
    masked = gym.make_vec(env_id, num_envs=n, vectorization_mode="vector_entry_point")
    expected = step_vector_env(full, tasks, 5, actions)
    masked.set_attr("task", tasks)
    last_obs = masked.reset(seed=5)[0]
    for t in range(steps):
        mask = t < stop
        obs, reward, terminated, truncated, _ = masked.unwrapped.step(actions[t], mask=mask)
        want = expected[1 + 4 * t : 5 + 4 * t]
        for got, ref in zip((obs, reward, terminated, truncated), want, strict=True):
            np.testing.assert_array_equal(got[mask], ref[mask])
        np.testing.assert_array_equal(obs[~mask], last_obs[~mask])
        assert not reward[~mask].any() and not (terminated | truncated)[~mask].any()
        last_obs = obs
    # A frozen sub-env resumes where it stopped: its step counter and state were kept.
    assert masked.unwrapped._elapsed[3] == 0 and masked.unwrapped._elapsed[0] > 0
    with pytest.raises(ValueError, match=r"mask must have shape \(4,\)"):
        masked.unwrapped.step(actions[0], mask=[True, False])


def test_masked_step_keeps_a_pending_autoreset():
    env = gym.make_vec(
        "omnirl/Navigation2D-v1", num_envs=2, vectorization_mode="vector_entry_point"
    ).unwrapped
    env.set_attr("task", [{"goal": [0.05, -0.05]}, {"goal": [0.5, 0.5]}])
    env.reset(seed=0)
    _, _, terminated, _, _ = env.step(np.array([[0.5, -0.5], [0.0, 0.0]]))
    assert terminated.tolist() == [True, False]
    # Left out, sub-env 0 neither resets nor moves; stepped again, it resets first (NEXT_STEP).
    obs, reward, _, _, _ = env.step(np.ones((2, 2)), mask=[False, True])
    np.testing.assert_allclose(obs[0], [0.05, -0.05], atol=1e-7)
    np.testing.assert_allclose(obs[1], [0.1, 0.1], atol=1e-7)
    obs, reward, _, _, _ = env.step(np.ones((2, 2)), mask=[True, False])
    assert obs[0].tolist() == [0.0, 0.0] and reward.tolist() == [0.0, 0.0]
    np.testing.assert_allclose(obs[1], [0.1, 0.1], atol=1e-7)


def test_navigation_termination_and_autoreset():
    env = gym.make_vec(
        "omnirl/Navigation2D-v1", num_envs=2, vectorization_mode="vector_entry_point"
    )
    goals = [[0.05, -0.05], [0.5, 0.5]]
    env.set_attr("task", [{"goal": g} for g in goals])
    obs, _ = env.reset(seed=0)
    # Actions live in [-1, 1]^2 and move by a tenth of themselves; 1.5 is clipped to 1.
    obs, reward, terminated, truncated, _ = env.step(np.array([[0.5, -0.5], [1.0, 1.5]]))
    np.testing.assert_allclose(reward, [0.0, -np.hypot(0.4, 0.4)], atol=1e-7)
    assert terminated.tolist() == [True, False] and not truncated.any()
    obs, reward, terminated, _, _ = env.step(np.zeros((2, 2)))
    assert obs[0].tolist() == [0.0, 0.0] and reward[0] == 0.0  # sub-env 0 was reset (next step)
    assert env.get_attr("task")[0] == {"goal": goals[0]}  # ... and kept its task
    np.testing.assert_allclose(obs[1], [0.1, 0.1], atol=1e-7)


@pytest.mark.parametrize("env_id", ["omnirl/HalfCheetahVel-v0", "omnirl/HalfCheetahDir-v0"])
def test_halfcheetah_physics_equal_gymnasium_v5(env_id, rng):
    reference = gym.make("HalfCheetah-v5").unwrapped
    ours = gym.make(env_id).unwrapped
    # No time limit: 300 steps of one episode, longer than the registered horizon.
    native = gym.make_vec(
        env_id, num_envs=3, vectorization_mode="vector_entry_point", max_episode_steps=None
    )
    reference.reset(seed=11)
    ours.reset(seed=11)
    native.reset(seed=[0, 11, 1])  # sub-env 1 gets the same seed as the reference
    np.testing.assert_array_equal(ours.data.qpos, reference.data.qpos)
    actions = random_actions(ours.action_space, rng, (300,))
    for action in actions:
        reference.step(action_to_ctrl(action.astype(np.float64)[None])[0])
        ours.step(action)
        native.step(np.stack([action] * 3))
    for field in ("qpos", "qvel"):
        np.testing.assert_array_equal(getattr(ours.data, field), getattr(reference.data, field))
        np.testing.assert_array_equal(native.batch.bind(field)[1], getattr(reference.data, field))


def test_tasks_persist_across_reset_and_autoreset(env_id, rng):
    single = gym.make(env_id)
    task = single.unwrapped.sample_tasks(1, rng)[0]
    single.reset(options={"task": task})
    single.reset()
    assert single.unwrapped.task == task
    tasks = sample_tasks(env_id, 3, rng)
    native = gym.make_vec(
        env_id, num_envs=3, vectorization_mode="vector_entry_point", max_episode_steps=2
    )
    native.set_attr("task", tasks)
    native.reset(seed=0)
    for _ in range(5):  # crosses two autoresets
        native.step(np.zeros((3, *native.single_action_space.shape)))
    assert list(native.get_attr("task")) == tasks
    native.reset(options={"task": tasks[0]})
    assert list(native.get_attr("task")) == [tasks[0]] * 3


BAD_TASKS = {
    "omnirl/Navigation2D-v1": [
        ({}, "missing field 'goal'"),
        ({"goal": [0.1, 0.2], "speed": 1}, "unknown task field"),
        ({"goal": [0.1, 1.7]}, r"'goal'.*out of range.*U\[-0.5, 0.5\]\^2.*ood-goal: U\[-1, 1\]"),
        ({"goal": 0.1}, r"'goal'.*wrong type or shape"),
        ({"goal": "left"}, r"'goal' must be numeric"),
        ([0.1, 0.2], "must be a dict"),
    ],
    "omnirl/HalfCheetahVel-v0": [
        ({"goal": 1.0}, "unknown task field"),
        ({"velocity": -0.5}, r"'velocity'.*out of range.*U\[0, 2\].*ood-velocity: U\[2, 3\]"),
        ({"velocity": 3.5}, r"'velocity'.*out of range"),
        ({"velocity": 1.0, "body_mass": 1.6}, r"'body_mass'.*ood-physics: 1.5\^U\[-1, 1\]"),
        ({"velocity": 1.0, "dof_damping": [1.0, 1.0]}, r"'dof_damping'.*wrong type or shape"),
        ({"velocity": float("nan")}, r"'velocity'.*out of range"),
        ({"velocity": [1.0]}, r"'velocity'.*wrong type or shape"),
        ({"velocity": True}, r"'velocity'.*wrong type"),
    ],
    "omnirl/HalfCheetahDir-v0": [
        ({"direction": 0}, r"'direction'.*not allowed.*\{-1, 1\}"),
        ({"direction": "forward"}, r"'direction'.*not allowed"),
        ({}, "missing field 'direction'"),
    ],
    "omnirl/HalfCheetahVelDomains-v0": [
        ({"body_mass": 1.0}, "missing field 'velocity'"),
        # u = 2.5 is beyond both the training domains (|u| <= 1) and ood-physics (|u| <= 2).
        ({"velocity": 1.0, "body_mass": 1.5**2.5}, r"'body_mass'.*U\[-1, 1\].*±U\[1, 2\]"),
        ({"velocity": 1.0, "geom_friction": -1.0}, r"'geom_friction'.*out of range"),
        ({"velocity": 1.0, "body_inertia": "heavy"}, r"'body_inertia' must be numeric"),
    ],
    "omnirl/Walker2dRandParams-v0": [
        ({"velocity": 1.0}, "unknown task field"),
        ({"dof_damping": 1.3**4.5}, r"'dof_damping'.*1.3\^U\[-3, 3\].*1.3\^±U\[3, 4\]"),
        ({"body_mass": [1.0] * 5}, r"'body_mass'.*wrong type or shape"),
    ],
    "omnirl/HopperRandParams-v0": [
        ({"body_mass": [1.0] * 8}, r"'body_mass'.*wrong type or shape"),
        ({"geom_friction": 0.0}, r"'geom_friction'.*out of range"),
    ],
}


@pytest.mark.parametrize(
    ("env_id", "task", "message"), [(e, t, m) for e, cases in BAD_TASKS.items() for t, m in cases]
)
def test_bad_tasks_raise_value_error(env_id, task, message):
    env = gym.make(env_id)
    with pytest.raises(ValueError, match=message):
        env.unwrapped.task = task
    with pytest.raises(ValueError, match=message):
        env.reset(options={"task": task})
    native = gym.make_vec(env_id, num_envs=2, vectorization_mode="vector_entry_point")
    with pytest.raises(ValueError, match=message):
        native.set_attr("task", [native.get_attr("task")[0], task])


def test_bad_actions_raise_value_error(env_id):
    env = gym.make(env_id)
    env.reset(seed=0)
    dim = env.action_space.shape[0]
    with pytest.raises(ValueError, match=rf"shape \({dim},\).*range"):
        env.step(np.zeros(dim + 1))
    with pytest.raises(ValueError, match="finite"):
        env.step(np.full(dim, np.nan))
    native = gym.make_vec(env_id, num_envs=2, vectorization_mode="vector_entry_point")
    native.reset(seed=0)
    with pytest.raises(ValueError, match=rf"shape \(2, {dim}\)"):
        native.step(np.zeros(dim))
    with pytest.raises(ValueError, match="expected 2 tasks"):
        native.set_attr("task", native.get_attr("task")[:1])


def test_sample_tasks_reproducible_and_in_range():
    env = gym.make("omnirl/HalfCheetahDir-v0").unwrapped
    a = env.sample_tasks(200, np.random.default_rng(5))
    assert a == env.sample_tasks(200, np.random.default_rng(5))
    assert {t["direction"] for t in a} == {-1.0, 1.0}
    vel = gym.make("omnirl/HalfCheetahVel-v0").unwrapped.sample_tasks(200, np.random.default_rng(5))
    assert all(0.0 <= t["velocity"] <= 2.0 for t in vel)
    goals = np.array(
        [
            t["goal"]
            for t in gym.make("omnirl/Navigation2D-v1").unwrapped.sample_tasks(
                200, np.random.default_rng(5)
            )
        ]
    )
    assert goals.shape == (200, 2) and np.abs(goals).max() <= 0.5


@pytest.mark.parametrize("env_id", ["omnirl/Walker2dRandParams-v0", "omnirl/HopperRandParams-v0"])
def test_unit_physics_equal_gymnasium_v5(env_id, rng):
    """From the same state under the same ctrl: qpos, qvel, reward and termination of v5."""
    reference = gym.make(env_id.split("/")[1].replace("RandParams-v0", "-v5")).unwrapped
    ours = gym.make(env_id).unwrapped
    native = gym.make_vec(
        env_id, num_envs=3, vectorization_mode="vector_entry_point", max_episode_steps=None
    )
    reference.reset(seed=5)
    ours.reset(seed=5)
    native.reset(seed=[0, 5, 1])  # sub-env 1 gets the reference's seed
    np.testing.assert_array_equal(ours.data.qpos, reference.data.qpos)
    for _ in range(300):
        # Random controls: the walker or hopper falls within 300 steps (termination).
        action = (0.3 * rng.uniform(-1, 1, ours.action_space.shape)).astype(np.float64)
        obs, reward, terminated, _, info = reference.step(action)
        mine = ours.step(action)
        assert mine[4] == {key: info[key] for key in mine[4]} and len(mine[4]) == 6
        got = native.step(np.stack([action] * 3))
        for field in ("qpos", "qvel"):
            expected = getattr(reference.data, field)
            np.testing.assert_array_equal(getattr(ours.data, field), expected)
            np.testing.assert_array_equal(native.batch.bind(field)[1], expected)
        np.testing.assert_array_equal(mine[0], obs)
        np.testing.assert_array_equal(got[0][1], obs)
        assert mine[1] == got[1][1] == reward and mine[2] == got[2][1] == terminated
        if terminated:
            break
    assert terminated
