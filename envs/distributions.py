"""The distributions a task field is drawn from, one class per kind of field.

Each has the same small interface, which :class:`omnirl.envs.tasks.TaskSpace` uses to sample,
validate and describe tasks: ``sample(n, rng)``, ``parse(key, value, allowed)`` (type and shape
only), ``allows(arr)`` (element by element: could this distribution draw it), ``to_python``,
``example``, ``bounds``, ``describe``, and the class attributes ``refusal`` (the wording of an
out-of-range error) and ``optional`` (may a task omit the field). numpy only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

# The model fields a physics domain scales, and the base b of each multiplier b^u (PEARL's and
# ProMP's rand-param envs: 1.5, and 1.3 for damping).
PHYSICS_BASES = {"body_mass": 1.5, "body_inertia": 1.5, "dof_damping": 1.3, "geom_friction": 1.5}


def _parse_array(key: str, value: Any, shape: tuple[int, ...], allowed: str) -> np.ndarray:
    """``value`` as a float64 array of ``shape``, or ``ValueError`` naming ``key``."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"task field {key!r} must be numeric, got {value!r} ({allowed})") from None
    if isinstance(value, (bool, np.bool_)) or arr.shape != shape:
        raise ValueError(f"task field {key!r} has the wrong type or shape: {value!r} ({allowed})")
    return arr


def _shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


@dataclass(frozen=True)
class Uniform:
    """A real field (``shape == ()``) or vector field drawn uniformly from ``[low, high]``."""

    low: float
    high: float
    shape: tuple[int, ...] = ()
    refusal: ClassVar[str] = "is out of range"
    optional: ClassVar[bool] = False  # a task must give it

    def sample(self, n: int, rng: np.random.Generator) -> list[Any]:
        """Draw ``n`` values as Python floats (or lists of floats)."""
        values = rng.uniform(self.low, self.high, size=(n, *self.shape))
        return [v.tolist() if self.shape else float(v) for v in values]

    def parse(self, key: str, value: Any, allowed: str) -> np.ndarray:
        """``value`` as a float64 array of the field's shape (type and shape checked only)."""
        return _parse_array(key, value, self.shape, allowed)

    def allows(self, arr: np.ndarray) -> np.ndarray:
        """Element by element: could this distribution draw it."""
        return np.isfinite(arr) & (arr >= self.low) & (arr <= self.high)

    def to_python(self, arr: np.ndarray) -> Any:
        """A float or a list of floats."""
        return arr.tolist() if self.shape else float(arr)

    def example(self) -> Any:
        """The middle of the range."""
        mid = (self.low + self.high) / 2
        return [mid] * math.prod(self.shape) if self.shape else mid

    def bounds(self) -> tuple[float, float]:
        """The smallest and largest value of an element."""
        return self.low, self.high

    def describe(self) -> str:
        """Human-readable distribution, e.g. ``U[0, 2]`` or ``U[-0.5, 0.5]^2``."""
        power = "" if not self.shape else "^" + _shape_text(self.shape)
        return f"U[{self.low:g}, {self.high:g}]{power}"


@dataclass(frozen=True)
class BoxShell(Uniform):
    """Uniform on the box ``[low, high]^d`` outside the inner box ``[-inner, inner]^d``.

    A point lies outside the inner box when any coordinate's magnitude exceeds ``inner``
    (Navigation2D's goals beyond the training square). Drawn by rejection from the outer box.
    """

    inner: float = 0.0

    def sample(self, n: int, rng: np.random.Generator) -> list[Any]:
        """Draw ``n`` points (lists of floats), rejecting those inside the inner box."""
        kept = np.zeros((0, *self.shape))
        while len(kept) < n:
            draw = rng.uniform(self.low, self.high, size=(n, *self.shape))
            outside = np.abs(draw).reshape(n, -1).max(axis=1) > self.inner
            kept = np.concatenate([kept, draw[outside]])
        return [v.tolist() for v in kept[:n]]

    def describe(self) -> str:
        """E.g. ``U[-1, 1]^2 outside [-0.5, 0.5]^2``."""
        return f"{super().describe()} outside [{-self.inner:g}, {self.inner:g}]^" + _shape_text(
            self.shape
        )


@dataclass(frozen=True)
class Choice:
    """A field drawn uniformly from a finite set of numbers."""

    values: tuple[float, ...]
    refusal: ClassVar[str] = "is not allowed"
    optional: ClassVar[bool] = False

    def sample(self, n: int, rng: np.random.Generator) -> list[Any]:
        """Draw ``n`` values uniformly from ``values``."""
        return [self.values[i] for i in rng.integers(len(self.values), size=n)]

    def parse(self, key: str, value: Any, allowed: str) -> np.ndarray:
        """``value`` as a 0-d array if it is a number, else ``ValueError``."""
        numeric = isinstance(value, (int, float, np.integer, np.floating))
        if not numeric or isinstance(value, (bool, np.bool_)):
            raise ValueError(f"task field {key!r} = {value!r} {self.refusal} ({allowed})")
        return np.asarray(value, dtype=np.float64)

    def allows(self, arr: np.ndarray) -> np.ndarray:
        """Whether the value is one of the choices."""
        return np.isin(arr, self.values)

    def to_python(self, arr: np.ndarray) -> Any:
        """The value as a float."""
        return float(arr)

    def example(self) -> Any:
        """The first choice."""
        return self.values[0]

    def bounds(self) -> tuple[float, float]:
        """The smallest and largest choice."""
        return min(self.values), max(self.values)

    def describe(self) -> str:
        """Human-readable set, e.g. ``{-1, 1}``."""
        return "{" + ", ".join(f"{v:g}" for v in self.values) + "}"


@dataclass(frozen=True)
class Multipliers:
    """Physics multipliers ``base^u``, one per element of a model field, ``u`` drawn per element.

    ``u ~ U[-high, high]`` when ``low == 0`` (PEARL's and ProMP's rand-param envs, with
    ``high = 3``); otherwise ``|u| ~ U[low, high]`` with a random sign: every element outside the
    domains of ``U[-low, low]``. A task may give one number for every element, or omit the field
    (the unit multipliers). Values are checked in exponent space, with a little slack for the
    rounding of ``base ** u``.
    """

    base: float
    high: float
    low: float = 0.0
    shape: tuple[int, ...] = ()
    refusal: ClassVar[str] = "is out of range"
    optional: ClassVar[bool] = True  # omitted: the unit multipliers

    def sample(self, n: int, rng: np.random.Generator) -> list[Any]:
        """Draw ``n`` arrays of multipliers (nested lists of floats)."""
        s = rng.uniform(self.low - self.high, self.high - self.low, size=(n, *self.shape))
        u = np.where(s >= 0, s + self.low, s - self.low)
        return [v.tolist() for v in np.power(self.base, u)]

    def parse(self, key: str, value: Any, allowed: str) -> np.ndarray:
        """One number (for every element) or an array of the field's shape, as float64."""
        shape = () if isinstance(value, (int, float, np.number)) else self.shape
        arr = _parse_array(key, value, shape, allowed)
        return np.broadcast_to(arr, self.shape).copy()

    def allows(self, arr: np.ndarray) -> np.ndarray:
        """Element by element: a positive multiplier whose exponent |u| is in ``[low, high]``."""
        with np.errstate(divide="ignore", invalid="ignore"):
            magnitude = np.abs(np.log(arr) / math.log(self.base))
        slack = 1e-9
        return (arr > 0) & (magnitude >= self.low - slack) & (magnitude <= self.high + slack)

    def to_python(self, arr: np.ndarray) -> Any:
        """Nested lists of floats, the field's shape."""
        return arr.tolist()

    def example(self) -> Any:
        """One number for every element: the unit multipliers."""
        return 1.0

    def default(self) -> Any:
        """The unit multipliers in full, for a task that omits the field."""
        return np.ones(self.shape).tolist()

    def bounds(self) -> tuple[float, float]:
        """The smallest and largest multiplier."""
        return self.base**-self.high, self.base**self.high

    def exponent(self) -> str:
        """The distribution of ``u``: ``U[-3, 3]`` or ``±U[3, 4]``."""
        if self.low == 0:
            return f"U[-{self.high:g}, {self.high:g}]"
        return f"±U[{self.low:g}, {self.high:g}]"

    def describe(self) -> str:
        """E.g. ``1.5^U[-1, 1] per element (8x3)``."""
        return f"{self.base:g}^{self.exponent()} per element ({_shape_text(self.shape)})"


Field = Uniform | Choice | Multipliers


def physics_fields(
    shapes: Mapping[str, tuple[int, ...]], high: float, low: float = 0.0
) -> dict[str, Multipliers]:
    """The four physics fields of a model with these field ``shapes`` (see :class:`Multipliers`)."""
    return {key: Multipliers(base, high, low, shapes[key]) for key, base in PHYSICS_BASES.items()}
