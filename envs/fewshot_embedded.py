"""The embedded few-shot datasets, generated, seeded, on the fly (numpy and Pillow only).

- ``glyphs``: 100 classes of white pen-stroke glyphs on black (2-4 quadratic Bezier strokes
  per class; every image redraws them with jittered control points, a random rotation, scale,
  shear and shift, stroke width and pixel noise), Omniglot-like.
- ``shapes``: 100 classes of 2-3 filled polygons (every image jitters position, size and
  angle, and draws new random colours for polygons and background, so colour never tells the
  class): a different domain, for cross-domain evaluation (train on ``glyphs``, test on
  ``shapes``).

A dataset is a class generator ``make_class(rng)`` and an image drawer ``draw(cls, rng, size)``;
:func:`omnirl.envs.fewshot.generate` turns one into the images of a class split.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

SUPERSAMPLE = 4  # generated images are drawn 4x larger and box-filtered down (anti-aliasing)


def _affine(rng: np.random.Generator, degrees: float, scale: tuple[float, float], shear: float):
    """A random 2x2 matrix: rotation by U(-degrees, degrees), scale, shear."""
    angle = np.deg2rad(rng.uniform(-degrees, degrees))
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return rng.uniform(*scale) * rotation @ np.array([[1.0, rng.uniform(-shear, shear)], [0, 1]])


def _finish(image: object, size: int, rng: np.random.Generator) -> np.ndarray:
    """Box-filter a supersampled PIL image down to ``size`` and add pixel noise; HWC uint8."""
    from PIL import Image

    pixels = np.asarray(image.resize((size, size), Image.BOX), np.float32)  # type: ignore[attr-defined]
    pixels = pixels + rng.normal(0.0, 20.0, pixels.shape)
    return np.clip(pixels, 0, 255).astype(np.uint8)


_BEZIER_T = np.linspace(0.0, 1.0, 16)[:, None]


def glyph_class(rng: np.random.Generator) -> np.ndarray:
    """A glyph class: 2-4 strokes, each three Bezier control points in the unit square."""
    return rng.uniform(0.12, 0.88, size=(int(rng.integers(2, 5)), 3, 2))


def draw_glyph(strokes: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """One image (size, size, 3) of the glyph class ``strokes``, randomly deformed.

    Each stroke's control points are jittered and each stroke is dropped with probability
    0.15 (one always stays); one random distractor stroke is added with probability 0.5; the
    whole glyph is rotated, scaled, sheared and shifted. This makes the 5-way task hard enough
    that the learners differ (a clean redraw is solved near 100% by every learner).
    """
    from PIL import Image, ImageDraw

    canvas = size * SUPERSAMPLE
    image = Image.new("L", (canvas, canvas), 0)
    draw = ImageDraw.Draw(image)
    matrix, shift = _affine(rng, 30.0, (0.75, 1.1), 0.3), rng.uniform(-0.1, 0.1, 2)
    width = max(1, round(rng.uniform(0.05, 0.1) * canvas))
    keep = rng.random(len(strokes)) >= 0.15
    keep[rng.integers(len(strokes))] = True
    shown = [c + rng.normal(0.0, 0.07, c.shape) for c in strokes[keep]]
    if rng.random() < 0.5:
        shown.append(rng.uniform(0.12, 0.88, size=(3, 2)))
    t = _BEZIER_T
    for c in shown:
        points = (1 - t) ** 2 * c[0] + 2 * t * (1 - t) * c[1] + t**2 * c[2]
        points = (points - 0.5) @ matrix.T + 0.5 + shift
        draw.line([tuple(p) for p in points * canvas], fill=255, width=width, joint="curve")
    gray = _finish(image, size, rng)
    return np.repeat(gray[:, :, None], 3, axis=2)


def shape_class(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A shape class: 2-3 polygons (3-6 corners), each with a centre, radius and angle."""
    n = int(rng.integers(2, 4))
    return {
        "corners": rng.integers(3, 7, n),
        "center": rng.uniform(0.25, 0.75, (n, 2)),
        "radius": rng.uniform(0.12, 0.25, n),
        "angle": rng.uniform(0.0, 2 * np.pi, n),
    }


def _rgb(color: np.ndarray) -> tuple[int, int, int]:
    r, g, b = (int(v) for v in np.clip(color, 0, 1) * 255)
    return r, g, b


def draw_shape(cls: dict[str, np.ndarray], rng: np.random.Generator, size: int) -> np.ndarray:
    """One image (size, size, 3) of the shape class ``cls``, randomly perturbed.

    Colours are drawn per image (a dark background, bright polygons), so a class is its
    geometry only: colour is a nuisance, not a shortcut.
    """
    from PIL import Image, ImageDraw

    canvas = size * SUPERSAMPLE
    image = Image.new("RGB", (canvas, canvas), _rgb(rng.uniform(0.0, 0.35, 3)))
    draw = ImageDraw.Draw(image)
    for i in rng.permutation(len(cls["corners"])):  # random overlap order
        cx, cy = (cls["center"][i] + rng.normal(0.0, 0.05, 2)) * canvas
        radius = cls["radius"][i] * rng.uniform(0.8, 1.2) * canvas
        angles = cls["angle"][i] + rng.normal(0.0, 0.3)
        angles = angles + 2 * np.pi * np.arange(cls["corners"][i]) / cls["corners"][i]
        corners = list(zip(cx + radius * np.cos(angles), cy + radius * np.sin(angles), strict=True))
        draw.polygon(corners, fill=_rgb(rng.uniform(0.35, 1.0, 3)))
    return _finish(image, size, rng)


@dataclass(frozen=True)
class Embedded:
    """An embedded, generated dataset: ``make_class(rng)`` then ``draw(cls, rng, size)``."""

    name: str
    seed: int
    num_classes: int
    images_per_class: int
    make_class: Callable[[np.random.Generator], object]
    draw: Callable[[object, np.random.Generator, int], np.ndarray]
    summary: str


EMBEDDED = {
    "glyphs": Embedded(
        "glyphs", 1, 100, 100, glyph_class, draw_glyph, "pen-stroke glyphs, white on black"
    ),
    "shapes": Embedded(
        "shapes", 2, 100, 100, shape_class, draw_shape, "filled polygons, random colours"
    ),
}
