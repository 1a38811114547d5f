"""Strict, frozen training configs loaded from commented YAML files.

Every key is a field of :class:`TrainConfig` with a type and an allowed range. An unknown key,
a wrong type or an out-of-range value is a :class:`ConfigError` whose message is one line naming
the key and what is allowed; the command line prints it as is.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.resources
import re
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from omnirl import registry

AGENTS = ("omni", "maml", "pretrain", "joint", "random")


class ConfigError(ValueError):
    """A config that cannot be used; the message is one line naming the key and what is allowed."""


def _key(default: Any, help: str, check: Callable[[Any], bool] | None = None, allowed: str = ""):
    """A config field with its help text and its range check (``allowed`` says it in words)."""
    return field(default=default, metadata={"help": help, "check": check, "allowed": allowed})


def _at_least(low: float) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v >= low), f">= {low:g}"


def _between(low: float, high: float, low_open: bool = False, high_open: bool = False):
    def check(v: float) -> bool:
        return (v > low if low_open else v >= low) and (v < high if high_open else v <= high)

    return check, f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


def _one_of(*choices: str) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v in choices), "one of " + ", ".join(choices)


_POSITIVE = ((lambda v: v > 0), "> 0")


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Defaults are the paper protocol for HalfCheetah (Finn et al. 2017)."""

    family: str = _key("halfcheetah-vel", "task family (omnirl list)")
    agent: str = _key("maml", "learning rule", *_one_of(*AGENTS))
    seed: int = _key(0, "seed of the whole run", *_at_least(0))
    iterations: int = _key(500, "meta-iterations", *_at_least(0))
    tasks_per_iteration: int = _key(40, "tasks B per meta-iteration", *_at_least(1))
    episodes_per_task: int = _key(20, "episodes K per task and rollout set", *_at_least(1))
    horizon: int | None = _key(None, "steps per episode (null: the family's)", *_at_least(1))
    gamma: float = _key(0.99, "discount factor", *_between(0, 1, low_open=True))
    gae_lambda: float = _key(1.0, "GAE lambda", *_between(0, 1))
    hidden_sizes: tuple[int, ...] = _key(
        (64, 64), "hidden layer sizes", lambda v: len(v) > 0 and min(v) >= 1, "non-empty, each >= 1"
    )
    branch_rank: int = _key(16, "rank of the Omni-Net pre/meta branches", *_at_least(1))
    init_std: float = _key(1.0, "initial policy standard deviation", *_POSITIVE)
    inner_lr: float = _key(0.1, "inner (adaptation) learning rate alpha", *_POSITIVE)
    inner_steps: int = _key(1, "inner steps in training", *_at_least(1))
    first_order: bool = _key(False, "first-order MAML (no second derivatives)")
    outer_optimizer: str = _key("trpo", "outer optimizer", *_one_of("trpo", "adam"))
    outer_lr: float = _key(1e-3, "Adam learning rate (outer_optimizer: adam)", *_POSITIVE)
    max_kl: float = _key(0.01, "TRPO trust-region radius", *_POSITIVE)
    cg_iters: int = _key(10, "conjugate-gradient iterations", *_at_least(1))
    cg_damping: float = _key(1e-5, "damping added to the KL Hessian", *_at_least(0))
    fvp_stride: int = _key(
        1, "KL-Hessian products on every N-th time step (TRPO: 10% of the data)", *_at_least(1)
    )
    ls_max_steps: int = _key(15, "line-search candidates", *_at_least(1))
    ls_backtrack_ratio: float = _key(
        0.8, "line-search shrink factor", *_between(0, 1, low_open=True, high_open=True)
    )
    ema_decay: float = _key(0.99, "EMA teacher decay", *_between(0, 1, high_open=True))
    distill_weight: float = _key(3.0, "self-distillation weight lambda", *_at_least(0))
    joint_rollouts: str = _key("reuse", "joint-flow data", *_one_of("reuse", "own"))
    importance_clip: float = _key(0.2, "joint-flow ratios truncated at 1 + this", *_at_least(0))
    eval_every: int = _key(10, "quick evaluation every N iterations (0: never)", *_at_least(0))
    eval_tasks: int = _key(40, "tasks of the quick evaluation", *_at_least(1))
    run_dir: str = _key("runs", "folder that holds the run folders")
    torch_threads: int = _key(0, "torch threads for updates (0: all cores)", *_at_least(0))


_SCIENTIFIC = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_HINTS = typing.get_type_hints(TrainConfig)


def _type_name(hint: Any) -> str:
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    if typing.get_origin(hint) is tuple:
        return "a list of integers"
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if args:  # Optional
        return f"{_type_name(args[0])} or null"
    return names[hint]


def _coerce(key: str, value: Any) -> Any:
    """Return ``value`` as the field's type or raise ConfigError naming the expected type."""
    hint = _HINTS[key]
    optional = isinstance(hint, types.UnionType) and type(None) in typing.get_args(hint)
    base = (
        next((a for a in typing.get_args(hint) if a is not type(None)), hint) if optional else hint
    )
    if value is None and optional:
        return None
    ok = False
    if base is bool:
        ok = isinstance(value, bool)
    elif base is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif base is float:
        if isinstance(value, str) and _SCIENTIFIC.fullmatch(value):
            value = float(value)  # YAML 1.1 reads 1e-5 (no dot) as a string
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif base is str:
        ok = isinstance(value, str)
    elif typing.get_origin(base) is tuple:
        ok = isinstance(value, (list, tuple)) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        )
        value = tuple(value) if ok else value
    if not ok:
        raise ConfigError(f"config key '{key}' must be {_type_name(hint)}, got {value!r}")
    return value


def _validate(key: str, value: Any) -> Any:
    value = _coerce(key, value)
    meta = FIELDS[key].metadata
    if value is not None and meta["check"] is not None and not meta["check"](value):
        problem = "is not allowed" if meta["allowed"].startswith("one of") else "is out of range"
        raise ConfigError(f"config key '{key}' = {value!r} {problem} (allowed: {meta['allowed']})")
    if key == "family":
        try:
            registry.get_family(value)
        except registry.UnknownNameError as exc:
            raise ConfigError(f"config key 'family': {exc}") from None
    return value


def _unknown_key(key: str, where: str) -> ConfigError:
    close = difflib.get_close_matches(key, FIELDS, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else f"; known keys: {', '.join(FIELDS)}"
    return ConfigError(f"unknown config key '{key}'{where}{hint}")


def packaged_configs() -> list[str]:
    """Names of the configs shipped in ``omnirl.configs``."""
    files = importlib.resources.files("omnirl.configs").iterdir()
    return sorted(f.name[: -len(".yaml")] for f in files if f.name.endswith(".yaml"))


def _read_source(source: str) -> tuple[Any, str]:
    packaged = importlib.resources.files("omnirl.configs") / f"{source}.yaml"
    if packaged.is_file():
        text, where = packaged.read_text(), f"{source}.yaml"
    elif Path(source).is_file():
        text, where = Path(source).read_text(), source
    else:
        names = ", ".join(packaged_configs())
        raise ConfigError(f"no config '{source}': not a packaged config ({names}) nor a YAML file")
    try:
        return yaml.safe_load(text) or {}, where
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{where}{line}: {problem}") from None


def _parse_override(item: str) -> tuple[str, Any]:
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set takes key=value, got {item!r}")
    try:
        return key.strip(), yaml.safe_load(text)
    except yaml.YAMLError:
        raise ConfigError(f"--set {key.strip()}: cannot parse value {text!r}") from None


def load_config(source: str, overrides: Sequence[str] = ()) -> TrainConfig:
    """Load a packaged config by name (``navigation-2d``) or a YAML path, then apply overrides.

    Args:
        source: packaged config name or path to a YAML file.
        overrides: ``"key=value"`` strings; values are parsed as YAML (``true``, ``[32, 32]``,
            ``null``) and then type-checked.

    Raises:
        ConfigError: a missing file, invalid YAML, an unknown key, a wrong type or an
            out-of-range value (one line naming the key and what is allowed).
    """
    data, where = _read_source(source)
    if not isinstance(data, dict):
        raise ConfigError(
            f"{where}: a config is a mapping of keys to values, got {type(data).__name__}"
        )
    values = {}
    for key, value in data.items():
        if key not in FIELDS:
            raise _unknown_key(str(key), f" in {where}")
        values[key] = value
    for item in overrides:
        key, value = _parse_override(item)
        if key not in FIELDS:
            raise _unknown_key(key, " in --set")
        values[key] = value
    return TrainConfig(**{key: _validate(key, value) for key, value in values.items()})


def config_to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """The config as plain YAML/JSON values (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}


def save_config(cfg: TrainConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (loadable with :func:`load_config`)."""
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
