"""Fault injection with real processes and real files: every fault ends as the README says.

SIGKILL at random moments (also between the two checkpoint writes and during a resume's
start-up), a torn ``metrics.jsonl``, damaged checkpoints and configs, a forced divergence, two
processes on one run, and a full disk. A resumed run ends bit-identical to an uninterrupted one.
"""

import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from omnirl import checkpoint
from omnirl.cli import app
from omnirl.config import load_config
from omnirl.trainer import Trainer

runner = CliRunner()
SMOKE = "smoke-navigation-2d"
SETS = ["eval_every=1", "torch_threads=1"]


def omnirl(*args, timeout=120, **popen):
    """``omnirl ARGS`` in a child process."""
    cmd = [sys.executable, "-m", "omnirl.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **popen)


def train_args(run_dir, iterations):
    sets = [item for s in SETS for item in ("--set", s)]
    return ["train", SMOKE, "--no-progress", "--iterations", str(iterations), *sets] + [
        "--set",
        f"run_dir={run_dir}",
    ]


def reference(tmp_path, iterations):
    """The uninterrupted run, in this process."""
    cfg = load_config(SMOKE, [*SETS, f"iterations={iterations}", f"run_dir={tmp_path / 'ref'}"])
    trainer = Trainer(cfg)
    trainer.train()
    trainer.close()
    return trainer.run_dir


def untimed(run):
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if not k.startswith("time/")} for x in lines]


def assert_same_run(run, ref):
    """Same metrics (time aside) and the same final checkpoint, bit for bit."""
    assert untimed(run) == untimed(ref)
    a = checkpoint.load(run / "checkpoints" / "latest.pt")
    b = checkpoint.load(ref / "checkpoints" / "latest.pt")
    assert a["iteration"] == b["iteration"]
    for key in a["agent"]["policy"]:
        assert torch.equal(a["agent"]["policy"][key], b["agent"]["policy"][key]), key
    assert not list(run.rglob(".*.tmp"))


def one_line(result, code):
    """A CLI result that ended with ``code`` and one line of output, no traceback."""
    if isinstance(result, subprocess.CompletedProcess):
        text, got = result.stdout + result.stderr, result.returncode
    else:
        text, got = result.output, result.exit_code
    assert got == code, text
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


def only_run(folder):
    [run] = [p for p in folder.iterdir() if p.is_dir()]
    return run


# ------------------------------------------------------------------------------- kills
KILL_BETWEEN_WRITES = """
import os, signal, sys
from omnirl import checkpoint
from omnirl.cli import app
save, last = checkpoint.save_atomic, []
def patched(state, path):
    if os.path.basename(path) == "latest.pt" and last == ["best.pt"] and state["iteration"] >= {at}:
        os.kill(os.getpid(), signal.SIGKILL)  # best.pt is written, latest.pt not yet
    save(state, path)
    last[:] = [os.path.basename(path)]
checkpoint.save_atomic = patched
sys.argv = ["omnirl", *sys.argv[1:]]
app()
"""


def test_kill_between_the_two_checkpoint_writes_resumes_bit_identical(tmp_path):
    ref = reference(tmp_path, 6)
    best, kill_at = -float("inf"), None
    for line in untimed(ref):  # the first iteration >= 2 whose quick evaluation improved
        if line["eval/return_post"] > best:
            best = line["eval/return_post"]
            kill_at = line["iteration"] if line["iteration"] >= 2 and kill_at is None else kill_at
    assert kill_at is not None
    code = KILL_BETWEEN_WRITES.format(at=kill_at)
    done = subprocess.run(
        [sys.executable, "-c", code, *train_args(tmp_path / "runs", 6)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == -signal.SIGKILL
    run = only_run(tmp_path / "runs")
    best_state = checkpoint.load(run / "checkpoints" / "best.pt")
    latest_state = checkpoint.load(run / "checkpoints" / "latest.pt")
    assert best_state["iteration"] == kill_at and latest_state["iteration"] == kill_at - 1
    resumed = omnirl("train", "--resume", str(run), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(run, ref)
    reference_best = checkpoint.load(ref / "checkpoints" / "best.pt")
    final_best = checkpoint.load(run / "checkpoints" / "best.pt")
    assert final_best["iteration"] == reference_best["iteration"]


def test_sigkill_at_random_moments_and_during_resume_start_up(tmp_path):
    iterations = 14
    ref = reference(tmp_path, iterations)
    rng = random.Random(0)
    args = train_args(tmp_path / "runs", iterations)
    for attempt in range(4):
        if attempt == 0:
            proc = subprocess.Popen([sys.executable, "-m", "omnirl.cli", *args], **QUIET)
            deadline = time.time() + 120  # a loaded machine can take long over the imports
            while not list((tmp_path / "runs").glob("*/checkpoints/latest.pt")):
                assert time.time() < deadline and proc.poll() is None
                time.sleep(0.05)
        else:
            run = only_run(tmp_path / "runs")
            cmd = [
                sys.executable,
                "-m",
                "omnirl.cli",
                "train",
                "--resume",
                str(run),
                "--no-progress",
            ]
            proc = subprocess.Popen(cmd, **QUIET)
        # Early kills land in the start-up (imports, env, checkpoint load), later ones mid-run.
        time.sleep(rng.uniform(0.1, 1.0) if attempt % 2 else rng.uniform(1.0, 3.0))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    run = only_run(tmp_path / "runs")
    done = omnirl("train", "--resume", str(run), "--no-progress")
    assert done.returncode == 0, done.stderr
    assert_same_run(run, ref)


QUIET = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}


# -------------------------------------------------------------------------- torn log
def test_a_torn_metrics_line_is_dropped_with_one_warning(tmp_path):
    ref = reference(tmp_path, 4)
    assert omnirl(*train_args(tmp_path / "runs", 2)).returncode == 0
    run = only_run(tmp_path / "runs")
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"iteration": 3, "train/lo')  # a full disk cut this write short
    done = omnirl("train", "--resume", str(run), "--iterations", "4", "--no-progress")
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if "torn last line" in line]
    assert len(warnings) == 1
    assert_same_run(run, ref)


# ----------------------------------------------------------------------- damaged state
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished smoke run (best.pt and latest.pt) and a sinusoid checkpoint."""
    root = tmp_path_factory.mktemp("trained")
    assert omnirl(*train_args(root / "runs", 2)).returncode == 0
    args = ["train", "smoke-sinusoid", "--no-progress", "--set", f"run_dir={root / 'sin'}"]
    assert omnirl(*args).returncode == 0
    return only_run(root / "runs"), only_run(root / "sin")


class Unsafe:
    """Not a tensor nor plain data: ``weights_only`` loading refuses it."""


def damage(kind, path, other):
    data = path.read_bytes()
    if kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "zeroed":
        path.write_bytes(bytes(len(data)))
    elif kind == "random":
        path.write_bytes(random.Random(0).randbytes(len(data)))
    elif kind == "structure":
        torch.save({"agent": {"policy": {}}, "rng": 1}, path)
    elif kind == "unsafe":
        torch.save({"agent": Unsafe()}, path)
    elif kind == "foreign":
        shutil.copy(other / "checkpoints" / "latest.pt", path)


COMMANDS = {
    "resume": lambda run: ["train", "--resume", str(run), "--iterations", "3", "--no-progress"],
    "evaluate": lambda run: ["evaluate", str(run), "--checkpoint", "latest", "--tasks", "2"],
    "render": lambda run: ["render", str(run), "--checkpoint", "latest", "--out", "x.gif"],
}


@pytest.mark.parametrize(
    "kind", ["truncated", "empty", "zeroed", "random", "structure", "unsafe", "foreign"]
)
@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_damaged_checkpoint_is_named_in_one_line(trained, tmp_path, kind, command):
    run = tmp_path / "run"
    shutil.copytree(trained[0], run)
    latest = run / "checkpoints" / "latest.pt"
    damage(kind, latest, trained[1])
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"}
    result = runner.invoke(app, COMMANDS[command](run), terminal_width=300)
    line = one_line(result, 2)
    assert str(latest) in line
    after = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"}
    assert after == before  # nothing was written


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is empty"),
        ("family: navigation-2d\nagent: ma", "'agent' = 'ma' is not allowed"),
        ("family: [navigation-2d\n", "config.yaml line"),
        ("a: &a [1, 2]\nb: *a\n", "YAML aliases"),
        ("family: sinusoid\n", "agent"),
    ],
)
@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_damaged_config_is_named_in_one_line(trained, tmp_path, text, message, command):
    run = tmp_path / "run"
    shutil.copytree(trained[0], run)
    (run / "config.yaml").write_text(text)
    result = runner.invoke(app, COMMANDS[command](run), terminal_width=300)
    line = one_line(result, 2)
    if text == "family: sinusoid\n":  # another kind's config: its options or checkpoint do not fit
        assert str(run / "checkpoints" / "latest.pt") in line or "x.gif" in line
    else:
        assert message in line


# --------------------------------------------------------------------------- divergence
def test_a_divergence_keeps_the_last_finite_checkpoint_and_resumes_from_it(tmp_path):
    args = train_args(tmp_path / "runs", 30) + ["--set", "outer_optimizer=adam"]
    done = omnirl(*args, "--set", "outer_lr=1000000.0")
    assert done.returncode == 1, done.stdout + done.stderr
    [error] = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert "non-finite" in error and "The last finite checkpoint is" in error
    run = only_run(tmp_path / "runs")
    latest = checkpoint.load(run / "checkpoints" / "latest.pt")
    for path in (run / "checkpoints").glob("*.pt"):  # best.pt only if an iteration was scored
        state = checkpoint.load(path)["agent"]
        assert all(torch.isfinite(v).all() for v in state["policy"].values()), path.name
    assert f"(iteration {latest['iteration']})" in error and "Traceback" not in done.stderr
    lines = untimed(run) if (run / "metrics.jsonl").exists() else []
    assert [line["iteration"] for line in lines] == list(range(1, latest["iteration"] + 1))
    result = runner.invoke(app, ["evaluate", str(run), "--tasks", "2", "--steps", "1"])
    assert result.exit_code == 0, result.output  # the finite checkpoint evaluates
    again = omnirl("train", "--resume", str(run), "--no-progress")  # diverges the same way
    assert again.returncode == 1 and error.split("; nothing")[0] in again.stderr


# ---------------------------------------------------------------------- two processes
def test_a_second_process_on_a_run_is_refused_with_the_holders_pid(tmp_path):
    assert omnirl(*train_args(tmp_path / "runs", 1)).returncode == 0
    run = only_run(tmp_path / "runs")
    cmd = [sys.executable, "-m", "omnirl.cli", "train", "--resume", str(run), "--no-progress"]
    first = subprocess.Popen([*cmd, "--iterations", "100000"], **QUIET)
    try:
        deadline = time.time() + 60
        while checkpoint.load(run / "checkpoints" / "latest.pt")["iteration"] < 2:
            assert time.time() < deadline and first.poll() is None
            time.sleep(0.1)
        second = omnirl("train", "--resume", str(run), "--iterations", "100000", "--no-progress")
        line = one_line(second, 2)
        assert f"PID {first.pid}" in line and "in use" in line
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=60)
    iterations = [line["iteration"] for line in untimed(run)]
    assert iterations == list(range(1, len(iterations) + 1))  # every iteration logged once


def test_new_run_folders_never_collide(tmp_path):
    from omnirl.files import create_run_dir

    made = [create_run_dir(tmp_path, "navigation-2d-maml-0-20260101-000000") for _ in range(3)]
    assert [p.name for p in made] == [
        "navigation-2d-maml-0-20260101-000000",
        "navigation-2d-maml-0-20260101-000000-2",
        "navigation-2d-maml-0-20260101-000000-3",
    ]


# --------------------------------------------------------------------------- full disk
def limit_file_size(limit):
    """In the child: files may not grow past ``limit`` bytes (writes fail with EFBIG)."""

    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_full_disk_is_one_line_exit_1_and_nothing_is_damaged(tmp_path):
    ref = reference(tmp_path, 4)
    assert omnirl(*train_args(tmp_path / "runs", 2)).returncode == 0
    run = only_run(tmp_path / "runs")
    saved = {p.name: p.read_bytes() for p in (run / "checkpoints").iterdir()}
    size = (run / "checkpoints" / "latest.pt").stat().st_size
    cmd = ["train", "--resume", str(run), "--iterations", "4", "--no-progress"]
    done = omnirl(*cmd, preexec_fn=limit_file_size(size // 2))  # no checkpoint fits
    assert done.returncode == 1, done.stdout + done.stderr
    [error] = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert "File too large" in error and "Traceback" not in done.stderr
    assert {p.name: p.read_bytes() for p in (run / "checkpoints").iterdir()} == saved
    again = omnirl(*cmd)  # room again: the run continues as if nothing happened
    assert again.returncode == 0, again.stderr
    assert_same_run(run, ref)


def test_a_full_tmpfs_where_the_machine_allows_one(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=192k", "tmpfs", str(mount)], capture_output=True
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()[:80]}")
    try:
        done = omnirl(*train_args(mount, 50))
        assert done.returncode == 1, done.stdout + done.stderr
        [error] = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert "No space left on device" in error and "Traceback" not in done.stderr
        run = only_run(mount)
        state = checkpoint.load(run / "checkpoints" / "latest.pt")  # the last one is whole
        assert state["iteration"] >= 0
    finally:
        subprocess.run(["umount", str(mount)], check=False)


# ---------------------------------------------------------------------------- dead runs
def test_iterations_zero_is_refused_and_leaves_no_folder(tmp_path):
    result = runner.invoke(
        app, ["train", SMOKE, "--iterations", "0", "--set", f"run_dir={tmp_path}"]
    )
    assert "'iterations' = 0 is out of range" in one_line(result, 2)
    assert list(tmp_path.iterdir()) == []


def test_an_interrupt_before_the_first_checkpoint_leaves_nothing_resumable(tmp_path):
    code = textwrap.dedent(
        """
        import sys
        from omnirl import runs
        from omnirl.cli import app
        def interrupted(self):
            raise KeyboardInterrupt
        runs.RunTrainer._open_run = interrupted  # Ctrl-C before anything was saved
        sys.argv = ["omnirl", *sys.argv[1:]]
        app()
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code, *train_args(tmp_path, 2)], capture_output=True, text=True
    )
    assert done.returncode == 130
    assert "nothing to resume" in done.stderr and "--resume" not in done.stderr
    assert list(tmp_path.iterdir()) == []
    assert Path(tmp_path).exists()


# ------------------------------------------------------------------- printed as typed
def test_paths_and_values_are_printed_as_typed(tmp_path):
    odd = tmp_path / "[red]runs [/]"
    result = runner.invoke(app, ["evaluate", str(odd)])
    assert f"{odd} is not a run folder" in one_line(result, 2)
    result = runner.invoke(app, ["train", SMOKE, "--set", "agent=[bold]maml"])
    assert "--set agent=[bold]maml" in one_line(result, 2)  # the markup is shown, not applied


def test_the_resume_command_is_shell_quoted(tmp_path):
    import shlex

    from omnirl.cli import _interrupted

    cfg = load_config(SMOKE, ["iterations=1"])
    trainer = Trainer(cfg, tmp_path / "my runs [1]")
    trainer._open_run()  # the iteration-0 checkpoint: resumable from here
    trainer.lock.release()
    message = _interrupted(trainer)
    assert (
        message
        == f"interrupted; continue with: omnirl train --resume {shlex.quote(str(trainer.run_dir))}"
    )
    assert shlex.split(message.split(": ", 1)[1])[-1] == str(trainer.run_dir)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seed", "-1"], "--seed must be an integer from 0 to 2^63 - 1"),
        (["--seed", str(2**64)], "--seed must be an integer from 0 to 2^63 - 1"),
        (["--lr-schedule", "nan"], "--lr-schedule needs 1 positive rates"),
        (["--lr-schedule", "inf"], "--lr-schedule needs 1 positive rates"),
    ],
)
def test_bad_evaluate_values_are_one_line_and_write_nothing(trained, tmp_path, args, message):
    out = tmp_path / "out" / "deeper"
    cmd = ["evaluate", str(trained[0]), "--steps", "1", "--out", str(out), *args]
    assert message in one_line(runner.invoke(app, cmd), 2)
    assert not (tmp_path / "out").exists()  # not even an empty folder


def test_a_deeply_nested_task_is_one_line(trained, tmp_path):
    task = "[" * 100_000 + "]" * 100_000
    cmd = ["render", str(trained[0]), "--task", task, "--out", str(tmp_path / "x.gif")]
    assert "--task is a small JSON object" in one_line(runner.invoke(app, cmd), 2)


def test_a_rewritten_output_keeps_its_permissions(tmp_path):
    from omnirl.files import write_atomic

    path = tmp_path / "eval.json"
    write_atomic(path, b"{}")
    path.chmod(0o640)
    write_atomic(path, b'{"a": 1}')
    assert path.stat().st_mode & 0o777 == 0o640 and path.read_bytes() == b'{"a": 1}'


def test_without_quick_evaluations_best_pt_holds_the_parameters_that_earned_the_score(tmp_path):
    cfg = load_config(SMOKE, ["eval_every=0", "iterations=4", f"run_dir={tmp_path}"])
    trainer = Trainer(cfg)
    snapshots = {}
    trainer._open_run()
    snapshots[0] = {k: v.clone() for k, v in trainer.agent.policy.state_dict().items()}
    for _ in range(4):
        metrics = trainer.step()
        snapshots[trainer.iteration] = {
            k: v.clone() for k, v in trainer.agent.policy.state_dict().items()
        }
    trainer.lock.release()
    scores = [
        json.loads(x)["rollout/return_post"] for x in (trainer.run_dir / "metrics.jsonl").open()
    ]
    best_iteration = max(range(4), key=lambda i: scores[i]) + 1  # the iteration that scored
    best = checkpoint.load(trainer.checkpoint_dir / "best.pt")
    # The rollouts of that iteration were collected before its update: by these parameters.
    assert best["iteration"] == best_iteration - 1
    for key, value in snapshots[best_iteration - 1].items():
        assert torch.equal(best["agent"]["policy"][key], value)
    assert metrics
