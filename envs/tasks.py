"""Task distributions of the omnirl families: sampling, validation, splits and description.

A task is a small JSON-serialisable dict (``{"velocity": 1.25}``). Each family owns one
:class:`TaskSpace`; its single env and its native vector env share it, so both validate and
sample identically. This module needs numpy only, so ``omnirl list`` can describe the families
without loading MuJoCo.

**Splits.** Every space has the in-distribution splits ``train`` (what training samples),
``test`` (fresh tasks of the same distribution, the default of ``omnirl evaluate``) and ``val``
(the same distribution again, drawn by the caller from its own seed stream), and the
out-of-distribution splits its family declares (:class:`Split`: the fields drawn differently,
e.g. velocities beyond the training range). Validation accepts, element by element, any value
that some split can draw, and its error names every split's range.

**Physics domains.** A MuJoCo task may carry :class:`Multipliers` for the model fields of
:data:`PHYSICS_BASES` (``omnirl.envs.physics`` applies them); a missing one means the unit
multipliers, the model as compiled.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from omnirl.envs.distributions import (
    PHYSICS_BASES,
    BoxShell,
    Choice,
    Field,
    Multipliers,
    Uniform,
    physics_fields,
)

__all__ = ["BoxShell", "Choice", "Field", "Multipliers", "Split", "Task", "TaskSpace", "Uniform"]

Task = dict[str, Any]
IN_DISTRIBUTION = ("train", "test", "val")


@dataclass(frozen=True)
class Split:
    """An out-of-distribution split: the fields it draws differently from training, and why."""

    fields: Mapping[str, Field]
    note: str


@dataclass(frozen=True)
class TaskSpace:
    """The task distribution of one family, with its splits.

    Attributes:
        fields: field name -> distribution of the in-distribution splits (train, test, val).
        summary: one line saying what a task changes (shown by ``omnirl list``).
        ood: the out-of-distribution splits by name; each replaces or adds fields.
    """

    fields: Mapping[str, Field]
    summary: str
    ood: Mapping[str, Split] = field(default_factory=dict)

    @property
    def split_names(self) -> tuple[str, ...]:
        """``train``, ``test``, ``val`` and the out-of-distribution splits."""
        return (*IN_DISTRIBUTION, *self.ood)

    def split_fields(self, split: str) -> dict[str, Field]:
        """The fields of ``split``: the training ones, replaced or extended by an OOD split's.

        Raises:
            ValueError: an unknown split; the message lists the splits.
        """
        if split in IN_DISTRIBUTION:
            return dict(self.fields)
        if split in self.ood:
            return {**self.fields, **self.ood[split].fields}
        raise ValueError(f"unknown split {split!r}; the splits are {', '.join(self.split_names)}")

    def sample(self, n: int, rng: np.random.Generator, split: str = "train") -> list[Task]:
        """Draw ``n`` tasks of ``split``; the generator is explicit so sampling is reproducible."""
        if n < 0:
            raise ValueError(f"number of tasks must be >= 0, got {n}")
        fields = self.split_fields(split)
        columns = {key: dist.sample(n, rng) for key, dist in fields.items()}
        return [{key: columns[key][i] for key in fields} for i in range(n)]

    @functools.cached_property
    def _ranges(self) -> dict[str, list[tuple[list[str], Field]]]:
        """Every field of any split -> its distinct distributions, each with its splits."""
        ranges: dict[str, list[tuple[list[str], Field]]] = {}
        for split in ("train", *self.ood):
            label = "train/test/val" if split == "train" else split
            for key, dist in self.split_fields(split).items():
                groups = ranges.setdefault(key, [])
                same = [labels for labels, other in groups if other == dist]
                if same:
                    same[0].append(label)
                else:
                    groups.append(([label], dist))
        return ranges

    def validate(self, task: Any) -> Task:
        """Check one task and return a normalised copy (Python floats).

        A value is accepted if, element by element, some split can draw it; physics fields may
        be omitted (unit multipliers) or given as one number.

        Raises:
            ValueError: not a dict, a missing or unknown key, a wrong type or a value outside
                every split; the message names the field and every split's range.
        """
        if not isinstance(task, Mapping):
            raise ValueError(f"a task must be a dict like {self.example()}, got {task!r}")
        unknown = sorted(set(task) - set(self._ranges))
        if unknown:
            raise ValueError(
                f"unknown task field(s) {unknown}; this family takes {self.describe()}"
            )
        normalised: Task = {}
        for key, groups in self._ranges.items():
            if key in task:
                normalised[key] = _check_field(key, task[key], groups)
            elif not groups[0][1].optional:
                raise ValueError(
                    f"task is missing field {key!r}; this family takes {self.describe()}"
                )
        return normalised

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
        """Lowest and highest value of every entry of a training task's vector."""
        low = [np.full(_width(d), d.bounds()[0]) for d in self.fields.values()]
        high = [np.full(_width(d), d.bounds()[1]) for d in self.fields.values()]
        return np.concatenate(low), np.concatenate(high)

    def to_vectors(self, tasks: Sequence[Task]) -> np.ndarray:
        """The tasks as a ``(n, vector_size)`` float64 array, training fields in order.

        E.g. ``{"goal": [0.1, -0.2]}`` -> ``[0.1, -0.2]``, ``{"velocity": 1.5}`` -> ``[1.5]``;
        physics multipliers flattened (ones where a validated task omits them). Fields that only
        an out-of-distribution split draws are not in the vector. The oracle appends these
        numbers to its observations, in training and evaluation alike.
        """
        columns = [
            np.asarray([_value(task, key, dist) for task in tasks], dtype=np.float64).reshape(
                len(tasks), -1
            )
            if tasks
            else np.zeros((0, _width(dist)))
            for key, dist in self.fields.items()
        ]
        return np.concatenate(columns, axis=1)

    def to_vector(self, task: Task) -> np.ndarray:
        """One task as a ``(vector_size,)`` float64 array (see :meth:`to_vectors`)."""
        return self.to_vectors([task])[0]

    def describe(self, split: str = "train") -> str:
        """E.g. ``velocity ~ U[0, 2]``; physics fields with one exponent range as one entry."""
        return _describe(self.split_fields(split))

    def describe_splits(self) -> list[tuple[str, str, str]]:
        """``(split, distribution, note)`` for every split, as ``omnirl list FAMILY`` shows."""
        notes = {
            "train": "what training samples",
            "test": "fresh tasks of the training distribution, the default of evaluate",
            "val": "the test distribution from its own seed stream, for tuning",
        }
        notes.update({name: split.note for name, split in self.ood.items()})
        return [(name, self.describe(name), notes[name]) for name in self.split_names]

    def example(self) -> Task:
        """A valid task (the middle of every range, the first choice, unit physics)."""
        return {key: dist.example() for key, dist in self.fields.items()}


def _check_field(key: str, value: Any, groups: list[tuple[list[str], Field]]) -> Any:
    """``value`` normalised, if some split's distribution of ``key`` allows every element."""
    if len(groups) == 1 and groups[0][0] == ["train/test/val"]:
        allowed = f"allowed: {groups[0][1].describe()}"
    else:
        allowed = "allowed: " + "; ".join(
            f"{', '.join(labels)}: {dist.describe()}" for labels, dist in groups
        )
    first = groups[0][1]
    arr = first.parse(key, value, allowed)
    ok = np.zeros(arr.shape, dtype=bool)
    for _, dist in groups:
        ok |= dist.allows(arr)
    if not ok.all():
        raise ValueError(f"task field {key!r} = {value!r:.200} {first.refusal} ({allowed})")
    return first.to_python(arr)


def _describe(fields: Mapping[str, Field]) -> str:
    """The fields as text; the four physics fields as one entry when they share ``u``'s range."""
    physics = [d for d in fields.values() if isinstance(d, Multipliers)]
    if len(physics) != len(PHYSICS_BASES) or len({d.exponent() for d in physics}) != 1:
        return ", ".join(f"{key} ~ {dist.describe()}" for key, dist in fields.items())
    parts = [f"{k} ~ {d.describe()}" for k, d in fields.items() if not isinstance(d, Multipliers)]
    parts.append(f"physics x 1.5^u (dof_damping 1.3^u), u ~ {physics[0].exponent()} per element")
    return ", ".join(parts)


def _value(task: Task, key: str, dist: Field) -> Any:
    """``task[key]``, or the full default of an optional field the task omits."""
    if key in task or not isinstance(dist, Multipliers):
        return task[key]
    return dist.default()


def _width(dist: Field) -> int:
    """How many numbers a field contributes to a task vector."""
    return 1 if isinstance(dist, Choice) else math.prod(dist.shape)


# --------------------------------------------------------------------------- the families
# The physics fields' shapes in each model (tests check them against the compiled models).
HALF_CHEETAH_SHAPES = {
    "body_mass": (8,),
    "body_inertia": (8, 3),
    "dof_damping": (9,),
    "geom_friction": (9, 3),
}
WALKER2D_SHAPES = {
    "body_mass": (8,),
    "body_inertia": (8, 3),
    "dof_damping": (9,),
    "geom_friction": (8, 3),
}
HOPPER_SHAPES = {
    "body_mass": (5,),
    "body_inertia": (5, 3),
    "dof_damping": (6,),
    "geom_friction": (5, 3),
}
_UNIT_TRAINED = "training tasks in random physics, u ~ U[-1, 1] (training saw unit physics only)"

NAVIGATION_TASKS = TaskSpace(
    fields={"goal": Uniform(-0.5, 0.5, shape=(2,))},
    summary="reach a goal position from (0, 0); reward -||pos - goal||",
    ood={
        "ood-goal": Split(
            {"goal": BoxShell(-1.0, 1.0, shape=(2,), inner=0.5)},
            "goals beyond the training square, up to 1 from the start on either axis",
        )
    },
)
VELOCITY_TASKS = TaskSpace(
    fields={"velocity": Uniform(0.0, 2.0)},
    summary="run at a goal forward velocity; reward -|v - velocity| - 0.05||ctrl||^2",
    ood={
        "ood-velocity": Split({"velocity": Uniform(2.0, 3.0)}, "velocities beyond training"),
        "ood-physics": Split(physics_fields(HALF_CHEETAH_SHAPES, 1.0), _UNIT_TRAINED),
    },
)
DIRECTION_TASKS = TaskSpace(
    fields={"direction": Choice((-1.0, 1.0))},
    summary="run forward (+1) or backward (-1); reward direction * v - 0.05||ctrl||^2",
    ood={"ood-physics": Split(physics_fields(HALF_CHEETAH_SHAPES, 1.0), _UNIT_TRAINED)},
)
_OUTSIDE_CHEETAH = physics_fields(HALF_CHEETAH_SHAPES, 2.0, low=1.0)
VELOCITY_DOMAIN_TASKS = TaskSpace(
    fields={"velocity": Uniform(0.0, 2.0), **physics_fields(HALF_CHEETAH_SHAPES, 1.0)},
    summary="run at a goal velocity in a random physics domain; reward as halfcheetah-vel",
    ood={
        "ood-velocity": Split({"velocity": Uniform(2.0, 3.0)}, "velocities beyond training"),
        "ood-physics": Split(_OUTSIDE_CHEETAH, "every multiplier outside the training domains"),
        "ood-both": Split(
            {"velocity": Uniform(2.0, 3.0), **_OUTSIDE_CHEETAH}, "velocity and physics beyond"
        ),
    },
)
_PEARL = "as PEARL's rand-param envs (u ~ U[-3, 3])"
_BEYOND_PEARL = "every multiplier outside the training domains"
WALKER2D_TASKS = TaskSpace(
    fields=physics_fields(WALKER2D_SHAPES, 3.0),
    summary=f"walk forward in a random physics domain {_PEARL}; reward as Walker2d-v5",
    ood={"ood-physics": Split(physics_fields(WALKER2D_SHAPES, 4.0, low=3.0), _BEYOND_PEARL)},
)
HOPPER_TASKS = TaskSpace(
    fields=physics_fields(HOPPER_SHAPES, 3.0),
    summary=f"hop forward in a random physics domain {_PEARL}; reward as Hopper-v5",
    ood={"ood-physics": Split(physics_fields(HOPPER_SHAPES, 4.0, low=3.0), _BEYOND_PEARL)},
)
