"""Training end to end on tiny configs: every agent, resume, kills, bad input, divergence."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from omnirl import checkpoint
from omnirl.cli import app
from omnirl.config import load_config
from omnirl.trainer import Trainer, TrainingError

runner = CliRunner()


def train_cli(tmp_path, *args):
    where = [] if "--resume" in args else ["--set", f"run_dir={tmp_path}"]
    return runner.invoke(app, ["train", *args, "--no-progress", *where])


def only_run(tmp_path) -> Path:
    [run] = [p for p in tmp_path.iterdir() if p.is_dir()]
    return run


@pytest.mark.parametrize("agent", ["omni", "maml", "pretrain", "joint", "random"])
def test_every_agent_trains_through_the_cli(tmp_path, agent):
    result = train_cli(tmp_path, "smoke-navigation-2d", "--agent", agent)
    assert result.exit_code == 0, result.output
    run = only_run(tmp_path)
    assert run.name.startswith(f"navigation-2d-{agent}-0-")
    cfg = load_config(str(run / "config.yaml"))
    assert cfg.agent == agent
    latest = checkpoint.load(run / "checkpoints" / "latest.pt")
    best = checkpoint.load(run / "checkpoints" / "best.pt")
    initial = Trainer(cfg, tmp_path / "unused").agent.policy.state_dict()  # same seed
    if agent == "random":  # nothing to train: the initial parameters, saved once
        assert latest["iteration"] == best["iteration"] == 0
        assert states_equal(latest["agent"]["policy"], initial)
        return
    assert latest["iteration"] == 2 and best["iteration"] in (1, 2)
    assert not states_equal(latest["agent"]["policy"], initial)  # the steps moved the policy
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["iteration"] for line in lines] == [1, 2]
    for key in ("rollout/return_pre", "time/sps", "time/iteration_s", "time/sampling_s"):
        assert all(key in line for line in lines), key
    # TRPO accepted a step in every iteration of the smoke config, inside the trust region.
    assert all(line["train/accepted"] == 1.0 for line in lines)
    assert all(0 < line["train/kl"] <= cfg.max_kl for line in lines)
    assert all(line["train/loss_after"] < line["train/loss"] for line in lines)
    if agent != "pretrain":
        assert all("rollout/return_post" in line for line in lines)
    assert any(p.name.startswith("events.out.tfevents") for p in run.iterdir())


def test_latest_checkpoint_advances_every_iteration(tmp_path):
    trainer = Trainer(load_config("smoke-navigation-2d", [f"run_dir={tmp_path}", "iterations=3"]))
    trainer._open_run()
    latest = trainer.checkpoint_dir / "latest.pt"
    seen = []
    for _ in range(3):
        trainer.step()
        state = checkpoint.load(latest)
        seen.append(state["iteration"])
        assert states_equal(state["agent"], trainer.agent.state_dict())
    assert seen == [1, 2, 3]
    trainer.lock.release()


@pytest.mark.parametrize("agent", ["omni", "maml"])
def test_halfcheetah_smoke(tmp_path, agent):
    result = train_cli(tmp_path, "smoke-halfcheetah-vel", "--agent", agent, "--iterations", "1")
    assert result.exit_code == 0, result.output
    [line] = (only_run(tmp_path) / "metrics.jsonl").read_text().splitlines()
    assert json.loads(line)["train/kl"] <= load_config("smoke-halfcheetah-vel").max_kl + 1e-6


def states_equal(a, b):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(states_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(states_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    return a == b


@pytest.mark.parametrize("agent", ["omni", "maml"])
def test_resume_is_bit_identical(tmp_path, agent):
    sets = [f"agent={agent}", f"run_dir={tmp_path}", "iterations=6", "eval_every=2"]
    straight = Trainer(load_config("smoke-navigation-2d", sets), tmp_path / "straight")
    straight.train()
    interrupted = Trainer(
        load_config("smoke-navigation-2d", [*sets[:-2], "iterations=3", "eval_every=2"]),
        tmp_path / "resumed",
    )
    interrupted.train()
    interrupted.close()
    resumed = Trainer.resume(tmp_path / "resumed", iterations=6)
    assert resumed.iteration == 3
    resumed.train()
    assert states_equal(straight.agent.state_dict(), resumed.agent.state_dict())
    lines = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in lines] == [1, 2, 3, 4, 5, 6]


def start_long_run(tmp_path, **popen):
    """A smoke training run in a child process, once its first ``latest.pt`` exists."""
    cmd = [
        sys.executable,
        "-m",
        "omnirl.cli",
        "train",
        "smoke-navigation-2d",
        "--no-progress",
        "--iterations",
        "100000",
        "--set",
        f"run_dir={tmp_path}",
    ]
    proc = subprocess.Popen(cmd, **popen)
    deadline = time.time() + 60
    while time.time() < deadline:  # until a trained iteration is saved (not just iteration 0)
        runs = [p for p in tmp_path.iterdir() if p.is_dir()]
        latest = runs[0] / "checkpoints" / "latest.pt" if runs else None
        if latest is not None and latest.exists() and checkpoint.load(latest)["iteration"] >= 1:
            return proc, latest
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise AssertionError("no checkpoint written")


def test_sigkill_mid_run_leaves_a_loadable_checkpoint(tmp_path):
    proc, latest = start_long_run(tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)  # checkpoints are written every iteration: kill somewhere in between
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    state = checkpoint.load(latest)
    assert state["iteration"] >= 1
    resumed = Trainer.resume(latest.parent.parent, iterations=state["iteration"] + 1)
    resumed.train()
    assert resumed.iteration == state["iteration"] + 1
    assert not list(latest.parent.glob(".*.tmp"))


def test_sigterm_stops_like_ctrl_c_and_names_the_resume_command(tmp_path):
    proc, latest = start_long_run(tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(0.5)
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    run_dir = latest.parent.parent
    assert proc.returncode == 130
    assert f"continue with: omnirl train --resume {run_dir}\n" in err.decode()  # one line
    assert "Traceback" not in err.decode()
    state = checkpoint.load(latest)
    resumed = Trainer.resume(run_dir, iterations=state["iteration"] + 1)
    resumed.train()
    assert resumed.iteration == state["iteration"] + 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["smoke-navigation-2d", "--set", "itertions=3"], "unknown config key 'itertions'"),
        (["smoke-navigation-2d", "--set", "iterations=ten"], "iterations"),
        (["smoke-navigation-2d", "--set", "max_kl=-1"], "max_kl"),
        (["smoke-navigation-2d", "--agent", "ppo"], "ppo"),
        (["cartpole"], "cartpole"),
        (["--resume", "no/such/run"], "no/such/run"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, args, message):
    result = train_cli(tmp_path, *args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_divergence_stops_with_a_message_and_keeps_the_last_checkpoint(tmp_path):
    trainer = Trainer(load_config("smoke-navigation-2d", [f"run_dir={tmp_path}", "iterations=3"]))
    trainer._open_run()
    trainer.step()
    trainer.lock.release()
    good = {k: v.clone() for k, v in trainer.agent.policy.state_dict().items()}
    with torch.no_grad():
        for p in trainer.agent.policy.parameters():
            p.fill_(float("nan"))
    with pytest.raises(TrainingError, match="non-finite"):
        trainer.train()
    saved = checkpoint.load(trainer.checkpoint_dir / "latest.pt")
    assert saved["iteration"] == 1
    assert states_equal(saved["agent"]["policy"], good)


def test_divergent_config_exits_1_without_traceback(tmp_path):
    result = train_cli(tmp_path, "smoke-navigation-2d", "--agent", "maml", "--set", "inner_lr=1e38")
    assert result.exit_code == 1, result.output
    assert "non-finite" in result.output and "Traceback" not in result.output
