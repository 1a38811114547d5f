"""``omnirl render``: adapt a policy to one task and film an episode after chosen step counts.

The adaptation is the evaluation protocol (:func:`omnirl.evaluation.adaptation_stages`: K
episodes, one policy-gradient step, re-collect, ...) run on a single task. After each requested
step count one more episode is played in a single env and filmed: MuJoCo families through their
offscreen ``rgb_array`` renderer, Navigation2D as a drawing of the trajectory towards the goal.
Stages follow one another in one video, each frame labelled with its step count and return.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from omnirl.options import (
    OptionError,
    RenderOptions,
    check_checkpoint,
    check_flow,
    parse_counts,
    parse_task,
    reject,
)
from omnirl.report import Report
from omnirl.video import check_video_path, choose_gl_backend, label_frame, write_video

# Frame size: multiples of 16, so the MP4 encoder need not resize.
WIDTH, HEIGHT = 480, 320
_HOLD_FRAMES = 10  # repeat each stage's last frame so the end of an episode can be seen


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
        # Every MuJoCo family's model (HalfCheetah, Walker2d, Hopper) has a "track" camera
        # that follows the body.
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
                frames.append(label_frame(env.render(), _caption(stage, total, task)))
    finally:
        env.close()
    if film:
        frames[0] = label_frame(frames[0], _caption(stage, 0.0, task))
        stage.frames = frames + [frames[-1]] * _HOLD_FRAMES
    stage.positions = np.stack(positions)
    stage.film_return = total


def _caption(stage: Stage, total: float, task: Mapping[str, Any]) -> str:
    steps = _steps_text(stage.step)
    # Physics multipliers (one per body, dof or geom) are too many to print: say they are set.
    shown = {k: v for k, v in task.items() if np.size(v) <= 3}
    task_text = ", ".join(f"{k} {_fmt(v)}" for k, v in shown.items())
    if len(shown) < len(task):
        task_text = f"{task_text}, physics domain" if task_text else "physics domain"
    return f"after {steps}  |  {task_text}  |  return {total:.1f}"


def _fmt(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "(" + ", ".join(f"{v:.2f}" for v in value) + ")"
    return f"{value:g}"


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
        agent: a trained agent (see :func:`omnirl.checkpoint.load_run`).
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


def render_report(run: Path, options: RenderOptions) -> Report:
    """``omnirl render`` on an RL run: adapt to one task and film the chosen step counts.

    The task is ``options.task`` (JSON, checked against the family) or a test task drawn with
    ``options.seed``; the video goes to ``options.out`` (default ``render.mp4``).

    Raises:
        OptionError, ConfigError, FileNotFoundError, OSError: bad input (one line).
    """
    from omnirl import registry
    from omnirl.checkpoint import load_run
    from omnirl.evaluation import default_lrs, sample_test_tasks

    reject(options, ("shots",), "RL")
    steps = parse_counts(options.steps or "0,1,4", "--steps", 0, 10)
    out = Path(options.out or "render.mp4")
    check_video_path(out)
    loaded = load_run(run, check_checkpoint(options.checkpoint))
    cfg, agent = loaded.cfg, loaded.learner
    family = registry.get_family(cfg.family)
    if options.task is None:
        task = sample_test_tasks(family, 1, options.seed)[0]
    else:
        task = parse_task(options.task, family.tasks, family.name)
    if not agent.adapts:
        raise OptionError(
            f"{run} is a {cfg.agent} run, which does not adapt; render a meta-learned run"
        )
    check_flow(agent, options.flow, run)
    notes = [loaded.note] if loaded.note else []
    if needs_gl(family.env_id):
        notes.append(f"MuJoCo offscreen rendering with MUJOCO_GL={choose_gl_backend()}")
    stages = render_run(
        agent,
        family.env_id,
        task,
        steps,
        default_lrs(cfg.inner_lr, steps[-1]),
        options.episodes or cfg.episodes_per_task,
        out,
        flow=options.flow,
        sample=options.sample,
        seed=options.seed,
        horizon=options.horizon or cfg.horizon,
    )
    return Report(
        f"{cfg.agent} on {family.name}, task {json.dumps(task)}",
        ["adaptation steps", "filmed episode return", "mean return of adaptation episodes"],
        [[str(s.step), f"{s.film_return:.1f}", f"{s.adaptation_return:.1f}"] for s in stages],
        notes=notes,
        payload={"task": task, "stages": [s.step for s in stages]},
        written=[out],
    )
