"""The analysis scripts under results/ on tiny real runs."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from omnirl.cli import app

RESULTS = Path(__file__).resolve().parents[1] / "results"


def script(name):
    spec = importlib.util.spec_from_file_location(name, RESULTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_run(tmp_path, agent):
    args = ["train", "smoke-navigation-2d", "--agent", agent, "--no-progress"]
    result = CliRunner().invoke(app, [*args, "--set", f"run_dir={tmp_path / agent}"])
    assert result.exit_code == 0, result.output
    [run] = (tmp_path / agent).iterdir()
    return run


def test_joint_ratios_are_one_before_training_and_leave_the_run_untouched(tmp_path):
    joint_ratios = script("joint_ratios")
    run = tiny_run(tmp_path, "omni")
    files = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    # Before training the three heads are copies and the branches add zero: one policy, so
    # on P and S the joint flow's ratios are 1. On Q they are not: the meta flow's inner step
    # also moves its branch factors, the joint flow's does not.
    before, cap = joint_ratios.recorded_ratios(str(run), init=True)
    assert cap == pytest.approx(1.2)
    assert [r.size for r in before] == [40, 40, 40]  # 2 tasks x 2 episodes x 10 steps each
    for ratios in before[:2]:
        np.testing.assert_allclose(ratios, 1.0, atol=1e-5)
    assert np.abs(before[2] - 1.0).max() > 1e-4
    # After training the flows differ, so the ratios do too, and they stay positive and finite.
    trained, _ = joint_ratios.recorded_ratios(str(run), init=False)
    for ratios in trained:
        assert np.all(np.isfinite(ratios)) and np.all(ratios > 0)
    assert any(np.abs(r - 1.0).max() > 1e-4 for r in trained)
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == files


def test_joint_ratios_refuses_a_run_without_a_joint_flow(tmp_path):
    joint_ratios = script("joint_ratios")
    with pytest.raises(SystemExit, match="not an omni run"):
        joint_ratios.recorded_ratios(str(tiny_run(tmp_path, "maml")), init=False)
