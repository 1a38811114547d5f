"""The oracle: task-in-observation wrapper, analytic optimum, PPO training, evaluation, state."""

import json
import math

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from typer.testing import CliRunner

from omnirl import checkpoint
from omnirl.checkpoint import load_run
from omnirl.cli import app
from omnirl.config import load_config
from omnirl.envs.navigation import optimal_return
from omnirl.envs.tasks import DIRECTION_TASKS, NAVIGATION_TASKS, VELOCITY_TASKS
from omnirl.envs.wrappers import TaskInObservation
from omnirl.evaluation import adaptation_returns, analytic_optimum, sample_test_tasks
from omnirl.registry import get_family
from omnirl.trainer import Trainer

runner = CliRunner()


def wrapped(env_id):
    family = get_family(env_id)
    return TaskInObservation(gym.make(env_id), family.tasks), family.tasks


# ------------------------------------------------------------------------------- task vectors
def test_task_vectors_by_hand():
    goals = [{"goal": [0.1, -0.2]}, {"goal": [-0.5, 0.5]}]
    np.testing.assert_array_equal(NAVIGATION_TASKS.to_vectors(goals), [[0.1, -0.2], [-0.5, 0.5]])
    np.testing.assert_array_equal(VELOCITY_TASKS.to_vector({"velocity": 1.5}), [1.5])
    np.testing.assert_array_equal(DIRECTION_TASKS.to_vector({"direction": -1.0}), [-1.0])
    assert NAVIGATION_TASKS.to_vectors([]).shape == (0, 2)
    assert [s.vector_size for s in (NAVIGATION_TASKS, VELOCITY_TASKS, DIRECTION_TASKS)] == [2, 1, 1]
    low, high = NAVIGATION_TASKS.vector_bounds()
    np.testing.assert_array_equal(low, [-0.5, -0.5])
    np.testing.assert_array_equal(high, [0.5, 0.5])


# ------------------------------------------------------------------------------------ wrapper
# Both checkers advise on purpose-made choices: checking a wrapped env is the point here, and
# the families' action boxes are not [-1, 1] (the oracle rescales them itself).
@pytest.mark.filterwarnings("ignore:.*different from the unwrapped version")
@pytest.mark.filterwarnings("ignore:.*use a symmetric and normalized Box action space")
def test_wrapper_passes_both_env_checkers(env_id):
    env, _ = wrapped(env_id)
    check_env(env, skip_render_check=True)
    sb3_check_env(env)


def expected_reward(env_id, task, action, obs, info):
    """The family's reward for ``task`` computed from scratch (the drawn task must be in effect)."""
    if env_id == "omnirl/Navigation2D-v1":  # the observation starts with the new position
        return -np.linalg.norm(obs[:2] - np.asarray(task["goal"]))
    if "reward_survive" in info:  # Walker2d, Hopper: Gymnasium v5's reward
        return info["x_velocity"] + info["reward_survive"] - 1e-3 * np.square(action).sum()
    ctrl = np.clip(action / 10.0, -1.0, 1.0)
    v = info["x_velocity"]
    if "velocity" in task:
        return -abs(v - task["velocity"]) - 0.05 * np.square(ctrl).sum()
    return task["direction"] * v - 0.05 * np.square(ctrl).sum()


def test_wrapper_appends_the_drawn_task(env_id):
    env, space = wrapped(env_id)
    size = space.vector_size
    assert env.observation_space.shape == (gym.make(env_id).observation_space.shape[0] + size,)
    drawn, first = [], []
    env.action_space.seed(0)  # the same actions on every run of the test
    for episode in range(4):
        obs, _ = env.reset(seed=10 + episode)
        first.append(obs)
        task = env.get_wrapper_attr("task")
        drawn.append(task)
        assert space.validate(task) == task and obs in env.observation_space
        np.testing.assert_allclose(obs[-size:], space.to_vector(task), rtol=1e-6)
        for _ in range(3):  # the task stays in the observation and decides the reward
            action = env.action_space.sample()
            obs, reward, _, _, info = env.step(action)
            np.testing.assert_allclose(obs[-size:], space.to_vector(task), rtol=1e-6)
            # The reward is a difference of terms of order 1 that can nearly cancel: its
            # rounding error is relative to the terms, so the tolerance has an absolute part.
            assert reward == pytest.approx(
                expected_reward(env_id, task, action, obs, info), rel=1e-5, abs=1e-6
            )
    if space is not DIRECTION_TASKS:  # two directions only: repeats are likely
        assert len({json.dumps(t) for t in drawn}) == len(drawn)
    obs, _ = env.reset(seed=10)  # the seed decides the task and the start
    assert env.get_wrapper_attr("task") == drawn[0]
    np.testing.assert_array_equal(obs, first[0])
    env.reset()  # without options or seed: a new task from the generator's stream
    if space is not DIRECTION_TASKS:
        assert env.get_wrapper_attr("task") != drawn[0]


def test_task_given_in_options_is_used():
    env, space = wrapped("omnirl/Navigation2D-v1")
    task = {"goal": [0.3, -0.4]}
    for seed in (None, 5):
        obs, _ = env.reset(seed=seed, options={"task": task})
        assert env.get_wrapper_attr("task") == task
        np.testing.assert_allclose(obs, [0.0, 0.0, 0.3, -0.4], rtol=1e-6)
        obs, reward, *_ = env.step(np.array([1.0, -1.0]))  # moves by (0.1, -0.1)
        assert reward == pytest.approx(-math.hypot(0.2, 0.3), rel=1e-6)
    with pytest.raises(ValueError, match="goal"):
        env.reset(options={"task": {"goal": [2.0, 0.0]}})


# --------------------------------------------------------------------------- analytic optimum
def test_optimal_return_by_hand():
    returns = optimal_return(np.array([[0.25, 0.0], [0.105, 0.0], [0.3, -0.15], [0.0, 0.0]]), 100)
    # (0.25, 0): distances 0.15, 0.05, then 0 on the goal (terminates).
    # (0.105, 0): 0.005 after one step, inside the 0.01 box: terminates at once.
    # (0.3, -0.15): (0.2, 0.05) -> (0.1, 0) -> (0, 0).
    # (0, 0): the first step (action 0) is already on the goal.
    expected = [-0.2, -0.005, -(math.hypot(0.2, 0.05) + 0.1), 0.0]
    np.testing.assert_allclose(returns, expected, atol=1e-8)
    # Truncation: with a horizon of 2 the (0.25, 0) episode stops after 0.15 + 0.05.
    assert optimal_return(np.array([[0.25, 0.0]]), 2)[0] == pytest.approx(-0.2)
    assert optimal_return(np.array([[0.25, 0.0]]), 1)[0] == pytest.approx(-0.15)


def test_optimal_return_matches_the_env_and_beats_other_policies(rng):
    goals = rng.uniform(-0.5, 0.5, size=(5, 2))
    best = optimal_return(goals, 100)
    env = gym.make("omnirl/Navigation2D-v1")
    for goal, value in zip(goals, best, strict=True):
        for kind in ("greedy", "slow", "noisy"):
            pos, _ = env.reset(options={"task": {"goal": goal.tolist()}})
            total, done = 0.0, False
            while not done:
                action = np.clip((goal - pos) / 0.1, -1.0, 1.0)
                if kind == "slow":
                    action = 0.8 * action
                elif kind == "noisy":
                    action = action + rng.normal(0, 0.2, 2)
                pos, reward, terminated, truncated, _ = env.step(action)
                total += reward
                done = terminated or truncated
            if kind == "greedy":
                assert total == pytest.approx(value, abs=1e-6)
            else:
                assert total < value  # nothing beats the optimum


# ------------------------------------------------------------------------- training and eval
def train_smoke(tmp_path, *extra):
    result = runner.invoke(
        app,
        [
            "train",
            "smoke-navigation-2d",
            "--agent",
            "oracle",
            "--iterations",
            "2",
            "--no-progress",
            "--set",
            f"run_dir={tmp_path / 'runs'}",
            *extra,
        ],
    )
    assert result.exit_code == 0, result.output
    [run] = (tmp_path / "runs").iterdir()
    return run


def test_train_and_evaluate_through_the_cli(tmp_path):
    run = train_smoke(tmp_path)
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["iteration"] for line in lines] == [1, 2]
    cfg = load_config(str(run / "config.yaml"))
    budget = cfg.tasks_per_iteration * cfg.episodes_per_task * cfg.horizon
    for i, line in enumerate(lines, start=1):
        # PPO takes the meta-iteration's env-step budget (whole rollouts, here exactly).
        assert line["rollout/env_steps_total"] == i * budget
        assert line["time/sps"] > 0 and "train/value_loss" in line and "time/ppo_s" in line
    # 8 envs x 5 steps per iteration with horizon 10: episodes first end in iteration 2.
    assert "rollout/return_pre" not in lines[0] and lines[1]["rollout/episodes"] == 8
    assert lines[1]["rollout/return_pre"] < 0
    # Only iteration 2 has a score: its rollouts' return, earned by the policy it started
    # from, so best.pt is the checkpoint of iteration 1.
    state = checkpoint.load(run / "checkpoints" / "best.pt")["agent"]
    assert state["num_timesteps"] == budget and set(state["policy"])

    out = tmp_path / "eval"
    result = runner.invoke(
        app,
        [
            "evaluate",
            str(run),
            "--tasks",
            "3",
            "--steps",
            "2",
            "--episodes",
            "2",
            "--out",
            str(out),
        ],
        terminal_width=200,
    )
    assert result.exit_code == 0, result.output
    data = json.loads((out / "eval.json").read_text())
    [entry] = data["runs"]
    returns = np.asarray(entry["returns"])
    assert entry["agent"] == "oracle" and returns.shape == (3, 3)
    assert (returns == returns[0]).all()  # not adapted: the same row after 0, 1, 2 steps
    best = optimal_return(np.array([t["goal"] for t in data["tasks"]]), 100)
    assert data["optimum"] == pytest.approx(best.mean())
    assert (returns[0] <= best + 1e-9).all()  # no policy beats the optimum on any task
    assert (out / "eval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = runner.invoke(app, ["evaluate", str(run), "--flow", "meta", "--out", str(out)])
    assert result.exit_code == 2 and "its flows: none" in result.output
    result = runner.invoke(app, ["render", str(run), "--out", str(tmp_path / "x.gif")])
    assert result.exit_code == 2 and "does not adapt" in result.output


def test_optimum_only_for_navigation():
    tasks = sample_test_tasks(get_family("halfcheetah-vel"), 3, seed=0)
    assert analytic_optimum("halfcheetah-vel", tasks) is None
    goals = sample_test_tasks(get_family("navigation-2d"), 3, seed=0)
    best = optimal_return(np.array([t["goal"] for t in goals]), 100)
    assert analytic_optimum("navigation-2d", goals) == pytest.approx(best.mean())


@pytest.mark.parametrize("config", ["smoke-navigation-2d", "smoke-halfcheetah-vel"])
def test_checkpoint_round_trip_and_resume(tmp_path, config):
    sets = ["agent=oracle", "iterations=2", f"run_dir={tmp_path}"]
    trainer = Trainer(load_config(config, sets), tmp_path / "run")
    trainer.train()
    trainer.close()
    agent = trainer.agent
    restored = load_run(tmp_path / "run", "latest")
    cfg, loaded = restored.cfg, restored.learner
    family = get_family(cfg.family)
    obs = np.random.default_rng(0).normal(size=(6, agent.policy.observation_space.shape[0]))
    size = family.tasks.vector_size
    np.testing.assert_array_equal(
        agent.deterministic_actions(obs[:, :-size], obs[:, -size:]),
        loaded.deterministic_actions(obs[:, :-size], obs[:, -size:]),
    )
    if config == "smoke-halfcheetah-vel":  # normalised observations: the statistics came too
        assert loaded.obs_rms.count == agent.obs_rms.count > 1
        np.testing.assert_array_equal(loaded.obs_rms.mean, agent.obs_rms.mean)
    tasks = sample_test_tasks(family, 2, seed=1)
    np.testing.assert_array_equal(
        agent.task_returns(tasks, 2, horizon=10, seed=3),
        loaded.task_returns(tasks, 2, horizon=10, seed=3),
    )
    # The evaluation entry point dispatches to task_returns and repeats it for every step.
    rows = adaptation_returns(loaded, None, tasks, [0.1, 0.05], 2, horizon=10, seed=3)
    np.testing.assert_array_equal(rows, np.tile(loaded.task_returns(tasks, 2, 10, 3), (3, 1)))
    # Resuming continues PPO's step count and optimizer where the checkpoint left them.
    resumed = Trainer.resume(tmp_path / "run", iterations=3)
    assert resumed.agent.num_timesteps == agent.num_timesteps
    resumed.train()
    resumed.close()
    assert resumed.agent.num_timesteps > agent.num_timesteps
