"""omnirl render on tiny runs: real MuJoCo offscreen frames, real video files, bad input."""

import os

import imageio.v3 as iio
import numpy as np
import pytest
from typer.testing import CliRunner

from omnirl.cli import app
from omnirl.options import OptionError, parse_counts
from omnirl.video import GL_BACKENDS, RenderError, choose_gl_backend

runner = CliRunner()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One tiny trained run per family (smoke configs: horizon 10, 2 iterations)."""
    root = tmp_path_factory.mktemp("runs")
    made = {}
    for family in ("navigation-2d", "halfcheetah-vel"):
        result = runner.invoke(
            app,
            ["train", f"smoke-{family}", "--agent", "maml", "--no-progress"]
            + ["--set", f"run_dir={root / family}"],
        )
        assert result.exit_code == 0, result.output
        [made[family]] = (root / family).iterdir()
    return made


def render(run, out, *extra):
    args = ["render", str(run), "--out", str(out), "--steps", "0,1", "--checkpoint", "latest"]
    return runner.invoke(app, args + list(extra), terminal_width=200)


def assert_moving_picture(frames):
    """Not blank (each frame has contrast) and changing over time."""
    assert frames.ndim == 4 and frames.shape[-1] == 3
    assert all(frame.std() > 10 for frame in frames[:: max(len(frames) // 5, 1)])
    assert np.abs(frames[-1].astype(int) - frames[0].astype(int)).mean() > 1


def test_parse_steps():
    assert parse_counts("4,0,1,1", "--steps", 0, 10) == [0, 1, 4]
    for bad in ("", "a", "1,-1", "11", "1.5"):
        with pytest.raises(OptionError, match="--steps"):
            parse_counts(bad, "--steps", 0, 10)


def test_render_halfcheetah_mp4_and_gif(runs, tmp_path):
    for suffix in (".mp4", ".gif"):
        out = tmp_path / f"cheetah{suffix}"
        result = render(runs["halfcheetah-vel"], out, "--task", '{"velocity": 1.5}')
        assert result.exit_code == 0, result.output
        frames = iio.imread(out, index=None)
        # Two stages of a 10-step episode: 11 frames each plus the held last frames.
        assert len(frames) >= 22 and frames.shape[1:3] == (320, 480)
        assert_moving_picture(frames)
    assert '{"velocity": 1.5}' in result.output  # the table names the task it adapted to


def test_render_navigation_gif(runs, tmp_path):
    out = tmp_path / "nav.gif"
    result = render(runs["navigation-2d"], out, "--task", '{"goal": [0.3, -0.2]}')
    assert result.exit_code == 0, result.output
    frames = iio.imread(out, index=None)
    assert_moving_picture(frames)
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_backend_is_chosen_automatically(monkeypatch):
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.delenv("PYOPENGL_PLATFORM", raising=False)  # restored after the test
    backend = choose_gl_backend()
    assert backend in GL_BACKENDS and os.environ["MUJOCO_GL"] == backend


def test_unusable_gl_backend_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("MUJOCO_GL", "no-such-backend")
    with pytest.raises(RenderError, match="MUJOCO_GL=no-such-backend.*libosmesa6"):
        choose_gl_backend()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--task", '{"velocity": 9}'], "does not fit halfcheetah-vel"),
        (["--task", '{"goal": [0, 0]}'], "unknown task field"),
        (["--task", "{velocity: 1}"], "must be JSON"),
        (["--steps", "0,x"], "comma-separated integers"),
        (["--out", "{tmp}/clip.avi"], ".mp4 or .gif"),
        (["--out", "/proc/clip.mp4"], "cannot write"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(runs, tmp_path, args, message):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    out = tmp_path / "clip.mp4"
    result = runner.invoke(app, ["render", str(runs["halfcheetah-vel"]), "--out", str(out), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_missing_run_and_checkpoint(tmp_path):
    result = runner.invoke(app, ["render", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "not a run folder" in result.output
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("family: navigation-2d\n")
    result = runner.invoke(app, ["render", str(tmp_path / "run")])
    assert result.exit_code == 2 and "has no checkpoint" in result.output


def test_a_run_without_best_pt_renders_from_latest_and_says_so(runs, tmp_path):
    run = tmp_path / "young"
    import shutil

    shutil.copytree(runs["navigation-2d"], run)
    (run / "checkpoints" / "best.pt").unlink()
    out = tmp_path / "nav.gif"
    result = runner.invoke(app, ["render", str(run), "--out", str(out), "--steps", "0,1"])
    assert result.exit_code == 0, result.output
    assert "has no best.pt yet" in result.output and "using latest.pt" in result.output
    assert out.is_file()
