"""Scale-out on Ray against a real local instance: the Ray collector and distributed evaluation
equal their in-process counterparts bit for bit, a SIGKILLed sweep resumes to the same runs,
the aggregates match hand-computed IQMs and scipy's bootstrap, and without Ray every Ray
command says how to install it."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

# A single-machine instance on the loopback interface only (see omnirl.cluster); set before Ray
# is imported, and inherited by the sweep drivers started below.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import gymnasium  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from omnirl import evaluation, registry  # noqa: E402
from omnirl.checkpoint import load, load_runs  # noqa: E402
from omnirl.collector import Collector, RolloutGroup  # noqa: E402
from omnirl.config import load_config  # noqa: E402
from omnirl.trainer import Trainer  # noqa: E402

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_instance():
    """One local Ray instance (2 CPUs) for the module, shut down after it."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def same_episodes(first, second) -> bool:
    return all(
        torch.equal(a, b)
        for x, y in zip(first, second, strict=True)
        for a, b in zip(x, y, strict=True)
    )


# ------------------------------------------------------------------------ Ray collector
# A numpy family that ends episodes early, a MuJoCo family with per-sub-env physics domains, and
# one whose episodes end when the hopper falls, at a different step in every sub-env.
@pytest.mark.parametrize(
    "env_id",
    ["omnirl/Navigation2D-v1", "omnirl/HalfCheetahVelDomains-v0", "omnirl/HopperRandParams-v0"],
)
def test_the_ray_collector_equals_the_in_process_collector(ray_instance, env_id):
    from omnirl.agents.policies import GaussianMLPPolicy
    from omnirl.ray_collector import RayCollector

    env = gymnasium.make(env_id)
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(env.observation_space.shape[0], env.action_space.shape[0], (16, 16))
    family = next(f for f in registry.families().values() if f.env_id == env_id)
    tasks = family.tasks.sample(5, np.random.default_rng(1))
    adapted = [{k: v.detach() + 0.01 * i for k, v in policy.named_parameters()} for i in range(5)]
    groups = [RolloutGroup(), RolloutGroup(params=adapted)]

    def collections(collector):
        # Seeded by the constructor, then continuing the stream (the generator must continue
        # where the longest slice left it), another batch size, an explicit seed.
        return [
            *collector.collect(policy, tasks, 3, groups, horizon=60),
            *collector.collect(policy, tasks[:3], 2, horizon=60),
            *collector.collect(policy, tasks, 2, groups[1:], horizon=60, seed=11),
        ]

    with Collector(env_id, seed=4) as local:
        expected, local_steps = collections(local), local.stats["env_steps"]
    with RayCollector(env_id, seed=4, workers=2) as remote:
        got = collections(remote)
        assert remote.stats["env_steps"] == local_steps
        assert remote.transfer["collections"] == 3 and remote.transfer["bytes_in"] > 0
        with torch.no_grad():
            policy.mean.bias.fill_(float("nan"))
        with pytest.raises(FloatingPointError, match="^the policy produced non-finite actions"):
            remote.collect(policy, tasks, 2, horizon=5)  # the actor's error, as in process
    assert same_episodes(expected, got)


def test_training_with_the_ray_collector_equals_training_in_process(ray_instance, tmp_path):
    # Every flow of an Omni-Net, per-task adapted parameters and EMA distillation: the whole
    # meta-iteration runs on the actors' episodes, so every metric but the times must agree.
    metrics = {}
    for backend in ("local", "ray"):
        sets = ["agent=omni", "iterations=2", "eval_every=1", f"collector_backend={backend}"]
        cfg = load_config("smoke-halfcheetah-vel", sets)
        trainer = Trainer(cfg, run_dir=tmp_path / backend)
        try:
            trainer.train()
        finally:
            trainer.close()
        lines = (tmp_path / backend / "metrics.jsonl").read_text().splitlines()
        metrics[backend] = [without_times(json.loads(line)) for line in lines]
    assert metrics["ray"] == metrics["local"]


def without_times(line: dict) -> dict:
    return {k: v for k, v in line.items() if not k.startswith("time/")}


# ---------------------------------------------------------------- distributed evaluation
@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    """Two trained smoke runs per family: maml and omni on navigation-2d and halfcheetah-vel."""
    root = tmp_path_factory.mktemp("ray-runs")
    runs = {}
    for config in ("smoke-navigation-2d", "smoke-halfcheetah-vel"):
        for agent in ("maml", "omni"):
            cfg = load_config(config, [f"agent={agent}", "iterations=2"])
            trainer = Trainer(cfg, run_dir=root / f"{config}-{agent}")
            trainer.train()
            trainer.close()
            runs.setdefault(config, []).append(trainer.run_dir)
    return runs


@pytest.mark.parametrize("config", ["smoke-navigation-2d", "smoke-halfcheetah-vel"])
def test_distributed_evaluation_equals_local_evaluation_task_for_task(
    ray_instance, smoke_runs, monkeypatch, config
):
    monkeypatch.setattr(evaluation, "CHUNK_ENVS", 6)  # 3 tasks x 2 episodes: 4 chunks per run
    runs = load_runs(smoke_runs[config], "latest")
    local = evaluation.evaluate_runs(runs, tasks=10, steps=2, episodes=2, seed=5)
    progress = []
    remote = evaluation.evaluate_runs(
        runs, 10, 2, 2, 5, on_progress=lambda *a: progress.append(a), ray="local"
    )
    assert remote == local  # every task's return after every step, of both runs
    assert [done for _, done, _ in progress][-1] == 20


def test_evaluate_ray_on_the_command_line(ray_instance, smoke_runs, tmp_path):
    from typer.testing import CliRunner

    from omnirl.cli import app

    run = smoke_runs["smoke-navigation-2d"][0]
    args = ["evaluate", str(run), "--tasks", "4", "--steps", "1", "--episodes", "2"]
    for flag, out in ((["--ray"], "ray"), ([], "local")):
        done = CliRunner().invoke(app, [*args, "--out", str(tmp_path / out), *flag])
        assert done.exit_code == 0, done.output
    payloads = [json.loads((tmp_path / out / "eval.json").read_text()) for out in ("ray", "local")]
    assert payloads[0] == payloads[1]
    sinusoid = CliRunner().invoke(app, ["evaluate", str(smoke_sinusoid_run(tmp_path)), "--ray"])
    assert sinusoid.exit_code == 2 and "--ray does not apply to sinusoid runs" in sinusoid.output


def smoke_sinusoid_run(root):
    from omnirl.sinusoid.config import SinusoidConfig
    from omnirl.sinusoid.train import SinusoidTrainer

    cfg = load_config("smoke-sinusoid", [f"run_dir={root}"], schema=SinusoidConfig)
    trainer = SinusoidTrainer(cfg)
    trainer.train()
    trainer.close()
    return trainer.run_dir


# ------------------------------------------------------------------------------- sweep
ITERATIONS = 20
SWEEP = f"""
name: kill
families: [smoke-navigation-2d]
agents: [maml, omni]
seeds: [0, 1]
iterations: {ITERATIONS}
set: [eval_every=5]
evaluate: {{{{tasks: 4, steps: 1, episodes: 2}}}}
out: {{out}}
"""
DONE = ITERATIONS + 1  # trained and evaluated


def sweep_state(folder):
    """Every run's progress: its latest.pt's iteration (-1: none), + 1 once evaluated."""
    state = {}
    for name in ("maml-0", "maml-1", "omni-0", "omni-1"):
        run = folder / f"navigation-2d-{name}"
        latest = run / "checkpoints" / "latest.pt"
        try:
            state[name] = int(load(latest)["iteration"]) if latest.is_file() else -1
        except ValueError:  # being replaced this instant
            state[name] = -1
        state[name] += (run / "eval.json").is_file()
    return state


def test_a_killed_sweep_resumes_to_the_runs_of_an_uninterrupted_one(ray_instance, tmp_path):
    from omnirl.sweep import run_sweep
    from omnirl.sweep_spec import load_spec

    spec = tmp_path / "kill.yaml"
    spec.write_text(SWEEP.format(out=tmp_path / "killed"))
    command = [sys.executable, "-c", "from omnirl.cli import app; app()", "sweep", str(spec)]
    command += ["--address", ray_instance, "--no-progress"]
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline, state = time.monotonic() + 120, {}
    while time.monotonic() < deadline and driver.poll() is None:
        state = sweep_state(tmp_path / "killed")
        if DONE in state.values() and any(0 < i < ITERATIONS for i in state.values()):
            break
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)  # mid-sweep: one run done and evaluated, one half-way
    driver.wait()
    assert DONE in state.values() and any(0 < i < ITERATIONS for i in state.values()), state
    finished = [f"navigation-2d-{n}" for n, i in state.items() if i == DONE]
    before = {name: files_of(tmp_path / "killed" / name) for name in finished}

    again = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert again.returncode == 0, again.stderr
    assert {name: files_of(tmp_path / "killed" / name) for name in finished} == before

    # The same sweep uninterrupted, for the runs that were cut short.
    resumed = [name for name, i in state.items() if i < DONE]
    agents = sorted({name.split("-")[0] for name in resumed})
    seeds = ",".join(sorted({name.split("-")[1] for name in resumed}))
    run_sweep(load_spec(str(spec), out=str(tmp_path / "whole"), agents=agents, seeds=seeds))
    for name in resumed:
        killed, whole = (tmp_path / f / f"navigation-2d-{name}" for f in ("killed", "whole"))
        assert metrics_of(killed) == metrics_of(whole), name
        assert len(metrics_of(killed)) == ITERATIONS
        assert evaluation_of(killed) == evaluation_of(whole), name
    assert (tmp_path / "killed" / "report.png").is_file()


def files_of(run):
    """Size and modification time of every file of a run folder (untouched runs keep them)."""
    return {
        str(p.relative_to(run)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(run.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def metrics_of(run):
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [without_times(json.loads(line)) for line in lines]


def evaluation_of(run):
    payload = json.loads((run / "eval.json").read_text())
    return [r["returns"] for r in payload["runs"]]


def test_a_sweep_evaluates_each_split_of_its_spec_once(ray_instance, tmp_path):
    from omnirl.sweep import run_sweep
    from omnirl.sweep_spec import load_spec

    spec = tmp_path / "splits.yaml"
    spec.write_text(
        "families: [smoke-navigation-2d]\nagents: [maml]\niterations: 2\n"
        "evaluate: {tasks: 3, steps: 1, episodes: 2, checkpoint: latest,"
        " splits: [test, ood-goal]}\n"
    )
    run_sweep(load_spec(str(spec), out=str(tmp_path / "sweep")))
    run = tmp_path / "sweep" / "navigation-2d-maml-0"
    test, ood = (json.loads((run / f).read_text()) for f in ("eval.json", "eval-ood-goal.json"))
    assert (test["split"], ood["split"]) == ("test", "ood-goal")
    assert test["tasks"] != ood["tasks"]  # the out-of-distribution goals are other tasks
    before = files_of(run)
    run_sweep(load_spec(str(spec), out=str(tmp_path / "sweep")))  # done: nothing is redone
    assert files_of(run) == before
    (run / "eval-ood-goal.json").unlink()  # one split lost: only that one is evaluated again
    run_sweep(load_spec(str(spec), out=str(tmp_path / "sweep")))

    def others(files):
        return {f: v for f, v in files.items() if not f.startswith("eval-ood-goal")}

    assert others(files_of(run)) == others(before)
    assert json.loads((run / "eval-ood-goal.json").read_text()) == ood


def test_a_sweep_reports_a_failing_run_and_finishes_the_others(ray_instance, tmp_path):
    from omnirl.sweep import failed, run_sweep
    from omnirl.sweep_spec import expand, load_spec

    spec = load_spec(
        None,
        families=["smoke-navigation-2d"],
        agents=["maml", "random"],
        iterations=2,
        evaluate=False,
        out=str(tmp_path),
    )
    # The maml cell's folder holds another run (another seed): never touched, reported.
    maml = next(cell for cell in expand(spec) if "maml" in cell.name)
    other = load_config("smoke-navigation-2d", ["agent=maml", "seed=7"])
    Trainer(other, run_dir=maml.run_dir).train()
    reports = run_sweep(spec)
    assert failed(reports) == 1
    assert "seed=7" in reports[0].notes[0]
    assert (tmp_path / "navigation-2d-random-0" / "checkpoints" / "latest.pt").is_file()
    dry = run_sweep(spec, dry_run=True)[0]
    assert [row[1] for row in dry.rows] == ["conflict", "finished"]


def test_the_grid_and_its_folder_names(tmp_path):
    from omnirl.sweep_spec import derive_tag, expand, load_spec

    path = tmp_path / "grid.yaml"
    path.write_text(
        textwrap.dedent(
            """
            families: [smoke-navigation-2d]
            agents: [omni]
            seeds: [0, 3]
            variants: [{}, {tag: lam, set: [distill_weight=0.5]}, {set: [distill_weight=0.1]}]
            """
        )
    )
    spec = load_spec(str(path), out=str(tmp_path / "grid"))
    saved = tmp_path / "moved" / "sweep.yaml"  # a sweep's resolved spec runs that sweep again
    saved.parent.mkdir()
    saved.write_text(spec.to_yaml())
    assert load_spec(str(saved)) == load_spec(str(path), out=str(saved.parent))
    cells = expand(spec)
    assert [c.name for c in cells] == [
        "navigation-2d-omni-0",
        "navigation-2d-omni-3",
        "navigation-2d-omni-0-lam",
        "navigation-2d-omni-3-lam",
        "navigation-2d-omni-0-distill_weight-0.1",
        "navigation-2d-omni-3-distill_weight-0.1",
    ]
    assert cells[2].cfg.distill_weight == 0.5 and cells[4].cfg.distill_weight == 0.1
    assert derive_tag(("joint_weight=1.0", "hidden_sizes=[32, 32]")) == (
        "joint_weight-1.0+hidden_sizes-_32_32"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("families: [smoke-navigation-2d]\nagents: [maml]\nseed: [0]\n", "unknown key 'seed'"),
        ("families: [smoke-navigation-2d]\nagents: [mamll]\n", "'agent' = 'mamll'"),
        ("families: [smoke-navigation-2d]\nagents: [maml]\nseeds: [0, 0]\n", "distinct"),
        ("agents: [maml]\n", "needs families and agents"),
        (
            "families: [smoke-navigation-2d]\nagents: [maml]\nevaluate: {splits: [ood-velocity]}\n",
            "unknown split 'ood-velocity' of navigation-2d",
        ),
        (
            "families: [smoke-navigation-2d]\nagents: [maml]\nevaluate: {splits: [test, test]}\n",
            "evaluate.splits takes distinct split names",
        ),
        (
            "families: [smoke-sinusoid]\nagents: [maml]\nevaluate: {splits: [val]}\n",
            "sinusoid runs have no task splits",
        ),
    ],
)
def test_bad_specs_are_one_line(tmp_path, text, message):
    from typer.testing import CliRunner

    from omnirl.cli import app

    path = tmp_path / "bad.yaml"
    path.write_text(text)
    done = CliRunner().invoke(app, ["sweep", str(path), "--dry-run"])
    assert done.exit_code == 2
    assert message in done.output and "Traceback" not in done.output


# -------------------------------------------------------------------------- aggregates
def test_iqm_against_hand_computed_values():
    from omnirl.aggregate import STATISTICS, iqm

    # 8 scores: the middle 4 after sorting (3, 4, 5, 6) average to 4.5.
    assert iqm(np.array([8.0, 1, 3, 100, 4, 6, 5, 2])) == pytest.approx(4.5)
    # 2 seeds x 6 tasks = 12 scores: 3 trimmed each end, the middle 6 are 4..9.
    scores = np.array([[1.0, 12, 4, 9, 7, 2], [11, 3, 6, 10, 5, 8]])
    assert STATISTICS["iqm"](scores) == pytest.approx(6.5)
    assert STATISTICS["mean"](scores) == pytest.approx(6.5)
    # 0 0 0 1 2 3 4 1000: the outliers are trimmed, the middle 4 (0 1 2 3) average to 1.5.
    assert STATISTICS["iqm"](np.array([[0.0, 0, 0, 1000], [1, 2, 3, 4]])) == pytest.approx(1.5)


def test_the_stratified_bootstrap_is_scipys_with_one_sample_per_task():
    from scipy.stats import bootstrap

    from omnirl.aggregate import STATISTICS, paired, stratified_interval

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3, 7)), rng.normal(0.5, size=(4, 7))  # seeds x tasks
    low, high = stratified_interval(STATISTICS["mean"], [a], resamples=500, seed=3)
    direct = bootstrap(
        tuple(a.T),
        lambda *cols, axis: np.stack(cols, -1).mean(axis=(-1, -2)),
        n_resamples=500,
        method="percentile",
        random_state=np.random.default_rng(3),
    )
    assert (low, high) == (direct.confidence_interval.low, direct.confidence_interval.high)
    # The method itself (rliable's): resample each task's seeds, here by hand.
    draws = rng.integers(0, 3, size=(20000, 3, 7))
    by_hand = np.take_along_axis(a[None], draws, axis=1).mean(axis=(1, 2))
    low, high = stratified_interval(STATISTICS["mean"], [a], resamples=20000, seed=1)
    expected = np.percentile(by_hand, [2.5, 97.5])
    assert np.allclose((low, high), expected, atol=0.02 * (expected[1] - expected[0]))
    diff = paired("iqm")
    assert diff(b, a) == pytest.approx(STATISTICS["iqm"](b) - STATISTICS["iqm"](a))
    low, high = stratified_interval(diff, [b, a], resamples=2000)
    assert low < diff(b, a) < high
    assert np.isnan(stratified_interval(STATISTICS["mean"], [a[:1]])).all()  # one seed


def test_curves_are_compared_with_the_reference_at_equal_env_steps():
    from omnirl.curves import at_equal_env_steps

    # b collects 1.5x maml's env steps per iteration: at maml's end (300), b is midway; c
    # ends before maml (250), so maml is read at c's end.
    curves = {
        "f": {
            "maml": {"env_steps": [100.0, 200.0, 300.0], "mean": [0.0, 1.0, 2.0]},
            "b": {"env_steps": [150.0, 300.0, 450.0], "mean": [0.0, 3.0, 6.0]},
            "c": {"env_steps": [50.0, 250.0], "mean": [0.0, 6.0]},
        },
        "no-reference": {"b": {"env_steps": [1.0], "mean": [0.0]}},
    }
    assert at_equal_env_steps(curves) == {
        "f": {
            "b": {"env_steps": 300.0, "mean": 3.0, "reference_mean": 2.0},
            "c": {"env_steps": 250.0, "mean": 6.0, "reference_mean": 1.5},
        }
    }


def fake_run(root, name, agent, seed, returns, tasks, metrics=()):
    """A run folder with config.yaml, eval.json and metrics.jsonl as omnirl writes them."""
    from omnirl.config import config_bytes

    run = root / name
    (run / "checkpoints").mkdir(parents=True)
    cfg = load_config("smoke-navigation-2d", [f"agent={agent}", f"seed={seed}"])
    (run / "config.yaml").write_bytes(config_bytes(cfg))
    entry = {"run": str(run), "agent": agent, "iteration": 2, "returns": returns}
    payload = {"family": "navigation-2d", "split": "test", "tasks": tasks, "steps": 1}
    payload.update(episodes=2, seed=1000, runs=[entry])
    (run / "eval.json").write_text(json.dumps(payload))
    lines = [json.dumps(m) for m in metrics]
    (run / "metrics.jsonl").write_text("".join(line + "\n" for line in lines))


def test_report_on_a_sweep_folder(tmp_path):
    from typer.testing import CliRunner

    from omnirl.cli import app

    (tmp_path / "sweep.yaml").write_text("name: fake\n")
    tasks = [{"goal": [0.1 * i, 0.0]} for i in range(4)]
    steps = [{"iteration": 1, "time/sps": 100.0, "time/iteration_s": 2.0, "eval/return_post": -9}]
    steps.append({"iteration": 2, "time/sps": 50.0, "time/iteration_s": 2.0})
    for seed, shift in ((0, 0.0), (1, 2.0)):
        maml = [[-40.0 - shift, -30, -20, -10], [-12.0 - shift, -11, -10, -9]]
        fake_run(tmp_path, f"navigation-2d-maml-{seed}", "maml", seed, maml, tasks, steps)
        omni = [[v + 1.0 for v in row] for row in maml]
        name = f"navigation-2d-omni-{seed}-lam"
        fake_run(tmp_path, name, "omni", seed, omni, tasks, steps)
    done = CliRunner().invoke(app, ["report", str(tmp_path), "--resamples", "500"])
    assert done.exit_code == 0, done.output
    report = json.loads((tmp_path / "report.json").read_text())
    [result] = report["results"]
    maml, omni = result["labels"]["maml"], result["labels"]["omni-lam"]
    # After 1 step, maml's 8 scores are -14 -12 -11 -11 -10 -10 -9 -9: IQM of the middle 4.
    assert maml["iqm"][1] == pytest.approx(-10.5)
    assert omni["iqm_diff"][1] == pytest.approx(1.0)  # paired: omni is maml + 1 everywhere
    assert maml["seeds"] == 2 and "iqm_diff" not in maml
    assert maml["run_means"] == [[-25.0, -10.5], [-25.5, -11.0]]  # per seed, per step
    assert report["curves"]["navigation-2d"]["maml"]["env_steps"] == [200.0]
    at = report["equal_env_steps"]["navigation-2d"]
    assert at == {"omni-lam": {"env_steps": 200.0, "mean": -9.0, "reference_mean": -9.0}}
    assert "quick evaluation at equal env steps (200): omni-lam -9.0, maml -9.0" in done.output
    for name in ("report.csv", "report.png", "curves.png"):
        assert (tmp_path / name).stat().st_size > 0
    # Another split's evaluation (omnirl evaluate --split val) is a group of its own.
    for run in sorted(tmp_path.glob("navigation-2d-*")):
        payload = json.loads((run / "eval.json").read_text())
        payload["split"] = "val"
        payload["runs"][0]["returns"] = [
            [v - 5.0 for v in row] for row in payload["runs"][0]["returns"]
        ]
        (run / "eval-val.json").write_text(json.dumps(payload))
    done = CliRunner().invoke(app, ["report", str(tmp_path), "--resamples", "500"])
    assert done.exit_code == 0, done.output
    results = json.loads((tmp_path / "report.json").read_text())["results"]
    by_split = {r["split"]: r for r in results}
    assert sorted(by_split) == ["test", "val"]
    assert by_split["val"]["labels"]["maml"]["iqm"][1] == pytest.approx(-15.5)
    assert by_split["test"]["labels"]["maml"]["iqm"][1] == pytest.approx(-10.5)
    for run in tmp_path.glob("navigation-2d-*"):
        (run / "eval-val.json").unlink()
    other = tmp_path / "navigation-2d-omni-0-lam" / "eval.json"
    other.write_text(json.dumps({**json.loads(other.read_text()), "seed": 7}))
    bad = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert bad.exit_code == 2 and "evaluated on other tasks" in bad.output


def fake_supervised_run(root, name, config, agent, seed, entry, payload):
    from omnirl.config import config_bytes, kind_of

    run = root / name
    run.mkdir(parents=True)
    schema = kind_of(config).load("config")
    cfg = load_config(config, [f"agent={agent}", f"seed={seed}"], schema=schema)
    (run / "config.yaml").write_bytes(config_bytes(cfg))
    runs = [{"run": str(run), "agent": agent, **entry}]
    (run / "eval.json").write_text(json.dumps({**payload, "runs": runs}))


def test_report_on_sinusoid_and_fewshot_runs(tmp_path):
    from typer.testing import CliRunner

    from omnirl.cli import app

    (tmp_path / "sweep.yaml").write_text("name: fake\n")
    sinusoid = {"family": "sinusoid", "tasks": [[1.0, 0.5]] * 4, "steps": 1, "shots": [5]}
    sinusoid.update(query_points=10, seed=1000)
    fewshot = {"family": "fewshot", "way": 5, "queries": 2, "shots": [1], "episodes": 4}
    fewshot.update(seed=1000, data=["glyphs"])
    for seed in (0, 1):
        for agent, shift in (("maml", 0.0), ("omni", -0.25)):
            mse = [[1.0 + shift, 2, 3, 4], [0.5 + shift, 0.5, 0.25 + seed, 0.75]]
            entry = {"mse": {"5": {"tasks": mse}}}
            fake_supervised_run(
                tmp_path, f"sinusoid-{agent}-{seed}", "smoke-sinusoid", agent, seed, entry, sinusoid
            )
        for agent, shift in (("protonet", 0.0), ("omni", 0.1)):
            accuracies = [0.5 + shift, 0.6 + shift, 0.4 + shift, 0.7 - 0.1 * seed + shift]
            entry = {"results": {"glyphs": {"1": {"accuracies": accuracies}}}}
            fake_supervised_run(
                tmp_path, f"fewshot-{agent}-{seed}", "smoke-fewshot", agent, seed, entry, fewshot
            )
    done = CliRunner().invoke(app, ["report", str(tmp_path), "--resamples", "500"])
    assert done.exit_code == 0, done.output
    results = {r["split"]: r for r in json.loads((tmp_path / "report.json").read_text())["results"]}
    assert sorted(results) == ["K=5", "glyphs 1-shot"]
    sine, few = results["K=5"], results["glyphs 1-shot"]
    assert (sine["metric"], sine["reference"], sine["tasks"]) == ("MSE", "maml", 4)
    # After one step maml's 8 MSEs are 0.5 0.5 0.25 0.75 1.25 0.5 0.5 0.75: mean 0.625.
    assert sine["labels"]["maml"]["mean"][1] == pytest.approx(0.625)
    assert sine["labels"]["omni"]["mean_diff"][1] == pytest.approx(-0.0625)  # 0.5 / 8
    assert (few["metric"], few["reference"], few["tasks"]) == ("accuracy %", "protonet", 4)
    assert few["labels"]["protonet"]["mean"] == [pytest.approx(53.75)]
    assert few["labels"]["omni"]["mean_diff"] == [pytest.approx(10.0)]
    assert "0.625" in done.output  # MSE shown with 3 digits


# ---------------------------------------------------------------------- without Ray
BLOCK_RAY = """
import sys
class NoRay:
    def find_spec(self, name, path=None, target=None):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
sys.meta_path.insert(0, NoRay())
from omnirl.cli import app
app()
"""


def test_without_ray_each_ray_command_says_how_to_install_it(smoke_runs, tmp_path):
    run = smoke_runs["smoke-navigation-2d"][0]
    commands = [
        ["sweep", "quickstart", "--out", str(tmp_path / "sweep")],
        ["evaluate", str(run), "--tasks", "2", "--out", str(tmp_path / "eval"), "--ray"],
        ["train", "smoke-navigation-2d", "--set", "collector_backend=ray"],
    ]
    for args in commands:
        done = subprocess.run(
            [sys.executable, "-c", BLOCK_RAY, *args], capture_output=True, text=True, cwd=tmp_path
        )
        assert done.returncode == 2, (args, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and 'pip install "omnirl[ray]"' in lines[0], (args, done.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written, no run folder
