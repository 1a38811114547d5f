"""Task splits and physics domains (issue 15): what each split draws, that a domain changes its
own sub-env's physics and nothing else, bit-identity with single envs and the compiled models,
and ``omnirl evaluate --split`` / ``render --task`` / ``list`` on real runs."""

import json
from pathlib import Path

import gymnasium as gym
import mujoco
import numpy as np
import pytest
from typer.testing import CliRunner

from omnirl import registry
from omnirl.cli import app
from omnirl.envs.distributions import Multipliers
from omnirl.envs.physics import PHYSICS_FIELDS, model_shapes
from omnirl.envs.wrappers import TaskInObservation
from omnirl.evaluation import sample_test_tasks
from omnirl.options import EvaluateOptions, OptionError
from omnirl.seeding import TEST_STREAM, VAL_STREAM, stream

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "results" / "runs"
runner = CliRunner()
# The families whose tasks may carry physics multipliers (in some split); each declares the
# split ood-physics, domains outside those of training.
PHYSICS_FAMILIES = [
    f.env_id
    for f in registry.families().values()
    if any(
        isinstance(d, Multipliers)
        for s in f.tasks.split_names
        for d in f.tasks.split_fields(s).values()
    )
]


def committed_run(prefix):
    [run] = RUNS.glob(f"{prefix}-0-*")
    return run


# ------------------------------------------------------------------------------------ splits
def test_physics_shapes_match_the_models():
    assert len(PHYSICS_FAMILIES) == 5
    for env_id in PHYSICS_FAMILIES:
        env = gym.make(env_id).unwrapped
        space = registry.get_family(env_id).tasks
        for split in space.split_names:
            for key, dist in space.split_fields(split).items():
                if isinstance(dist, Multipliers):
                    assert dist.shape == model_shapes(env.model)[key], (env_id, split, key)


def test_every_split_draws_valid_tasks_and_ood_splits_leave_training(env_id):
    space = registry.get_family(env_id).tasks
    assert space.split_names[:3] == ("train", "test", "val") and len(space.split_names) > 3
    for split in space.split_names:
        tasks = space.sample(30, np.random.default_rng(3), split)
        assert [space.validate(t) for t in tasks] == tasks  # any split's values are accepted
        if split in ("train", "test", "val"):
            continue
        for key, dist in space.ood[split].fields.items():
            train = space.fields.get(key)
            arr = np.array([t[key] for t in tasks], dtype=float)
            if train is None:  # a field training never varies: physics of a unit-trained family
                assert (arr != 1.0).reshape(len(tasks), -1).all(axis=1).all()
            elif isinstance(dist, Multipliers):  # every element outside the training domains
                assert not train.allows(arr).any()
            else:  # each task beyond training
                assert not train.allows(arr).reshape(len(tasks), -1).all(axis=1).any()


def test_the_test_split_reproduces_the_committed_evaluations():
    for name, family in [
        ("navigation-2d-500it", "navigation-2d"),
        ("halfcheetah-vel-200it", "halfcheetah-vel"),
        ("halfcheetah-dir-200it", "halfcheetah-dir"),
    ]:
        committed = json.loads((ROOT / "results" / f"{name}.json").read_text())
        tasks = sample_test_tasks(registry.get_family(family), len(committed["tasks"]), 1000)
        assert tasks == committed["tasks"]


def test_each_split_has_its_own_stream():
    family = registry.get_family("halfcheetah-vel")
    test, val = (sample_test_tasks(family, 20, 7, s) for s in ("test", "val"))
    assert test == family.tasks.sample(20, stream(7, TEST_STREAM))
    assert val == family.tasks.sample(20, stream(7, VAL_STREAM)) and val != test
    ood = sample_test_tasks(family, 20, 7, "ood-velocity")
    # Not the test stream's draws mapped onto [2, 3]: the split's stream is its own.
    assert not np.allclose([t["velocity"] for t in ood], [2 + t["velocity"] / 2 for t in test])
    assert ood == sample_test_tasks(family, 20, 7, "ood-velocity")


def test_multipliers_by_hand():
    dist = Multipliers(1.5, 2.0, low=1.0, shape=(4, 3))
    u = np.log(np.array(dist.sample(50, np.random.default_rng(0)))) / np.log(1.5)
    assert u.shape == (50, 4, 3) and (np.abs(u) >= 1).all() and (np.abs(u) <= 2).all()
    assert (u > 0).any() and (u < 0).any()
    assert dist.parse("m", 2.0, "").tolist() == [[2.0] * 3] * 4  # one number for every element
    assert dist.allows(np.array([1.5, 1.5**2, 1.5**-1, 1.0, 1.5**2.01, -1.5])).tolist() == [
        True,
        True,
        True,
        False,
        False,
        False,
    ]
    space = registry.get_family("halfcheetah-vel-domains").tasks
    assert space.validate({"velocity": 2.5, "body_mass": 2.0})["body_mass"] == [2.0] * 8
    with pytest.raises(ValueError, match="missing field 'velocity'"):
        space.validate({"body_mass": 1.0})


# ---------------------------------------------------------------------------- physics domains
def single_trace(env_id, schedule, seed, actions_TNA, i):
    """Sub-env i as a single env: ``schedule`` is [(step, tasks)], tasks set before that step."""
    env = gym.make(env_id, max_episode_steps=30)
    obs = env.reset(seed=seed + i, options={"task": schedule[0][1][i]})[0]
    trace, ended = [obs], False
    for t, actions in enumerate(actions_TNA):
        for step, tasks in schedule[1:]:
            if step == t:
                env.unwrapped.task = tasks[i]
        if ended:
            trace += [env.reset()[0], 0.0, False, False]
            ended = False
        else:
            obs, reward, term, trunc, _ = env.step(actions[i])
            trace += [obs, reward, term, trunc]
            ended = term or trunc
    return trace


@pytest.mark.parametrize("env_id", PHYSICS_FAMILIES)
def test_vector_env_equals_single_envs_with_a_domain_per_sub_env(env_id, rng):
    space = registry.get_family(env_id).tasks
    n = 4
    outside = space.sample(n, rng, "ood-physics")
    unit = {k: v for k, v in outside[0].items() if k not in PHYSICS_FIELDS}
    first = [outside[0], unit, outside[1], outside[2]]  # a unit sub-env among domains
    then = [unit, outside[3], outside[2], outside[0]]  # domains change, one back to unit
    native = gym.make_vec(
        env_id, num_envs=n, vectorization_mode="vector_entry_point", max_episode_steps=30
    )
    actions = rng.uniform(-1, 1, (70, n, *native.single_action_space.shape))
    actions *= native.single_action_space.high
    native.set_attr("task", first)
    got = [native.reset(seed=2)[0]]
    for t, action in enumerate(actions):
        if t == 40:  # mid-episode: the new physics applies from the next step in both
            native.set_attr("task", then)
        got.extend(native.step(action)[:4])
    expected = [single_trace(env_id, [(0, first), (40, then)], 2, actions, i) for i in range(n)]
    for k, column in enumerate(got):
        np.testing.assert_array_equal(column, np.array([e[k] for e in expected], column.dtype))


@pytest.mark.parametrize("env_id", PHYSICS_FAMILIES)
def test_a_domain_changes_its_own_sub_env_and_no_other(env_id, rng):
    space = registry.get_family(env_id).tasks
    domain = space.sample(1, rng, "ood-physics")[0]
    unit = {k: v for k, v in domain.items() if k not in PHYSICS_FIELDS}
    shared = gym.make_vec(env_id, num_envs=3, vectorization_mode="vector_entry_point")
    mixed = gym.make_vec(env_id, num_envs=3, vectorization_mode="vector_entry_point")
    shared.set_attr("task", [unit] * 3)
    mixed.set_attr("task", [unit, domain, unit])
    assert shared.unwrapped.batch.expanded("body_mass") is None  # one model for all
    a, b = shared.reset(seed=[4] * 3)[0], mixed.reset(seed=[4] * 3)[0]
    np.testing.assert_array_equal(a, b)  # the same start: a domain changes dynamics only
    for action in 0.5 * rng.uniform(-1, 1, (15, *shared.single_action_space.shape)):
        a, b = shared.step([action] * 3)[0], mixed.step([action] * 3)[0]
    np.testing.assert_array_equal(b[[0, 2]], a[[0, 2]])  # bit for bit the compiled physics
    assert not np.allclose(b[1], a[1])
    batch = mixed.unwrapped.batch
    compiled = shared.unwrapped.batch.model
    for key in PHYSICS_FIELDS:
        np.testing.assert_array_equal(
            batch.expand(key)[1], getattr(compiled, key) * np.asarray(domain[key])
        )
        np.testing.assert_array_equal(batch.expand(key)[0], getattr(compiled, key))
    # mj_setConst ran for the changed simulation: its derived constants follow its masses.
    single = gym.make(env_id).unwrapped
    single.task = domain
    for sim, model in ((1, single.model), (0, compiled)):
        np.testing.assert_array_equal(batch.get_model(sim).body_subtreemass, model.body_subtreemass)
    assert not np.array_equal(single.model.body_subtreemass, compiled.body_subtreemass)


def model_arrays(model):
    return {
        name: getattr(model, name)
        for name in dir(model)
        if not name.startswith("_") and isinstance(getattr(model, name), np.ndarray)
    }


@pytest.mark.parametrize("env_id", PHYSICS_FAMILIES)
def test_unit_multipliers_restore_the_compiled_physics_bit_for_bit(env_id, rng):
    space = registry.get_family(env_id).tasks
    domain = space.sample(1, rng, "ood-physics")[0]
    unit = {k: v for k, v in domain.items() if k not in PHYSICS_FIELDS}
    single, fresh = gym.make(env_id).unwrapped, gym.make(env_id).unwrapped
    single.task = domain
    single.task = {**unit, **{key: 1.0 for key in PHYSICS_FIELDS}}
    compiled = model_arrays(fresh.model)
    for name, values in model_arrays(single.model).items():
        np.testing.assert_array_equal(values, compiled[name], err_msg=name)
    native = gym.make_vec(env_id, num_envs=2, vectorization_mode="vector_entry_point")
    clean = gym.make_vec(env_id, num_envs=2, vectorization_mode="vector_entry_point")
    native.set_attr("task", [domain, domain])
    native.reset(seed=0)
    native.step(np.zeros((2, *native.single_action_space.shape)))
    native.set_attr("task", [unit, unit])
    clean.set_attr("task", [unit, unit])
    a, b = native.reset(seed=1)[0], clean.reset(seed=1)[0]
    for action in rng.uniform(-1, 1, (20, 2, *native.single_action_space.shape)):
        a, b = native.step(action), clean.step(action)
        for x, y in zip(a[:4], b[:4], strict=True):
            np.testing.assert_array_equal(x, y)


def test_heavier_bodies_cover_less_distance():
    # An open-loop gait (phases found by search) that runs HalfCheetah forward in its compiled
    # physics. With every mass and inertia x2.25 the same controls move it much less far.
    phase = np.array([4.7, 0.54, 2.68, 2.49, 1.27, 5.89])
    heavy = 1.5**2
    tasks = [{"velocity": 1.0}, {"velocity": 1.0, "body_mass": heavy, "body_inertia": heavy}]
    env = gym.make_vec(
        "omnirl/HalfCheetahVelDomains-v0", num_envs=2, vectorization_mode="vector_entry_point"
    )
    env.set_attr("task", tasks)
    distances = []
    for seed in range(4):
        env.reset(seed=[seed, seed])
        qpos = env.unwrapped.batch.bind("qpos")
        start = qpos[:, 0].copy()
        for t in range(100):
            env.step(np.stack([10 * np.sin(2 * np.pi * t / 4 + phase)] * 2))
        distances.append(qpos[:, 0] - start)
    unit_m, heavy_m = np.mean(distances, axis=0)
    assert unit_m > 3.0 and heavy_m < 0.7 * unit_m


def test_domain_family_with_unit_physics_equals_halfcheetah_v5(rng):
    reference = gym.make("HalfCheetah-v5").unwrapped
    ours = gym.make("omnirl/HalfCheetahVelDomains-v0").unwrapped
    ours.task = {"velocity": 1.0}
    reference.reset(seed=3)
    ours.reset(seed=3)
    for action in rng.uniform(-10, 10, (200, 6)):
        reference.step(np.clip(action / 10, -1, 1))
        ours.step(action)
    np.testing.assert_array_equal(ours.data.qpos, reference.data.qpos)
    np.testing.assert_array_equal(ours.data.qvel, reference.data.qvel)


def test_the_oracle_observes_the_multipliers():
    family = registry.get_family("walker2d-rand-params")
    env = TaskInObservation(gym.make(family.env_id), family.tasks)
    obs, _ = env.reset(seed=0)
    task = env.get_wrapper_attr("task")
    assert family.tasks.vector_size == 8 + 24 + 9 + 24 == obs.shape[0] - 17
    np.testing.assert_array_equal(
        obs[17:], np.concatenate([np.ravel(task[k]) for k in PHYSICS_FIELDS])
    )
    model = env.unwrapped.model  # the drawn domain is the env's physics
    compiled = gym.make("Walker2d-v5").unwrapped.model
    np.testing.assert_array_equal(model.body_mass, compiled.body_mass * task["body_mass"])


def test_domains_apply_to_the_single_env_model_once(monkeypatch):
    env = gym.make("omnirl/HopperRandParams-v0").unwrapped
    calls = []
    monkeypatch.setattr(mujoco, "mj_setConst", lambda m, d: calls.append(1))
    env.task = {}  # unit physics: nothing to do
    env.reset(seed=0)
    assert calls == []
    env.task = {"body_mass": 2.0}
    env.task = {"body_mass": 2.0}  # the same domain again: nothing to do
    assert calls == [1]


# -------------------------------------------------------------------------------------- CLI
def test_evaluate_an_ood_split_of_a_committed_run(tmp_path):
    run = committed_run("halfcheetah-vel-maml")
    out = tmp_path / "ood"
    args = ["evaluate", str(run), "--split", "ood-velocity", "--tasks", "2", "--episodes", "2"]
    result = runner.invoke(app, [*args, "--steps", "1", "--out", str(out)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "on 2 ood-velocity tasks" in result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "eval-ood-velocity.csv",
        "eval-ood-velocity.json",
        "eval-ood-velocity.png",
    ]
    payload = json.loads((out / "eval-ood-velocity.json").read_text())
    assert payload["split"] == "ood-velocity"
    assert all(2.0 <= t["velocity"] <= 3.0 for t in payload["tasks"])
    rows = (out / "eval-ood-velocity.csv").read_text().splitlines()
    assert rows[0] == "run,agent,family,split,step,mean,ci95"
    assert all(",ood-velocity," in row for row in rows[1:])


def test_unknown_split_is_one_line_listing_the_splits(tmp_path):
    run = committed_run("navigation-2d-maml")
    result = runner.invoke(
        app, ["evaluate", str(run), "--split", "ood", "--out", str(tmp_path / "x")]
    )
    assert result.exit_code == 2
    [line] = result.output.strip().splitlines()
    assert "unknown split 'ood' of navigation-2d; its splits: train, test, val, ood-goal" in line
    assert not (tmp_path / "x").exists()


def test_supervised_kinds_refuse_a_split(tmp_path):
    for kind in ("sinusoid", "fewshot"):
        evaluate = registry.kinds()[kind].load("evaluate")
        with pytest.raises(OptionError, match=f"--split does not apply to {kind} runs"):
            evaluate([tmp_path], EvaluateOptions(split="ood"))


def test_render_accepts_an_ood_task(tmp_path):
    run = committed_run("navigation-2d-maml")
    out = tmp_path / "far.gif"
    task = '{"goal": [0.9, -0.8]}'  # beyond the [-0.5, 0.5] square of training
    args = ["render", str(run), "--task", task, "--steps", "0", "--episodes", "2"]
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:6] == b"GIF89a"
    result = runner.invoke(app, [*args[:3], '{"goal": [1.5, 0.0]}', "--out", str(out)])
    assert result.exit_code == 2 and "ood-goal: U[-1, 1]^2" in result.output


def test_list_shows_the_splits_with_their_ranges():
    result = runner.invoke(app, ["list", "halfcheetah-vel-domains", "--samples", "0"])
    assert result.exit_code == 0, result.output
    for split, text in [
        ("train", "velocity ~ U[0, 2], physics x 1.5^u (dof_damping 1.3^u), u ~ U[-1, 1]"),
        ("ood-velocity", "velocity ~ U[2, 3]"),
        ("ood-physics", "u ~ ±U[1, 2] per element"),
        ("ood-both", "velocity ~ U[2, 3]"),
    ]:
        assert any(
            f"split    {split}: " in line and text in line for line in result.output.splitlines()
        )


@pytest.mark.parametrize(
    ("family", "agent"),
    [
        ("halfcheetah-vel-domains", "omni"),
        ("walker2d-rand-params", "maml"),
        ("hopper-rand-params", "maml"),
    ],
)
def test_new_families_train_and_evaluate_on_every_split(tmp_path, family, agent):
    args = ["train", f"smoke-{family}", "--agent", agent, "--no-progress"]
    result = runner.invoke(app, [*args, "--set", f"run_dir={tmp_path}", "--set", "torch_threads=1"])
    assert result.exit_code == 0, result.output
    [run] = tmp_path.iterdir()
    space = registry.get_family(family).tasks
    for split in space.split_names[1:]:
        out = tmp_path / f"eval-{split}"
        args = ["evaluate", str(run), "--checkpoint", "latest", "--split", split]
        result = runner.invoke(
            app, [*args, "--tasks", "2", "--episodes", "2", "--steps", "1", "--out", str(out)]
        )
        assert result.exit_code == 0, result.output
        payload = json.loads(next(out.glob("*.json")).read_text())
        assert payload["split"] == split and len(payload["tasks"]) == 2
        assert np.isfinite(payload["runs"][0]["mean"]).all()
