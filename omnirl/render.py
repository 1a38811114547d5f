"""``omnirl render``: adapt a policy to one task and film an episode after chosen step counts.

The adaptation is the evaluation protocol (:func:`omnirl.evaluation.adaptation_stages`: K
episodes, one policy-gradient step, re-collect, ...) run on a single task. After each requested
step count one more episode is played in a single env and filmed: MuJoCo families through their
offscreen ``rgb_array`` renderer, Navigation2D as a drawing of the trajectory towards the goal.
Stages follow one another in one video, each frame labelled with its step count and return.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from omnirl.files import write_atomic

# Offscreen OpenGL backends MuJoCo can use without a display, in order of preference.
GL_BACKENDS = ("egl", "osmesa")
VIDEO_SUFFIXES = (".mp4", ".gif")
# Frame size: multiples of 16, so the MP4 encoder need not resize.
WIDTH, HEIGHT = 480, 320
_HOLD_FRAMES = 10  # repeat each stage's last frame so the end of an episode can be seen

_PROBE = """
import mujoco
ctx = mujoco.GLContext(16, 16)
ctx.make_current()
ctx.free()
"""


class RenderError(RuntimeError):
    """Rendering cannot be done as asked; the message is one line for the CLI."""


def parse_steps(text: str, max_steps: int = 10) -> list[int]:
    """``"0,1,4"`` -> ``[0, 1, 4]`` (sorted, unique, each in ``0..max_steps``).

    Raises:
        RenderError: not comma-separated integers in range.
    """
    try:
        steps = sorted({int(part) for part in text.split(",")})
    except ValueError:
        raise RenderError(
            f"--steps takes comma-separated integers like 0,1,4, got {text!r}"
        ) from None
    if steps[0] < 0 or steps[-1] > max_steps:
        raise RenderError(f"--steps must lie in 0..{max_steps}, got {text!r}")
    return steps


def check_video_path(path: Path) -> None:
    """Fail early on an output path that cannot become a video.

    Raises:
        RenderError: an unsupported suffix or a folder that cannot be written.
    """
    from omnirl.report import check_writable

    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise RenderError(f"--out must end in .mp4 or .gif, got {str(path)!r}")
    if path.is_dir():
        raise RenderError(f"--out {path} is a folder; give a file name ending in .mp4 or .gif")
    try:
        check_writable(path.parent)
    except OSError as exc:
        raise RenderError(str(exc)) from None


def _probe_backend(backend: str) -> str | None:
    """``None`` if MuJoCo can open an offscreen context with ``backend``, else why not."""
    env = {**os.environ, "MUJOCO_GL": backend, "PYOPENGL_PLATFORM": backend}
    try:
        # A child process: a backend that fails to load can leave this process's OpenGL broken.
        done = subprocess.run(
            [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=120
        )
    except subprocess.TimeoutExpired:
        return "timed out"
    if done.returncode == 0:
        return None
    lines = done.stderr.strip().splitlines()
    return lines[-1] if lines else f"exit code {done.returncode}"


def choose_gl_backend() -> str:
    """Set ``MUJOCO_GL`` to a working offscreen backend (the user's choice if set) and return it.

    Must run before anything imports PyOpenGL, which fixes its platform on first import.

    Raises:
        RenderError: no backend works; the message says what each one reported and what to install.
    """
    requested = os.environ.get("MUJOCO_GL")
    candidates = (requested,) if requested else GL_BACKENDS
    errors = {}
    for backend in candidates:
        error = _probe_backend(backend)
        if error is None:
            os.environ["MUJOCO_GL"] = backend
            os.environ.setdefault("PYOPENGL_PLATFORM", backend)
            return backend
        errors[backend] = error
    tried = "; ".join(f"MUJOCO_GL={b}: {e}" for b, e in errors.items())
    raise RenderError(
        f"MuJoCo offscreen rendering does not work here ({tried}); install EGL or OSMesa "
        "(Debian/Ubuntu: apt-get install libegl1 libosmesa6)"
    )


@functools.cache
def _metadata(env_id: str) -> dict[str, Any]:
    """The env's metadata (made once per id: building a MuJoCo env compiles its model)."""
    import gymnasium

    env = gymnasium.make(env_id)
    try:
        return dict(env.metadata)
    finally:
        env.close()


def needs_gl(env_id: str) -> bool:
    """Whether the family renders through MuJoCo (else omnirl draws it with matplotlib)."""
    return "rgb_array" in _metadata(env_id).get("render_modes", [])


@dataclass
class Stage:
    """One filmed episode: after ``step`` adaptation steps."""

    step: int
    params: dict[str, Any]
    adaptation_return: float  # mean return of the K adaptation episodes at this step
    frames: list[np.ndarray] | None = None
    positions: np.ndarray | None = None  # Navigation2D: (T + 1, 2)
    film_return: float = 0.0


def adapt(
    agent: Any,
    env_id: str,
    task: Mapping[str, Any],
    steps: Sequence[int],
    lrs: Sequence[float],
    episodes: int,
    flow: str | None,
    seed: int,
    horizon: int | None = None,
) -> list[Stage]:
    """Adapt on ``task`` (evaluation protocol) and keep the parameters after each of ``steps``."""
    from omnirl.collector import Collector
    from omnirl.evaluation import adaptation_stages

    stages = []
    with Collector(env_id, seed=seed) as collector:
        runs = adaptation_stages(agent, collector, [dict(task)], lrs, episodes, flow, horizon, seed)
        for step, (params_B, eps) in enumerate(runs):
            if step in steps:
                params = {name: value[0] for name, value in params_B.items()}
                stages.append(Stage(step, params, float(eps.task_returns_B()[0])))
            if step == max(steps):
                break
    return stages


def _actor(agent: Any, flow: str | None, params: dict[str, Any], sample: bool, seed: int) -> Any:
    import torch
    from torch.func import functional_call

    kwargs = {} if flow is None else {"flow": flow}
    generator = torch.Generator().manual_seed(seed)

    def act(obs: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            obs_t = torch.as_tensor(obs, dtype=torch.float32)[None]
            dist = functional_call(agent.policy, params, (obs_t,), kwargs)
            action = dist.loc
            if sample:
                action = action + dist.scale * torch.randn(action.shape, generator=generator)
            return action[0].numpy().astype(np.float64)

    return act


def play(
    agent: Any,
    env_id: str,
    task: Mapping[str, Any],
    stage: Stage,
    flow: str | None,
    sample: bool,
    seed: int,
    film: bool,
    horizon: int | None = None,
) -> None:
    """Play one episode with the stage's parameters; keep frames (``film``) or positions."""
    import gymnasium

    kwargs: dict[str, Any] = {} if horizon is None else {"max_episode_steps": horizon}
    if film:
        kwargs.update(render_mode="rgb_array", width=WIDTH, height=HEIGHT)
        # The MuJoCo families are HalfCheetah's: its "track" camera follows the body.
        kwargs["camera_name"] = "track"
    env = gymnasium.make(env_id, **kwargs)
    act = _actor(agent, flow, stage.params, sample, seed)
    try:
        obs, _ = env.reset(seed=seed, options={"task": dict(task)})
        frames, positions, total, done = [], [np.asarray(obs, dtype=np.float64)], 0.0, False
        if film:
            frames.append(env.render())
        while not done:
            obs, reward, terminated, truncated, _ = env.step(act(obs))
            total += float(reward)
            done = terminated or truncated
            positions.append(np.asarray(obs, dtype=np.float64))
            if film:
                frames.append(_label(env.render(), _caption(stage, total, task)))
    finally:
        env.close()
    if film:
        frames[0] = _label(frames[0], _caption(stage, 0.0, task))
        stage.frames = frames + [frames[-1]] * _HOLD_FRAMES
    stage.positions = np.stack(positions)
    stage.film_return = total


def _caption(stage: Stage, total: float, task: Mapping[str, Any]) -> str:
    steps = _steps_text(stage.step)
    task_text = ", ".join(f"{k} {_fmt(v)}" for k, v in task.items())
    return f"after {steps}  |  {task_text}  |  return {total:.1f}"


def _fmt(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "(" + ", ".join(f"{v:.2f}" for v in value) + ")"
    return f"{value:g}"


def _label(frame: np.ndarray, text: str) -> np.ndarray:
    """``frame`` with ``text`` on a dark band at the top."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.fromarray(frame)
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, image.width, 24), fill=(20, 20, 20))
    draw.text((8, 4), text, fill=(255, 255, 255), font=ImageFont.load_default(size=14))
    return np.asarray(image)


def navigation_frames(stages: Sequence[Stage], task: Mapping[str, Any]) -> list[np.ndarray]:
    """Animate each stage's trajectory towards the goal; earlier stages stay drawn, faded."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(WIDTH / 100, WIDTH / 100), dpi=100)
    # The goal square, widened when a trajectory leaves it (an untrained policy may).
    lim = max(0.6, max(float(np.abs(stage.positions).max()) for stage in stages) + 0.05)
    ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal")
    ax.grid(alpha=0.3)
    goal = np.asarray(task["goal"])
    ax.plot(*goal, "r*", markersize=14, label="goal")
    ax.plot(0, 0, "ks", markersize=5)
    colors = plt.get_cmap("viridis")(np.linspace(0.1, 0.9, len(stages)))
    frames = []
    caption = ax.text(0.5, 1.02, "", transform=ax.transAxes, ha="center", animated=True)
    for stage, color in zip(stages, colors, strict=True):
        path = stage.positions
        (line,) = ax.plot([], [], color=color, label=_steps_text(stage.step), animated=True)
        (point,) = ax.plot([], [], "o", color=color, animated=True)
        ax.legend(loc="lower right", fontsize=7)
        # Blitting: draw the static parts once per stage, then only the moving artists.
        fig.canvas.draw()
        background = fig.canvas.copy_from_bbox(fig.bbox)
        rewards = -np.linalg.norm(path[1:] - goal, axis=1)
        for t in range(len(path) + _HOLD_FRAMES):
            t = min(t, len(path) - 1)
            line.set_data(path[: t + 1, 0], path[: t + 1, 1])
            point.set_data(path[t : t + 1, 0], path[t : t + 1, 1])
            caption.set_text(f"after {_steps_text(stage.step)}: return {rewards[:t].sum():.2f}")
            fig.canvas.restore_region(background)
            for artist in (line, point, caption):
                ax.draw_artist(artist)
            frames.append(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy())
        line.set(alpha=0.35, animated=False)  # later stages are drawn over a faded copy
        point.remove()
    plt.close(fig)
    return frames


def _steps_text(step: int) -> str:
    return f"{step} adaptation step{'s' if step != 1 else ''}"


def write_video(path: Path, frames: Sequence[np.ndarray], fps: int) -> None:
    """Encode ``frames`` as MP4 or GIF (by suffix) and write the file atomically."""
    import imageio.v3 as iio

    suffix = path.suffix.lower()
    stacked = np.stack(frames)
    if suffix == ".gif":
        data = iio.imwrite("<bytes>", stacked, extension=".gif", duration=1000 / fps, loop=0)
    else:
        data = iio.imwrite("<bytes>", stacked, extension=".mp4", fps=fps)
    write_atomic(path, data)


def render_run(
    agent: Any,
    env_id: str,
    task: Mapping[str, Any],
    steps: Sequence[int],
    lrs: Sequence[float],
    episodes: int,
    out: Path,
    flow: str | None = None,
    sample: bool = False,
    seed: int = 0,
    horizon: int | None = None,
) -> list[Stage]:
    """Adapt ``agent`` to ``task`` and write the video of every stage in ``steps`` to ``out``.

    Args:
        agent: a trained agent (see :func:`omnirl.evaluation.load_run`).
        env_id: the family's Gymnasium id.
        task: the task (validated by the caller).
        steps: adaptation step counts to film, e.g. ``[0, 1, 4]``.
        lrs: one learning rate per adaptation step, ``max(steps)`` of them.
        episodes: K episodes per adaptation step.
        out: an ``.mp4`` or ``.gif`` path.
        flow: the flow to adapt (default: the agent's).
        sample: film sampled actions instead of the policy's mean.
        seed: seeds the adaptation rollouts and the filmed episodes.
        horizon: steps per episode (default: the family's).

    Returns:
        The stages, with their returns.
    """
    film = needs_gl(env_id)
    stages = adapt(agent, env_id, task, steps, lrs, episodes, flow, seed, horizon)
    flow = agent.eval_flow if flow is None else flow
    for stage in stages:
        play(agent, env_id, task, stage, flow, sample, seed, film, horizon)
    if film:
        frames = [frame for stage in stages for frame in stage.frames or []]
        fps = int(_metadata(env_id).get("render_fps", 20))  # real time
    else:
        frames = navigation_frames(stages, task)
        fps = 20
    write_video(out, frames, fps)
    return stages
