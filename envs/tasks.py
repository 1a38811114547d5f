"""Task distributions of the omnirl families: sampling, validation and description.

A task is a small JSON-serialisable dict (``{"velocity": 1.25}``). Each family owns one
:class:`TaskSpace`; its single env and its native vector env share it, so both validate and
sample identically. This module needs numpy only, so ``omnirl list`` can describe the families
without loading MuJoCo.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

Task = dict[str, Any]


@dataclass(frozen=True)
class Uniform:
    """A real field (``shape == ()``) or vector field drawn uniformly from ``[low, high]``."""

    low: float
    high: float
    shape: tuple[int, ...] = ()

    def sample(self, n: int, rng: np.random.Generator) -> list[Any]:
        """Draw ``n`` values as Python floats (or lists of floats)."""
        values = rng.uniform(self.low, self.high, size=(n, *self.shape))
        return [v.tolist() if self.shape else float(v) for v in values]

    def validate(self, key: str, value: Any) -> Any:
        """Return ``value`` as floats, or raise ``ValueError`` naming ``key`` and the range."""
        allowed = f"allowed: {self.describe()}"
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(
                f"task field {key!r} must be numeric, got {value!r} ({allowed})"
            ) from None
        if isinstance(value, (bool, np.bool_)) or arr.shape != self.shape:
            raise ValueError(
                f"task field {key!r} has the wrong type or shape: {value!r} ({allowed})"
            )
        if not np.all(np.isfinite(arr)) or np.any(arr < self.low) or np.any(arr > self.high):
            raise ValueError(f"task field {key!r} = {value!r} is out of range ({allowed})")
        return arr.tolist() if self.shape else float(arr)

    def describe(self) -> str:
        """Human-readable distribution, e.g. ``U[0, 2]`` or ``U[-0.5, 0.5]^2``."""
        power = "" if not self.shape else "^" + "x".join(map(str, self.shape))
        return f"U[{self.low:g}, {self.high:g}]{power}"


@dataclass(frozen=True)
class Choice:
    """A field drawn uniformly from a finite set of numbers."""

    values: tuple[float, ...]

    def sample(self, n: int, rng: np.random.Generator) -> list[Any]:
        """Draw ``n`` values uniformly from ``values``."""
        return [self.values[i] for i in rng.integers(len(self.values), size=n)]

    def validate(self, key: str, value: Any) -> Any:
        """Return ``value`` if it is one of the choices, else raise ``ValueError``."""
        numeric = isinstance(value, (int, float, np.integer, np.floating))
        if numeric and not isinstance(value, (bool, np.bool_)):
            for allowed in self.values:
                if value == allowed:
                    return allowed
        raise ValueError(
            f"task field {key!r} = {value!r} is not allowed (allowed: {self.describe()})"
        )

    def describe(self) -> str:
        """Human-readable set, e.g. ``{-1, 1}``."""
        return "{" + ", ".join(f"{v:g}" for v in self.values) + "}"


@dataclass(frozen=True)
class TaskSpace:
    """The task distribution of one family: named fields, each :class:`Uniform` or :class:`Choice`.

    Attributes:
        fields: field name -> distribution.
        summary: one line saying what a task changes (shown by ``omnirl list``).
    """

    fields: Mapping[str, Uniform | Choice]
    summary: str

    def sample(self, n: int, rng: np.random.Generator) -> list[Task]:
        """Draw ``n`` tasks; the generator is explicit so sampling is reproducible."""
        if n < 0:
            raise ValueError(f"number of tasks must be >= 0, got {n}")
        columns = {key: dist.sample(n, rng) for key, dist in self.fields.items()}
        return [{key: columns[key][i] for key in self.fields} for i in range(n)]

    def validate(self, task: Any) -> Task:
        """Check one task and return a normalised copy (Python floats).

        Raises:
            ValueError: not a dict, a missing or unknown key, a wrong type or an out-of-range value;
                the message names the field and what is allowed.
        """
        if not isinstance(task, Mapping):
            raise ValueError(f"a task must be a dict like {self.example()}, got {task!r}")
        unknown = sorted(set(task) - set(self.fields))
        if unknown:
            raise ValueError(
                f"unknown task field(s) {unknown}; this family takes {self.describe()}"
            )
        missing = [key for key in self.fields if key not in task]
        if missing:
            raise ValueError(
                f"task is missing field {missing[0]!r}; this family takes {self.describe()}"
            )
        return {key: dist.validate(key, task[key]) for key, dist in self.fields.items()}

    def validate_many(self, tasks: Any, n: int) -> list[Task]:
        """Validate one task per sub-env: a sequence of ``n`` tasks, or one task for all."""
        if isinstance(tasks, Mapping):
            return [self.validate(tasks)] * n
        if not isinstance(tasks, Sequence) or isinstance(tasks, str) or len(tasks) != n:
            raise ValueError(f"expected one task per sub-env ({n}), got {tasks!r:.200}")
        # Collectors pass each task object once per episode: validate each object once.
        validated: dict[int, Task] = {}
        for task in tasks:
            if id(task) not in validated:
                validated[id(task)] = self.validate(task)
        return [validated[id(task)] for task in tasks]

    @property
    def vector_size(self) -> int:
        """Length of a task's float vector (:meth:`to_vectors`): one number per scalar field."""
        return sum(_width(dist) for dist in self.fields.values())

    def vector_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Lowest and highest value of every entry of a task vector (for observation spaces)."""
        low = [np.full(_width(d), _bounds(d)[0]) for d in self.fields.values()]
        high = [np.full(_width(d), _bounds(d)[1]) for d in self.fields.values()]
        return np.concatenate(low), np.concatenate(high)

    def to_vectors(self, tasks: Sequence[Task]) -> np.ndarray:
        """The tasks as a ``(n, vector_size)`` float64 array, fields in declaration order.

        E.g. ``{"goal": [0.1, -0.2]}`` -> ``[0.1, -0.2]``, ``{"velocity": 1.5}`` -> ``[1.5]``.
        The oracle appends these numbers to its observations, in training and evaluation alike.
        """
        columns = [
            np.asarray([task[key] for task in tasks], dtype=np.float64).reshape(len(tasks), -1)
            if tasks
            else np.zeros((0, _width(dist)))
            for key, dist in self.fields.items()
        ]
        return np.concatenate(columns, axis=1)

    def to_vector(self, task: Task) -> np.ndarray:
        """One task as a ``(vector_size,)`` float64 array (see :meth:`to_vectors`)."""
        return self.to_vectors([task])[0]

    def describe(self) -> str:
        """E.g. ``velocity ~ U[0, 2]``."""
        return ", ".join(f"{key} ~ {dist.describe()}" for key, dist in self.fields.items())

    def example(self) -> Task:
        """A valid task (the middle of every range, the first choice)."""
        example: Task = {}
        for key, dist in self.fields.items():
            if isinstance(dist, Choice):
                example[key] = dist.values[0]
            else:
                mid = (dist.low + dist.high) / 2
                example[key] = [mid] * math.prod(dist.shape) if dist.shape else mid
        return example


def _width(dist: Uniform | Choice) -> int:
    """How many numbers a field contributes to a task vector."""
    return math.prod(dist.shape) if isinstance(dist, Uniform) else 1


def _bounds(dist: Uniform | Choice) -> tuple[float, float]:
    """The smallest and largest value a field can take."""
    if isinstance(dist, Uniform):
        return dist.low, dist.high
    return min(dist.values), max(dist.values)


NAVIGATION_TASKS = TaskSpace(
    fields={"goal": Uniform(-0.5, 0.5, shape=(2,))},
    summary="reach a goal position from (0, 0); reward -||pos - goal||",
)
VELOCITY_TASKS = TaskSpace(
    fields={"velocity": Uniform(0.0, 2.0)},
    summary="run at a goal forward velocity; reward -|v - velocity| - 0.05||ctrl||^2",
)
DIRECTION_TASKS = TaskSpace(
    fields={"direction": Choice((-1.0, 1.0))},
    summary="run forward (+1) or backward (-1); reward direction * v - 0.05||ctrl||^2",
)
