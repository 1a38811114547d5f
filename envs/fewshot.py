"""Few-shot image data: class folders, class splits, episodes and training draws.

numpy and Pillow only (no torch). A dataset is either a folder laid out as
``root/<class>/*.png|jpg`` (mini-ImageNet and CUB laid out that way load unchanged; a folder
with ``train/``, ``val/`` and ``test/`` sub-folders of class folders keeps that split) or the
name of an embedded dataset, ``glyphs`` or ``shapes``, generated, seeded, on the fly
(:mod:`omnirl.envs.fewshot_embedded`).

Classes are split into train/val/test classes (64/16/20 of every 100, mini-ImageNet's
proportions); an episode draws its classes from one split only, so train and test classes never
meet. :func:`draw_training` draws what a few-shot learner's ``update`` takes, a
:class:`TrainingDraw` of uint8 arrays: the learner makes the tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from omnirl.config import ConfigError
from omnirl.envs.fewshot_embedded import EMBEDDED, Embedded

SPLITS = ("train", "val", "test")
# Class proportions of the splits (mini-ImageNet: 64 / 16 / 20 of 100 classes).
SPLIT_FRACTIONS = (0.64, 0.16, 0.20)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# Seeds the split of a flat class folder: the same folder always gives the same split.
SPLIT_SEED = 0


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


# ------------------------------------------------------------------------- embedded splits
def _split_ranges(num_classes: int) -> dict[str, range]:
    """Contiguous class-index ranges of the splits in :data:`SPLIT_FRACTIONS` proportions."""
    ends = np.round(np.cumsum(SPLIT_FRACTIONS) * num_classes).astype(int)
    starts = np.concatenate([[0], ends[:-1]])
    return {s: range(a, b) for s, a, b in zip(SPLITS, starts, ends, strict=True)}


def _class_name(dataset: Embedded, index: int) -> str:
    return f"{dataset.name}-{index:03d}"


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
        names.append(_class_name(dataset, index))
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


# -------------------------------------------------------------------------------- loading
def _split_source(data: str, split: str) -> list[Path] | Embedded:
    """The class folders of ``split`` of the folder ``data``, else the embedded dataset ``data``.

    Raises:
        DataError: no such folder or embedded dataset, or a folder without ``split`` classes.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    root = Path(data).expanduser()
    if root.is_dir():
        folders = split_folders(root)[split]
        if not folders:
            raise DataError(f"{root} has no {split} classes (no {root / split} class folders)")
        return folders
    if data in EMBEDDED:
        return EMBEDDED[data]
    raise DataError(
        f"data {data!r} is neither a folder nor an embedded dataset "
        f"({', '.join(EMBEDDED)}); a folder holds root/<class>/*.png|jpg"
    )


def load_split(data: str, split: str, image_size: int) -> ImageSet:
    """The images of one class split of ``data`` (an existing folder, else an embedded name).

    Raises:
        DataError: no such folder or embedded dataset, no images, an unreadable image.
    """
    source = _split_source(data, split)
    if isinstance(source, Embedded):
        return generate(source, split, image_size)
    return read_folders(source, image_size, f"{Path(data).expanduser()} {split} classes")


def class_names(data: str, split: str) -> tuple[str, ...]:
    """The class names of one split of ``data``, as :func:`load_split` names them (no image read).

    Raises:
        DataError: as :func:`load_split`.
    """
    source = _split_source(data, split)
    if isinstance(source, Embedded):
        return tuple(_class_name(source, i) for i in _split_ranges(source.num_classes)[split])
    return tuple(folder.name for folder in source)


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


# ---------------------------------------------------------------------------------- draws
class ImageBatch(NamedTuple):
    """A pre-training batch: uint8 images of the training classes and their labels.

    Attributes:
        images_NCHW: uint8 RGB images.
        labels_N: class index of every image (into the training classes).
    """

    images_NCHW: np.ndarray
    labels_N: np.ndarray


class EpisodeImages(NamedTuple):
    """A training episode's uint8 images, class-major: the W*K support images, then the W*Q queries.

    Attributes:
        images_NCHW: (W*K + W*Q, C, H, W) uint8 RGB images.
        way: W.
        shot: K.
        queries: Q.
    """

    images_NCHW: np.ndarray
    way: int
    shot: int
    queries: int


class TrainingDraw(NamedTuple):
    """What a few-shot learner's ``update`` takes: a batch, an episode, or both.

    Attributes:
        batch: the pre-training batch (``None`` for a learner that uses none).
        episode: the training episode (``None`` for a learner that uses none).
    """

    batch: ImageBatch | None
    episode: EpisodeImages | None

    def num_images(self) -> int:
        """Images in the draw (the trainer's ``time/sps`` counts them)."""
        return sum(len(part.images_NCHW) for part in self if part is not None)


def draw_training(
    images: ImageSet,
    rng: np.random.Generator,
    batch_size: int | None,
    sampler: EpisodeSampler | None,
) -> TrainingDraw:
    """One training draw from ``rng``: ``batch_size`` images (with replacement), then an episode.

    Args:
        images: the training classes.
        rng: the run's generator (the batch is drawn first, then the episode).
        batch_size: images of the pre-training batch (``None``: no batch).
        sampler: draws the training episode (``None``: no episode).
    """
    batch = episode = None
    if batch_size is not None:
        pick = rng.integers(0, len(images.labels_N), batch_size)
        batch = ImageBatch(images.images_NCHW[pick], images.labels_N[pick])
    if sampler is not None:
        drawn = sampler.sample(rng)
        pick = np.concatenate([drawn.support_WK.ravel(), drawn.query_WQ.ravel()])
        episode = EpisodeImages(
            images.images_NCHW[pick], sampler.way, sampler.shot, sampler.queries
        )
    return TrainingDraw(batch, episode)
