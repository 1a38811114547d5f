"""The command line on every problem kind: train, evaluate, render and one-line bad input."""

import json

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from omnirl.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def sinusoid_runs(tmp_path_factory):
    """A smoke omni run and a maml run trained through the command line."""
    root = tmp_path_factory.mktemp("sinusoid")
    runs = {}
    for agent in ("omni", "maml"):
        args = ["train", "smoke-sinusoid", "--agent", agent, "--iterations", "4", "--no-progress"]
        result = runner.invoke(app, [*args, "--set", f"run_dir={root / 'runs'}"])
        assert result.exit_code == 0, result.output
        [runs[agent]] = (root / "runs").glob(f"sinusoid-{agent}-0-*")
    return runs


def test_sinusoid_train_evaluate_render_through_the_cli(sinusoid_runs, tmp_path):
    cfg = yaml.safe_load((sinusoid_runs["omni"] / "config.yaml").read_text())
    assert cfg["family"] == "sinusoid" and cfg["iterations"] == 4
    out = tmp_path / "eval"
    args = ["evaluate", *map(str, sinusoid_runs.values()), "--tasks", "6", "--steps", "3"]
    result = runner.invoke(app, [*args, "--shots", "2,5", "--out", str(out)], terminal_width=200)
    assert result.exit_code == 0, result.output
    payload = json.loads((out / "eval.json").read_text())
    assert payload["shots"] == [2, 5] and len(payload["tasks"]) == 6
    omni, maml = payload["runs"]
    assert (omni["agent"], omni["flow"], maml["flow"]) == ("omni", "meta", None)
    assert np.array(omni["mse"]["5"]["tasks"]).shape == (4, 6)  # steps 0..3 x tasks
    assert (out / "eval.png").read_bytes()[:4] == b"\x89PNG"
    assert len((out / "eval.csv").read_text().splitlines()) == 1 + 2 * 2 * 4
    for name in ("eval.json", "eval.csv", "eval.png"):
        assert f"wrote {out / name}" in result.output
    png = tmp_path / "waves.png"
    task = '{"amplitude": 2.0, "phase": 1.0}'
    args = ["render", str(sinusoid_runs["omni"]), "--task", task, "--steps", "0,2"]
    result = runner.invoke(app, [*args, "--out", str(png)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert png.read_bytes()[:4] == b"\x89PNG" and "2 steps" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "sinusoid", "--set", "inner_lr=-1"], "'inner_lr' = -1.0 is out of range"),
        (["train", "smoke-sinusoid", "--agent", "oracle"], "'agent' = 'oracle' is not allowed"),
        (["evaluate", "{omni}", "--shots", "0,5"], "--shots values must lie in 1..1000"),
        (["evaluate", "{omni}", "--shots", "five"], "--shots takes comma-separated integers"),
        (["evaluate", "{omni}", "--episodes", "3"], "--episodes does not apply to sinusoid runs"),
        (["evaluate", "{omni}", "--flow", "sideways"], "--flow 'sideways' does not exist"),
        (["evaluate", "{maml}", "--flow", "meta"], "(its flows: none)"),
        (["evaluate", "{omni}", "--steps", "2", "--lr-schedule", "0.1"], "needs 2 positive rates"),
        (["evaluate", "{omni}", "{nav}"], "runs of different kinds cannot be evaluated together"),
        (["evaluate", "{omni}", "{tmp}/no-such-run"], "no-such-run is not a run folder"),
        (["render", "{omni}", "--task", '{"amplitude": 9, "phase": 0}'], "'amplitude' = 9"),
        (["render", "{omni}", "--task", "amplitude"], "--task must be JSON like"),
        (["render", "{omni}", "--out", "{tmp}/w.gif"], "must be a file ending in .png, .svg"),
        (["render", "{omni}", "--sample"], "--sample does not apply to sinusoid runs"),
        (["render", "{empty}", "--checkpoint", "best"], "has no checkpoint best.pt"),
        (["train", "--resume", "{empty}"], "has no checkpoint to resume"),
    ],
)
def test_sinusoid_bad_input_is_one_clear_line_and_exit_code_2(
    sinusoid_runs, tmp_path, args, message
):
    nav, empty = tmp_path / "nav-run", tmp_path / "empty-run"
    for folder, config in ((nav, "family: navigation-2d\n"), (empty, "family: sinusoid\n")):
        folder.mkdir()
        (folder / "config.yaml").write_text(config)
    names = {**sinusoid_runs, "nav": nav, "empty": empty, "tmp": tmp_path}
    for name, path in names.items():  # not str.format: the JSON tasks hold braces
        args = [a.replace(f"{{{name}}}", str(path)) for a in args]
    if args[0] == "render" and "--out" not in args:  # nothing is written on bad input anyway
        args += ["--out", str(tmp_path / "waves.png")]
    result = runner.invoke(app, args, terminal_width=300)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "waves.png").exists()


# ---------------------------------------------------------------------------- few-shot
def fewshot_train(run_dir, data, *args):
    command = ["train", "smoke-fewshot", "--data", str(data), "--no-progress"]
    return runner.invoke(app, [*command, "--set", f"run_dir={run_dir}", *args])


@pytest.mark.parametrize("agent", ["omni", "protonet", "pretrain", "joint"])
def test_fewshot_trains_evaluates_and_renders_through_the_cli(tmp_path, fewshot_data, agent):
    result = fewshot_train(tmp_path / "runs", fewshot_data, "--agent", agent)
    assert result.exit_code == 0, result.output
    [run] = list((tmp_path / "runs").iterdir())
    assert run.name.startswith(f"fewshot-{agent}-0-")
    out = tmp_path / "eval"
    args = ["evaluate", str(run), "--episodes", "4", "--shots", "1,2", "--out", str(out)]
    result = runner.invoke(app, args, terminal_width=200)
    assert result.exit_code == 0, result.output
    payload = json.loads((out / "eval.json").read_text())
    [entry] = payload["runs"]
    assert payload["way"] == 5 and payload["data"] == [fewshot_data.name]
    stats = entry["results"][fewshot_data.name]
    assert len(stats["1"]["accuracies"]) == 4 and 0 <= stats["2"]["mean"] <= 1
    assert (out / "eval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"{fewshot_data.name} 2-shot" in result.output
    png = tmp_path / "episode.png"
    result = runner.invoke(app, ["render", str(run), "--shots", "2", "--out", str(png)])
    assert result.exit_code == 0, result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fewshot_bad_input_is_one_line_before_any_episode(tmp_path, fewshot_data):
    assert fewshot_train(tmp_path / "runs", fewshot_data, "--agent", "protonet").exit_code == 0
    [run] = list((tmp_path / "runs").iterdir())
    out = tmp_path / "eval"
    for args, message in [
        (["--shots", "1,7"], "has 22 images, but 7-shot episodes with 16 queries per class need"),
        (["--flow", "meta"], "--flow 'meta' does not exist"),
        (["--steps", "2"], "--steps does not apply to fewshot runs"),
    ]:
        result = runner.invoke(app, ["evaluate", str(run), *args, "--out", str(out)])
        assert result.exit_code == 2, result.output
        assert message in result.output and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1
    assert not out.exists() or not list(out.iterdir())


def test_fewshot_resume_continues_bit_for_bit(tmp_path, fewshot_data):
    import torch

    from omnirl import checkpoint

    straight, split = tmp_path / "straight", tmp_path / "split"
    assert fewshot_train(straight, fewshot_data, "--iterations", "4").exit_code == 0
    assert fewshot_train(split, fewshot_data, "--iterations", "2").exit_code == 0
    [run] = list(split.iterdir())
    args = ["train", "--resume", str(run), "--iterations", "4", "--no-progress"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    [reference] = list(straight.iterdir())
    a = checkpoint.load(reference / "checkpoints" / "latest.pt")["agent"]
    b = checkpoint.load(run / "checkpoints" / "latest.pt")["agent"]
    for key in a["net"]:
        torch.testing.assert_close(a["net"][key], b["net"][key], rtol=0, atol=0)


@pytest.mark.parametrize(
    ("classes", "message"),
    [(2, "train classes: 2 classes, but 3-way episodes need at least 3"), (None, "neither")],
)
def test_fewshot_bad_training_data_is_one_line(tmp_path, write_fewshot_classes, classes, message):
    data = tmp_path / "nowhere"
    if classes is not None:
        data = tmp_path / "data"
        for split in ("train", "val", "test"):
            names = [f"{split}-{k}" for k in range(classes if split == "train" else 5)]
            write_fewshot_classes(data / split, names, 22)
    result = fewshot_train(tmp_path / "runs", data)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
