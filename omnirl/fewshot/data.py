"""Few-shot image data: class folders, two embedded datasets, class splits and episodes.

numpy and Pillow only (no torch). A dataset is either a folder laid out as
``root/<class>/*.png|jpg`` (mini-ImageNet and CUB laid out that way load unchanged; a folder
with ``train/``, ``val/`` and ``test/`` sub-folders of class folders keeps that split) or the
name of an embedded dataset that is generated, seeded, on the fly:

- ``glyphs``: 100 classes of white pen-stroke glyphs on black (2-4 quadratic Bezier strokes
  per class; every image redraws them with jittered control points, a random rotation, scale,
  shear and shift, stroke width and pixel noise), Omniglot-like.
- ``shapes``: 100 classes of 2-3 filled polygons (every image jitters position, size and
  angle, and draws new random colours for polygons and background, so colour never tells the
  class): a different domain, for cross-domain evaluation (train on ``glyphs``, test on
  ``shapes``).

Classes are split into train/val/test classes (64/16/20 of every 100, mini-ImageNet's
proportions); an episode draws its classes from one split only, so train and test classes never
meet.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from omnirl.config import ConfigError

SPLITS = ("train", "val", "test")
# Class proportions of the splits (mini-ImageNet: 64 / 16 / 20 of 100 classes).
SPLIT_FRACTIONS = (0.64, 0.16, 0.20)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# Seeds the split of a flat class folder: the same folder always gives the same split.
SPLIT_SEED = 0
SUPERSAMPLE = 4  # generated images are drawn 4x larger and box-filtered down (anti-aliasing)


class DataError(ConfigError):
    """Data that cannot be used; the message is one line naming the folder, class and counts.

    A :class:`~omnirl.config.ConfigError`: the config's ``data`` (or ``--data``) names it, and the
    command line prints it as one line.
    """


@dataclass(frozen=True)
class ImageSet:
    """The images of some classes, all in memory.

    Attributes:
        images_NCHW: uint8 images, RGB.
        labels_N: class index of every image (into ``classes``).
        classes: class names.
        where: how to name this set in messages (``"glyphs test classes"``, a folder).
    """

    images_NCHW: np.ndarray
    labels_N: np.ndarray
    classes: tuple[str, ...]
    where: str

    def counts(self) -> np.ndarray:
        """Images per class."""
        return np.bincount(self.labels_N, minlength=len(self.classes))


# ------------------------------------------------------------------------------ embedded
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


def _split_ranges(num_classes: int) -> dict[str, range]:
    """Contiguous class-index ranges of the splits in :data:`SPLIT_FRACTIONS` proportions."""
    ends = np.round(np.cumsum(SPLIT_FRACTIONS) * num_classes).astype(int)
    starts = np.concatenate([[0], ends[:-1]])
    return {s: range(a, b) for s, a, b in zip(SPLITS, starts, ends, strict=True)}


def generate(dataset: Embedded, split: str, image_size: int) -> ImageSet:
    """The images of ``split``'s classes of an embedded dataset.

    Every class is generated from its own seed ``[dataset.seed, class index]``, so a split can
    be made without the others and is the same on every machine. Classes are i.i.d., so the
    split takes contiguous class indices.
    """
    images, labels, names = [], [], []
    for label, index in enumerate(_split_ranges(dataset.num_classes)[split]):
        rng = np.random.default_rng([dataset.seed, index])
        cls = dataset.make_class(rng)
        images += [dataset.draw(cls, rng, image_size) for _ in range(dataset.images_per_class)]
        labels += [label] * dataset.images_per_class
        names.append(f"{dataset.name}-{index:03d}")
    return ImageSet(
        np.stack(images).transpose(0, 3, 1, 2).copy(),
        np.asarray(labels, dtype=np.int64),
        tuple(names),
        f"{dataset.name} {split} classes",
    )


# -------------------------------------------------------------------------------- folders
def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _class_folders(root: Path) -> list[Path]:
    """Sub-folders of ``root`` holding at least one image, sorted by name (hidden ones skipped)."""
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    return [p for p in folders if _images_in(p)]


def split_folders(root: Path) -> dict[str, list[Path]]:
    """The class folders of each split of the data folder ``root``.

    ``root/train``, ``root/val``, ``root/test`` holding class folders: that split as given
    (``val`` may be missing). Otherwise the class folders of ``root`` are shuffled with a fixed
    seed and cut 64/16/20.

    Raises:
        DataError: no class folder with images, or too few classes to split.
    """
    if all((root / s).is_dir() and _class_folders(root / s) for s in ("train", "test")):
        return {s: _class_folders(root / s) if (root / s).is_dir() else [] for s in SPLITS}
    classes = _class_folders(root)
    if not classes:
        raise DataError(
            f"no class folders with {'/'.join(IMAGE_SUFFIXES)} images in {root} "
            "(expected root/<class>/*.png or root/train|val|test/<class>/*.png)"
        )
    if len(classes) < len(SPLITS):
        raise DataError(
            f"{root} has {len(classes)} class folders; a train/val/test class split needs at "
            f"least {len(SPLITS)}"
        )
    order = np.random.default_rng(SPLIT_SEED).permutation(len(classes))
    ranges = _split_ranges(len(classes))
    return {s: [classes[i] for i in order[ranges[s].start : ranges[s].stop]] for s in SPLITS}


def read_image(path: Path, size: int) -> np.ndarray:
    """One image as (size, size, 3) uint8 RGB, resized bilinearly when it is another size.

    Raises:
        DataError: the file is not a readable image.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            if image.size != (size, size):
                image = image.resize((size, size), Image.BILINEAR)
            return np.asarray(image, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"cannot read image {path}: {exc}") from None


def read_folders(
    folders: Sequence[Path],
    image_size: int,
    where: str,
) -> ImageSet:
    """Read every image of the class ``folders`` (class name = folder name).

    Args:
        folders: one folder per class.
        image_size: images are resized to this square size.
        where: the set's name in messages.
    """
    files = [(label, path) for label, f in enumerate(folders) for path in _images_in(f)]
    images = np.empty((len(files), image_size, image_size, 3), np.uint8)
    for i, (_, path) in enumerate(files):
        images[i] = read_image(path, image_size)
    labels = np.array([label for label, _ in files], dtype=np.int64)
    return ImageSet(
        images.transpose(0, 3, 1, 2).copy(), labels, tuple(f.name for f in folders), where
    )


def load_split(data: str, split: str, image_size: int) -> ImageSet:
    """The images of one class split of ``data`` (an existing folder, else an embedded name).

    Raises:
        DataError: no such folder or embedded dataset, no images, an unreadable image.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    root = Path(data).expanduser()
    if root.is_dir():
        folders = split_folders(root)[split]
        if not folders:
            raise DataError(f"{root} has no {split} classes (no {root / split} class folders)")
        return read_folders(folders, image_size, f"{root} {split} classes")
    if data in EMBEDDED:
        return generate(EMBEDDED[data], split, image_size)
    raise DataError(
        f"data {data!r} is neither a folder nor an embedded dataset "
        f"({', '.join(EMBEDDED)}); a folder holds root/<class>/*.png|jpg"
    )


def data_name(data: str) -> str:
    """A short name for ``data`` in tables: the embedded name or the folder's name."""
    return data if data in EMBEDDED and not Path(data).is_dir() else Path(data).expanduser().name


# ------------------------------------------------------------------------------- episodes
class Episode(NamedTuple):
    """One N-way K-shot episode as indices into an :class:`ImageSet`.

    Attributes:
        support_WK: way x shot image indices; row w holds class ``classes_W[w]``.
        query_WQ: way x queries image indices, disjoint from the support.
        classes_W: the episode's classes (labels in the image set); episode label = row.
    """

    support_WK: np.ndarray
    query_WQ: np.ndarray
    classes_W: np.ndarray


def check_episodes(images: ImageSet, way: int, shot: int, queries: int) -> None:
    """Raise if ``images`` cannot make ``way``-way ``shot``-shot episodes with ``queries``.

    Raises:
        DataError: fewer classes than ``way``, or a class with fewer than ``shot + queries``
            images (the message names the class and the counts).
    """
    if len(images.classes) < way:
        raise DataError(
            f"{images.where}: {len(images.classes)} classes, but {way}-way episodes need at "
            f"least {way}"
        )
    counts, needed = images.counts(), shot + queries
    short = np.flatnonzero(counts < needed)
    if short.size:
        first = short[0]
        more = f" (and {short.size - 1} more classes)" if short.size > 1 else ""
        raise DataError(
            f"{images.where}: class '{images.classes[first]}' has {counts[first]} images, but "
            f"{shot}-shot episodes with {queries} queries per class need at least {needed}{more}"
        )


class EpisodeSampler:
    """Draws N-way K-shot episodes with Q queries per class from one class split.

    Args:
        images: the split's images.
        way: classes per episode (N).
        shot: support images per class (K).
        queries: query images per class (Q).

    Raises:
        DataError: as :func:`check_episodes`.
    """

    def __init__(self, images: ImageSet, way: int, shot: int, queries: int):
        check_episodes(images, way, shot, queries)
        self.way, self.shot, self.queries = way, shot, queries
        self.by_class = [np.flatnonzero(images.labels_N == c) for c in range(len(images.classes))]

    def sample(self, rng: np.random.Generator) -> Episode:
        """One episode: ``way`` distinct classes, ``shot + queries`` distinct images of each."""
        classes = rng.choice(len(self.by_class), self.way, replace=False)
        picks = np.stack(
            [rng.choice(self.by_class[c], self.shot + self.queries, replace=False) for c in classes]
        )
        return Episode(picks[:, : self.shot], picks[:, self.shot :], classes)
