"""``omnirl render`` for few-shot runs: one test episode as a picture of what the learner saw.

One N-way K-shot episode is drawn from the test classes of the run's data, exactly as the first
episode :func:`omnirl.fewshot.evaluate.evaluate_report` draws with the same seed. The picture
has a row per class: its K support images, a gap, then its queries framed green where the
learner (as it is tested: prototypes or a fine-tuned linear layer) labels them right and red
where it does not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from omnirl.checkpoint import load_runs
from omnirl.fewshot.config import FAMILY, data_module
from omnirl.fewshot.evaluate import MAX_SHOT, sample_test_episodes
from omnirl.options import OptionError, RenderOptions, parse_counts, reject
from omnirl.report import Report, check_writable, figure_bytes, pyplot

DEFAULT_SHOT = "5"
PICTURE_SUFFIXES = (".png", ".pdf", ".svg")
# Options of `omnirl render` that only RL runs use.
NOT_FEWSHOT = ("task", "steps", "episodes", "sample", "horizon")
PAD = 2  # frame width in pixels around every image
FRAMES = {  # RGB frame colours
    "support": (255, 255, 255),
    "right": (40, 170, 60),
    "wrong": (220, 40, 40),
    "gap": (255, 255, 255),
}


def _framed(image_CHW: np.ndarray, colour: str) -> np.ndarray:
    """The image (H, W, 3) inside a :data:`PAD`-pixel frame of ``colour``."""
    height, width = image_CHW.shape[1:]
    cell = np.empty((height + 2 * PAD, width + 2 * PAD, 3), np.uint8)
    cell[:] = FRAMES[colour]
    cell[PAD:-PAD, PAD:-PAD] = image_CHW.transpose(1, 2, 0)
    return cell


def episode_mosaic(images_NCHW: np.ndarray, episode: Any, right_WQ: np.ndarray) -> np.ndarray:
    """One uint8 RGB picture: per class row, the support images, a gap, the framed queries."""
    rows = []
    for w in range(len(episode.classes_W)):
        support = [_framed(images_NCHW[i], "support") for i in episode.support_WK[w]]
        gap = np.full_like(support[0], 255)
        queries = [
            _framed(images_NCHW[i], "right" if ok else "wrong")
            for i, ok in zip(episode.query_WQ[w], right_WQ[w], strict=True)
        ]
        rows.append(np.concatenate([*support, gap, *queries], axis=1))
    return np.concatenate(rows, axis=0)


def _figure_bytes(
    mosaic: np.ndarray, names: list[str], shot: int, title: str, suffix: str
) -> bytes:
    """The mosaic with the class names down its left side, in the format of ``suffix``."""
    plt = pyplot()
    height, width = mosaic.shape[:2]
    cell = height // len(names)
    fig, ax = plt.subplots(figsize=(2 + width / 40, 0.8 + height / 40), dpi=100)
    ax.imshow(mosaic, interpolation="nearest")
    row = height / len(names)
    ax.set_yticks([row * (w + 0.5) for w in range(len(names))], names, fontsize=7)
    ax.set_xticks(
        [cell * shot / 2, cell * (shot + 1) + (width - cell * (shot + 1)) / 2],
        [f"support ({shot} per class)", "queries (green: right, red: wrong)"],
        fontsize=8,
    )
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return figure_bytes(fig, suffix)


def _shot(text: str | None) -> int:
    """The one ``--shots`` value of a rendered episode (default 5)."""
    shots = parse_counts(text or DEFAULT_SHOT, "--shots", 1, MAX_SHOT)
    if len(shots) != 1:
        raise OptionError(f"--shots takes one value when rendering a {FAMILY} run, got {text!r}")
    return shots[0]


def _out(out: Path | None) -> Path:
    """The picture's path (default ``render.png``), checked to be writable as a picture."""
    path = Path(out or "render.png")
    if path.suffix.lower() not in PICTURE_SUFFIXES:
        allowed = ", ".join(PICTURE_SUFFIXES)
        raise OptionError(f"--out must end in {allowed} for a {FAMILY} run, got {str(path)!r}")
    check_writable(path.parent)
    return path


def classify_episode(learner: Any, images: Any, episode: Any, flow: str, seed: int) -> np.ndarray:
    """Whether each query (W, Q) of ``episode`` is labelled right, as the learner is tested."""
    way, shot = episode.support_WK.shape
    queries = episode.query_WQ.shape[1]
    pick = np.concatenate([episode.support_WK.ravel(), episode.query_WQ.ravel()])
    features = learner.embed(images.images_NCHW[pick], flow)
    support = features[: way * shot].reshape(1, way, shot, -1)
    query = features[way * shot :].reshape(1, way, queries, -1)
    generator = torch.Generator().manual_seed(seed + shot)
    predicted_WQ = learner.classify(support, query, flow, generator)[0].reshape(way, queries)
    return predicted_WQ.numpy() == np.arange(way)[:, None]


def render_report(run: Path, options: RenderOptions) -> Report:
    """``omnirl render`` on a few-shot run: one test episode, queries marked right or wrong.

    The episode is ``--shots`` K (one value, default 5) of the run's test way and queries,
    from the test classes of the run's data, drawn with ``--seed``; the picture goes to
    ``--out`` (default ``render.png``; ``.pdf`` and ``.svg`` work too).

    Raises:
        OptionError: an option that does not apply (``--task``, ``--steps``, ``--episodes``,
            ``--sample``, ``--horizon``) or a bad value.
        ConfigError: a run's config, or data that cannot make the episode (one line).
        FileNotFoundError: a missing run or checkpoint.
        OSError: an output folder that cannot be written.
    """
    reject(options, NOT_FEWSHOT, FAMILY)
    shot, out = _shot(options.shots), _out(options.out)
    [loaded] = load_runs([run], options.checkpoint, options.flow, kind="fewshot")
    cfg, learner = loaded.cfg, loaded.learner
    flow = learner.eval_flow if options.flow is None else options.flow
    data = data_module()
    images = data.load_split(cfg.data, "test", cfg.image_size)
    [episode] = sample_test_episodes(images, cfg.test_way, shot, cfg.test_queries, 1, options.seed)
    right_WQ = classify_episode(learner, images, episode, flow, options.seed)
    names = [images.classes[c] for c in episode.classes_W]
    how = f"{flow} flow, {learner.classifier(flow)}"
    title = (
        f"{cfg.agent} ({how}): {cfg.test_way}-way {shot}-shot test episode of "
        f"{data.data_name(cfg.data)}, {right_WQ.mean():.0%} right"
    )
    mosaic = episode_mosaic(images.images_NCHW, episode, right_WQ)
    files = {out: _figure_bytes(mosaic, names, shot, title, out.suffix.lower())}
    rows = [[name, f"{int(ok.sum())}/{ok.size}"] for name, ok in zip(names, right_WQ, strict=True)]
    payload = {
        "run": str(run),
        "flow": flow,
        "classifier": learner.classifier(flow),
        "shot": shot,
        "seed": options.seed,
        "classes": names,
        "right": right_WQ.tolist(),
    }
    notes = [loaded.note] if loaded.note else []
    return Report(title, ["class", "queries right"], rows, files, notes, payload)
