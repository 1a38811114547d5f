"""omnirl evaluate on tiny runs: shapes, intervals, shared test tasks, bad input."""

import json

import numpy as np
from typer.testing import CliRunner

from omnirl.checkpoint import load_run
from omnirl.cli import app
from omnirl.registry import get_family
from omnirl.stats import mean_ci95

runner = CliRunner()


def tiny_run(tmp_path, agent):
    result = runner.invoke(
        app,
        [
            "train",
            "smoke-navigation-2d",
            "--agent",
            agent,
            "--no-progress",
            "--set",
            f"run_dir={tmp_path / agent}",
        ],
    )
    assert result.exit_code == 0, result.output
    [run] = (tmp_path / agent).iterdir()
    return run


def test_mean_ci95_by_hand():
    mean, half = mean_ci95(np.array([1.0, 2.0, 3.0, 6.0]))
    assert mean == 3.0
    assert half == 1.96 * np.sqrt(((1 - 3) ** 2 + (2 - 3) ** 2 + 0 + (6 - 3) ** 2) / 3) / 2


def test_evaluate_two_runs_on_the_same_tasks(tmp_path):
    runs = [tiny_run(tmp_path, "omni"), tiny_run(tmp_path, "maml")]
    out = tmp_path / "report"
    args = [
        "evaluate",
        *map(str, runs),
        "--tasks",
        "3",
        "--steps",
        "2",
        "--episodes",
        "2",
        "--out",
        str(out),
    ]
    result = runner.invoke(app, args, terminal_width=200)
    assert result.exit_code == 0, result.output
    data = json.loads((out / "eval.json").read_text())
    rows = (out / "eval.csv").read_text().splitlines()
    assert rows[0] == "run,agent,family,split,step,mean,ci95" and len(rows) == 1 + 2 * 3
    assert (out / "eval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".*"))  # no temporary files left behind
    assert [r["agent"] for r in data["runs"]] == ["omni", "maml"]
    for r in data["runs"]:
        assert np.asarray(r["returns"]).shape == (3, 3)  # steps + 1 x tasks
        assert r["mean"] == [mean_ci95(np.asarray(x))[0] for x in r["returns"]]
    again = tmp_path / "again"
    runner.invoke(
        app,
        [
            "evaluate",
            str(runs[1]),
            "--tasks",
            "3",
            "--steps",
            "0",
            "--episodes",
            "2",
            "--out",
            str(again),
        ],
    )
    assert json.loads((again / "eval.json").read_text())["tasks"] == data["tasks"]  # same tasks


def test_evaluate_bad_input(tmp_path):
    result = runner.invoke(app, ["evaluate", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "not a run folder" in result.output
    run = tiny_run(tmp_path, "maml")
    (run / "checkpoints" / "latest.pt").unlink()
    result = runner.invoke(app, ["evaluate", str(run), "--checkpoint", "latest"])
    assert result.exit_code == 2 and "no checkpoint latest.pt" in result.output
    result = runner.invoke(app, ["evaluate", str(run), "--checkpoint", "last"])
    assert result.exit_code == 2 and "--checkpoint must be best or latest" in result.output
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = runner.invoke(app, ["evaluate", str(run), "--out", str(blocker / "x")])
    assert result.exit_code == 2 and "cannot write to" in result.output
    for bad, message in [
        (["--shots", "5"], "--shots does not apply to RL runs"),
        (["--data", "glyphs"], "--data does not apply to RL runs"),
    ]:
        result = runner.invoke(app, ["evaluate", str(run), *bad])
        assert result.exit_code == 2 and message in result.output, result.output


def test_a_run_without_best_pt_is_evaluated_from_latest_and_says_so(tmp_path):
    run = tiny_run(tmp_path, "maml")  # eval_every 0 in the smoke config: best.pt by training
    (run / "checkpoints" / "best.pt").unlink()
    out = tmp_path / "report"
    args = ["evaluate", str(run), "--tasks", "2", "--steps", "1", "--episodes", "2"]
    result = runner.invoke(app, [*args, "--out", str(out)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert f"note: {run} has no best.pt yet" in result.output and "using latest.pt" in result.output
    [entry] = json.loads((out / "eval.json").read_text())["runs"]
    assert entry["checkpoint"] == "latest.pt" and entry["iteration"] == 2


def test_flow_and_lr_schedule_options(tmp_path):
    omni = tiny_run(tmp_path, "omni")
    base = ["evaluate", str(omni), "--tasks", "2", "--steps", "2", "--episodes", "2"]
    result = runner.invoke(
        app, [*base, "--flow", "pre", "--lr-schedule", "0.2,0.1", "--out", str(tmp_path / "r")]
    )
    assert result.exit_code == 0, result.output
    [run] = json.loads((tmp_path / "r" / "eval.json").read_text())["runs"]
    assert run["flow"] == "pre" and run["lrs"] == [0.2, 0.1]
    for bad, message in [
        (["--flow", "side"], "--flow 'side' does not exist"),
        (["--lr-schedule", "0.1"], "needs 2 positive rates"),
        (["--lr-schedule", "0.1,x"], "comma-separated numbers"),
    ]:
        result = runner.invoke(app, [*base, *bad, "--out", str(tmp_path / "bad")])
        assert result.exit_code == 2 and message in result.output, result.output
    maml = tiny_run(tmp_path, "maml")
    result = runner.invoke(
        app, ["evaluate", str(maml), "--flow", "meta", "--out", str(tmp_path / "m")]
    )
    assert result.exit_code == 2 and "its flows: none" in result.output


def test_test_tasks_differ_from_training_tasks():
    from omnirl.evaluation import sample_test_tasks
    from omnirl.seeding import seed_everything

    family = get_family("navigation-2d")
    training = family.tasks.sample(20 * 100, seed_everything(0))  # 100 iterations of 20 tasks
    test = sample_test_tasks(family, 40, seed=0)
    assert not {tuple(t["goal"]) for t in test} & {tuple(t["goal"]) for t in training}
    assert test == sample_test_tasks(family, 40, seed=0)


def test_many_tasks_are_evaluated_in_chunks(tmp_path, monkeypatch):
    import omnirl.evaluation as evaluation
    from omnirl.collector import Collector

    agent = load_run(tiny_run(tmp_path, "maml"), "latest").learner
    family = get_family("navigation-2d")
    tasks = evaluation.sample_test_tasks(family, 5, seed=3)
    monkeypatch.setattr(evaluation, "CHUNK_ENVS", 4)  # 2 tasks of 2 episodes per chunk
    finished = []
    with Collector(family.env_id) as collector:
        returns = evaluation.chunked_adaptation_returns(
            agent, collector, tasks, [0.1], 2, seed=3, on_chunk=finished.append
        )
        again = evaluation.chunked_adaptation_returns(agent, collector, tasks, [0.1], 2, seed=3)
    assert finished == [2, 2, 1] and returns.shape == (2, 5)
    np.testing.assert_array_equal(returns, again)  # reproducible from the seed alone
    # The first chunk is exactly the unchunked evaluation of its tasks.
    with Collector(family.env_id) as collector:
        first = evaluation.adaptation_returns(agent, collector, tasks[:2], [0.1], 2, seed=3)
    np.testing.assert_array_equal(returns[:, :2], first)
