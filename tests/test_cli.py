"""The command line, through Typer's runner and as a real subprocess."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from omnirl.cli import app

runner = CliRunner()


def test_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "list" in result.output


def test_list_shows_every_family_with_tasks_and_horizon():
    result = runner.invoke(app, ["list"], terminal_width=200)
    assert result.exit_code == 0, result.output
    for name, env_id, tasks, horizon in [
        ("navigation-2d", "omnirl/Navigation2D-v1", "goal ~ U[-0.5, 0.5]^2", "100"),
        ("halfcheetah-vel", "omnirl/HalfCheetahVel-v0", "velocity ~ U[0, 2]", "200"),
        ("halfcheetah-dir", "omnirl/HalfCheetahDir-v0", "direction ~ {-1, 1}", "200"),
    ]:
        row = next(line for line in result.output.splitlines() if name in line)
        assert env_id in row and tasks in row and horizon in row
    assert "learners: omni, maml, pretrain, joint, random, oracle" in result.output
    assert "learners: omni, maml, pretrain, joint\n" in result.output  # sinusoid
    assert "learners: omni, protonet, pretrain, joint" in result.output
    assert "smoke-navigation-2d" in result.output


def test_list_one_family_by_name_or_id_samples_valid_tasks():
    for key in ("halfcheetah-vel", "omnirl/HalfCheetahVel-v0"):
        result = runner.invoke(app, ["list", key, "--samples", "2", "--seed", "1"])
        assert result.exit_code == 0, result.output
        assert result.output.count('{"velocity":') == 2


def test_list_rounds_the_examples_of_a_physics_family_and_they_stay_valid_tasks():
    from omnirl import registry

    result = runner.invoke(app, ["list", "halfcheetah-vel-domains", "--samples", "3"])
    assert result.exit_code == 0, result.output
    lines = [line.split("e.g.", 1)[1] for line in result.output.splitlines() if "e.g." in line]
    assert len(lines) == 3
    tasks = registry.get_family("halfcheetah-vel-domains").tasks
    for line in lines:
        task = json.loads(line)
        assert len(str(task["body_mass"][0]).split(".")[1]) <= 3
        tasks.validate(task)  # raises on an out-of-range value


def test_unknown_family_is_one_clear_line_and_exit_code_2():
    result = runner.invoke(app, ["list", "halfcheetah-vle"])
    assert result.exit_code == 2
    assert "unknown family 'halfcheetah-vle'" in result.output
    assert "Did you mean 'halfcheetah-vel'" in result.output
    assert "navigation-2d" in result.output and "Traceback" not in result.output


def test_console_script_starts_without_torch_or_mujoco(tmp_path):
    code = (
        "import sys, omnirl.cli; print(sorted(m for m in ('torch', 'mujoco') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_installed_packages_import_from_outside_the_repo(tmp_path):
    code = "import omnirl.envs, omnirl.agents, omnirl.configs; print(omnirl.envs.__name__)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "omnirl.envs"
    omnirl = str(Path(sys.executable).parent / "omnirl")
    result = subprocess.run([omnirl, "list", "nope"], cwd=tmp_path, capture_output=True, text=True)
    assert (
        result.returncode == 2
        and "Known families" in result.stderr
        and "Traceback" not in result.stderr
    )


def _environment_after_import(env: dict[str, str]) -> list[str]:
    """What a fresh interpreter that imports omnirl's trainer sees: the spin count, torch."""
    code = (
        "import sys, omnirl; before = 'torch' in sys.modules; import omnirl.trainer, os;"
        "print(before, os.environ['GOMP_SPINCOUNT'])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.split()


def test_libgomp_spins_briefly_unless_the_user_says_otherwise():
    # libgomp reads the spin count when torch loads it: omnirl must set it before any torch import.
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    assert _environment_after_import(env) == ["False", "500"]
    assert _environment_after_import({**env, "GOMP_SPINCOUNT": "300000"}) == ["False", "300000"]


_REFAULTS = """
import resource
import numpy as np
import omnirl

def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

block = np.ones(8 << 20)  # 64 MB, above any glibc mmap threshold
del block
before = faults()
for _ in range(5):
    block = np.ones(8 << 20)
    del block
print(faults() - before)
"""


def _refaults(env: dict[str, str]) -> int:
    """Page faults of five more alloc/free cycles of one 64 MB block in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", _REFAULTS], env=env, capture_output=True, text=True, check=True
    )
    return int(done.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_large_blocks_are_reused_unless_the_user_chooses_the_allocator():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "OMNIRL_MALLOC"))}
    env.pop("LD_PRELOAD", None)
    # A 64 MB block returned to the OS faults in again on every cycle: at least its 32 pages
    # of 2 MB each (numpy asks for transparent huge pages), 16,384 pages of 4 kB without them.
    assert _refaults(env) < 32
    assert _refaults({**env, "OMNIRL_MALLOC": "system"}) >= 5 * 32
