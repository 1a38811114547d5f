"""Sinusoid regression tasks (Finn et al. 2017, section 5.1; Omni-Training, regression): numpy only.

A task is the function ``y = amplitude * sin(x - phase)`` with amplitude ~ U[0.1, 5] and phase
~ U[0, 2 pi]; its inputs are x ~ U[-5, 5]. A learner sees K (x, y) points of a new task and must
recover the whole wave. Tasks are dicts like the RL families' (``{"amplitude": 2.0, "phase":
1.0}``), validated by the same :class:`~omnirl.envs.tasks.TaskSpace`.

Data sets are arrays named by shape, ``B`` tasks by ``N`` points: :func:`make_dataset` draws the
fixed training set (30,000 tasks x 50 points in the paper's setting) or a test set from an
explicit generator, and :func:`sample_batch` draws a :class:`MetaBatch` of support and query
points from a data set: what a sinusoid learner's ``update`` takes. Everything is float32, ready
for torch, but this module never imports it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from omnirl.envs.tasks import Task, TaskSpace, Uniform

X_LOW, X_HIGH = -5.0, 5.0
SINUSOID_TASKS = TaskSpace(
    fields={"amplitude": Uniform(0.1, 5.0), "phase": Uniform(0.0, 2 * math.pi)},
    summary="regress y = amplitude * sin(x - phase) from K points, x ~ U[-5, 5]",
)


def sine(amplitude_B: np.ndarray, phase_B: np.ndarray, x_BN: np.ndarray) -> np.ndarray:
    """``y_BN = amplitude_b * sin(x_bn - phase_b)`` for every task b and point n."""
    return amplitude_B[:, None] * np.sin(x_BN - phase_B[:, None])


@dataclass(frozen=True)
class SinusoidData:
    """Tasks and their points: ``amplitude_B``, ``phase_B`` and ``x_BN``, ``y_BN`` (float32)."""

    amplitude_B: np.ndarray
    phase_B: np.ndarray
    x_BN: np.ndarray
    y_BN: np.ndarray

    @property
    def num_tasks(self) -> int:
        """B."""
        return self.x_BN.shape[0]

    @property
    def num_points(self) -> int:
        """N, points per task."""
        return self.x_BN.shape[1]

    def tasks(self) -> list[Task]:
        """The tasks as dicts (JSON-serialisable)."""
        return [
            {"amplitude": float(a), "phase": float(p)}
            for a, p in zip(self.amplitude_B, self.phase_B, strict=True)
        ]


def task_arrays(tasks: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Validate task dicts and return their ``amplitude_B`` and ``phase_B`` (float64).

    Raises:
        ValueError: a task that is not a dict with ``amplitude`` in [0.1, 5] and ``phase`` in
            [0, 2 pi]; the message names the field and the allowed range.
    """
    checked = [SINUSOID_TASKS.validate(task) for task in tasks]
    amplitude_B = np.array([t["amplitude"] for t in checked], dtype=np.float64)
    phase_B = np.array([t["phase"] for t in checked], dtype=np.float64)
    return amplitude_B, phase_B


def points_for(tasks: Sequence[Any], points: int, rng: np.random.Generator) -> SinusoidData:
    """``points`` inputs x ~ U[-5, 5] per given task, with their exact outputs.

    Raises:
        ValueError: an invalid task (see :func:`task_arrays`) or ``points < 1``.
    """
    amplitude_B, phase_B = task_arrays(tasks)
    return _with_points(amplitude_B, phase_B, points, rng)


def make_dataset(num_tasks: int, points: int, rng: np.random.Generator) -> SinusoidData:
    """``num_tasks`` tasks drawn from the task distribution with ``points`` points each.

    The paper's training set is ``make_dataset(30_000, 50, rng)`` (6 MB, about 20 ms).

    Raises:
        ValueError: ``num_tasks < 1`` or ``points < 1``.
    """
    if num_tasks < 1:
        raise ValueError(f"number of tasks must be >= 1, got {num_tasks}")
    fields = SINUSOID_TASKS.fields
    # Drawn as arrays (30,000 task dicts would cost a second), from the task space's ranges.
    amplitude_B = rng.uniform(fields["amplitude"].low, fields["amplitude"].high, size=num_tasks)
    phase_B = rng.uniform(fields["phase"].low, fields["phase"].high, size=num_tasks)
    return _with_points(amplitude_B, phase_B, points, rng)


def _with_points(
    amplitude_B: np.ndarray, phase_B: np.ndarray, points: int, rng: np.random.Generator
) -> SinusoidData:
    if points < 1:
        raise ValueError(f"points per task must be >= 1, got {points}")
    x_BN = rng.uniform(X_LOW, X_HIGH, size=(len(amplitude_B), points))
    y_BN = sine(amplitude_B, phase_B, x_BN)
    return SinusoidData(*(a.astype(np.float32) for a in (amplitude_B, phase_B, x_BN, y_BN)))


class MetaBatch(NamedTuple):
    """K support and Q query points for each of B tasks (float32 arrays, ``(B, K)``/``(B, Q)``)."""

    x_support_BK: np.ndarray
    y_support_BK: np.ndarray
    x_query_BQ: np.ndarray
    y_query_BQ: np.ndarray


def sample_batch(
    data: SinusoidData, num_tasks: int, shots: int, queries: int, rng: np.random.Generator
) -> MetaBatch:
    """A meta-batch: ``num_tasks`` tasks of ``data`` and disjoint support and query points.

    Tasks are drawn uniformly with replacement; within a task the ``shots + queries`` points
    are distinct (drawn without replacement from its N points), so the query set never shows
    the learner a point it adapted on.

    Returns:
        The meta-batch: ``x_support_BK``, ``y_support_BK``, ``x_query_BQ``, ``y_query_BQ``.

    Raises:
        ValueError: ``shots + queries`` exceeds the points per task, or a count is < 1.
    """
    if num_tasks < 1 or shots < 1 or queries < 1:
        raise ValueError(
            f"tasks, shots and queries must be >= 1, got {num_tasks}, {shots}, {queries}"
        )
    if shots + queries > data.num_points:
        raise ValueError(
            f"shots + queries = {shots + queries} exceeds the {data.num_points} points per task"
        )
    task_B = rng.integers(data.num_tasks, size=num_tasks)
    # A random permutation per task (argsort of uniforms), cut to the points needed.
    order_BM = rng.random((num_tasks, data.num_points)).argsort(axis=1)[:, : shots + queries]
    x_BM = np.take_along_axis(data.x_BN[task_B], order_BM, axis=1)
    y_BM = np.take_along_axis(data.y_BN[task_B], order_BM, axis=1)
    return MetaBatch(x_BM[:, :shots], y_BM[:, :shots], x_BM[:, shots:], y_BM[:, shots:])
