"""Strict config schemas: typed, range-checked fields of frozen dataclasses.

Every key is a field made with :func:`config_key`, with a type and a :class:`Rule` saying which
values are allowed. :func:`validate_fields` (called from a schema's ``__post_init__``) checks and
converts them, so every instance (including one made by ``dataclasses.replace``) is usable. A
wrong type or an out-of-range value is a :class:`ConfigError` whose message is one line naming
the key and what is allowed. :mod:`omnirl.config` loads YAML into such schemas.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import reprlib
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


class ConfigError(ValueError):
    """A config that cannot be used; the message is one line naming the key and what is allowed."""

    def __init__(self, message: str):
        # One line even when a value or a YAML problem brings a newline: the CLI prints it as is.
        super().__init__(" ".join(part.strip() for part in str(message).splitlines()))


# ----------------------------------------------------------------------------- value rules
@dataclass(frozen=True)
class Rule:
    """Which values a field allows: a predicate and the same thing in words for messages."""

    check: Callable[[Any], bool]
    allowed: str | Callable[[], str]
    choice: bool = False  # a choice among names ("is not allowed") rather than a range

    def describe(self) -> str:
        """The allowed values in words (computed now for choices that can grow, e.g. agents)."""
        return self.allowed() if callable(self.allowed) else self.allowed


def at_least(low: float) -> Rule:
    """Values ``>= low``."""
    return Rule(lambda v: v >= low, f">= {low:g}")


def above(low: float) -> Rule:
    """Values ``> low``."""
    return Rule(lambda v: v > low, f"> {low:g}")


def interval(low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> Rule:
    """Values in ``[low, high]``; either end may be open."""

    def check(v: float) -> bool:
        return (v > low if low_open else v >= low) and (v < high if high_open else v <= high)

    brackets = ("(" if low_open else "[", ")" if high_open else "]")
    return Rule(check, f"{brackets[0]}{low:g}, {high:g}{brackets[1]}")


def one_of(choices: Sequence[str] | Callable[[], Sequence[str]]) -> Rule:
    """One of ``choices`` (a callable is asked on every check, for registries that grow)."""
    names = choices if callable(choices) else (lambda: choices)
    return Rule(lambda v: v in names(), lambda: "one of " + ", ".join(names()), choice=True)


NON_EMPTY_POSITIVE = Rule(lambda v: len(v) > 0 and min(v) >= 1, "a non-empty list, each >= 1")
# Seeds feed numpy's SeedSequence and torch.manual_seed (at most 2^64 - 1) after adding stream
# offsets: every seed below 2^63 is safe for both.
MAX_SEED = 2**63 - 1
SEED = Rule(lambda v: 0 <= v <= MAX_SEED, "0 to 2^63 - 1")
# More threads than any machine has cores only oversubscribes; far more crash OpenMP.
THREADS = Rule(lambda v: 0 <= v <= 256, "0 (every core) to 256")
# The self-distillation distances of omnirl.pg.policy_distill.
DISTILL_KINDS = ("mean_sq", "kl")


def _key(default: Any, help: str, rule: Rule | None = None) -> Any:
    """A config field with its help text and its rule (``None``: any value of the type)."""
    return field(default=default, metadata={"help": help, "rule": rule})


config_key = _key  # public name: other config schemas (sinusoid, few-shot) declare fields with it


def validate_fields(cfg: Any) -> None:
    """Check and convert every field of a frozen config dataclass in place (its ``__post_init__``).

    Raises:
        ConfigError: the first field of a wrong type or out of range (one line).
    """
    for name in schema_fields(type(cfg)):
        # Frozen: the checked (and converted) value goes in through object.__setattr__.
        object.__setattr__(cfg, name, _validate(type(cfg), name, getattr(cfg, name)))


@functools.cache
def schema_fields(schema: type) -> dict[str, dataclasses.Field]:
    """The fields of a config dataclass by name, in order."""
    return {f.name: f for f in dataclasses.fields(schema)}


@functools.cache
def _hints(schema: type) -> dict[str, Any]:
    return typing.get_type_hints(schema)


# ---------------------------------------------------------------------------------- types
class _WrongType(Exception):
    """A value that is not of the field's type (turned into a ConfigError by the caller).

    Args:
        expected: what was expected, when more precise than the type's words.
    """

    def __init__(self, expected: str | None = None):
        super().__init__(expected)
        self.expected = expected


def _as_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):  # bool is an int subclass
        raise _WrongType
    return value


def _as_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _WrongType
    if not math.isfinite(value):  # .inf passes every "> 0" rule, .nan fails them obscurely
        raise _WrongType("a finite number")
    return float(value)


def _as_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _WrongType
    return value


def _as_str(value: Any) -> str:
    if not isinstance(value, str):
        raise _WrongType
    return value


def _as_int_tuple(value: Any) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)):
        raise _WrongType
    return tuple(_as_int(v) for v in value)


# Field type -> (the type in words, converter). A new field type needs one row here.
_TYPES: dict[Any, tuple[str, Callable[[Any], Any]]] = {
    int: ("an integer", _as_int),
    float: ("a number", _as_float),
    bool: ("true or false", _as_bool),
    str: ("a string", _as_str),
    tuple[int, ...]: ("a list of integers", _as_int_tuple),
}


def _coerce(schema: type, key: str, value: Any) -> Any:
    """Return ``value`` as the field's type or raise ConfigError naming the expected type."""
    hint = _hints(schema)[key]
    args = typing.get_args(hint) if typing.get_origin(hint) is not tuple else ()
    optional = type(None) in args
    base = next(a for a in args if a is not type(None)) if optional else hint
    if value is None and optional:
        return None
    words, convert = _TYPES[base]
    try:
        return convert(value)
    except _WrongType as exc:
        expected = exc.expected or (f"{words} or null" if optional else words)
        raise ConfigError(f"config key '{key}' must be {expected}, got {_short(value)}") from None


def _validate(schema: type, key: str, value: Any) -> Any:
    """Type-check, convert and range-check one value; return it as it goes in the config."""
    value = _coerce(schema, key, value)
    rule: Rule | None = schema_fields(schema)[key].metadata["rule"]
    if value is not None and rule is not None and not rule.check(value):
        problem = "is not allowed" if rule.choice else "is out of range"
        raise ConfigError(
            f"config key '{key}' = {_short(value)} {problem} (allowed: {rule.describe()})"
        )
    return value


def _short(value: Any) -> str:
    """``repr(value)``, cut to a readable length (a message is one line, not a dump)."""
    short = reprlib.Repr()
    short.maxstring = short.maxother = 60
    short.maxlist = short.maxtuple = short.maxdict = 6
    short.maxlevel = 3
    return short.repr(value)
