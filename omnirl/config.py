"""Strict, frozen training configs loaded from commented YAML files.

Every key is a field of :class:`TrainConfig` with a type and a :class:`Rule` saying which values
are allowed. An unknown key, a wrong type or an out-of-range value is a :class:`ConfigError` whose
message is one line naming the key and what is allowed; the command line prints it as is.

A ``TrainConfig`` validates itself on construction, so every instance (including one made by
``dataclasses.replace``) is a usable config. Files and ``--set`` values are read as YAML with two
fixes to YAML 1.1 that bite configs: ``1e-5`` is a number (YAML 1.1 wants ``1.0e-5``) and only
``true``/``false`` are booleans (YAML 1.1 also reads ``yes``, ``no``, ``on``, ``off``).

Other modules declare their own frozen schema the same way (fields made with :func:`config_key`,
``__post_init__`` calling :func:`validate_fields`) and load it with
``load_config(source, overrides, schema=...)``.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.resources
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from omnirl import registry
from omnirl.files import write_atomic
from omnirl.schema import (  # noqa: F401  (re-exported: schemas import them from here)
    DISTILL_KINDS,
    NON_EMPTY_POSITIVE,
    SEED,
    THREADS,
    ConfigError,
    Rule,
    _key,
    above,
    at_least,
    config_key,
    interval,
    one_of,
    schema_fields,
    validate_fields,
)


# --------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class TrainConfig:
    """One training run. Defaults are the paper protocol for HalfCheetah (Finn et al. 2017).

    Every field is checked on construction (type, then range); a bad value is a
    :class:`ConfigError`. ``family`` is normalised to the family's short name, ints given for
    floats become floats, and lists given for ``hidden_sizes`` become tuples.
    """

    # what to train
    family: str = _key("halfcheetah-vel", "task family, a registered name (omnirl list)")
    agent: str = _key("maml", "learning rule", one_of(registry.learner_names))
    seed: int = _key(0, "seed of the whole run", SEED)
    # meta-batch
    iterations: int = _key(500, "meta-iterations to train (paper: 500)", at_least(1))
    tasks_per_iteration: int = _key(40, "tasks B per meta-iteration (paper: 40)", at_least(1))
    episodes_per_task: int = _key(20, "episodes K per task and rollout set", at_least(1))
    horizon: int | None = _key(None, "steps per episode; None: the family's", at_least(1))
    gamma: float = _key(0.99, "discount factor", interval(0, 1, low_open=True))
    gae_lambda: float = _key(1.0, "GAE lambda (1: Monte Carlo returns)", interval(0, 1))
    # policy
    hidden_sizes: tuple[int, ...] = _key((64, 64), "hidden layer sizes", NON_EMPTY_POSITIVE)
    branch_rank: int = _key(16, "rank of the Omni-Net pre/meta branches", at_least(1))
    init_std: float = _key(1.0, "initial policy standard deviation", above(0))
    # inner loop
    inner_lr: float = _key(0.1, "inner (adaptation) learning rate alpha", above(0))
    inner_steps: int = _key(1, "inner gradient steps in training", at_least(1))
    first_order: bool = _key(False, "first-order MAML (no second derivatives)")
    # outer loop
    outer_optimizer: str = _key("trpo", "outer optimizer", one_of(("trpo", "adam")))
    outer_lr: float = _key(1e-3, "Adam learning rate (outer_optimizer: adam only)", above(0))
    max_kl: float = _key(0.01, "TRPO trust-region radius", above(0))
    cg_iters: int = _key(10, "conjugate-gradient iterations", at_least(1))
    cg_damping: float = _key(1e-5, "damping added to the KL Hessian", at_least(0))
    fvp_stride: int = _key(1, "KL-Hessian products on every N-th time step", at_least(1))
    ls_max_steps: int = _key(15, "line-search candidates", at_least(1))
    ls_backtrack_ratio: float = _key(
        0.8, "line-search shrink factor", interval(0, 1, low_open=True, high_open=True)
    )
    # Omni-Training
    ema_decay: float = _key(0.99, "EMA teacher decay", interval(0, 1, high_open=True))
    distill_weight: float = _key(0.05, "self-distillation weight lambda", at_least(0))
    distill: str = _key(
        "mean_sq",
        "self-distillation distance: mean_sq (paper) or kl (scale-free)",
        one_of(DISTILL_KINDS),
    )
    joint_rollouts: str = _key("reuse", "joint-flow rollouts", one_of(("reuse", "own")))
    importance_clip: float = _key(0.2, "joint-flow ratios truncated at 1 + this", at_least(0))
    joint_weight: float = _key(0.5, "weight of the joint flow's loss L_joint", at_least(0))
    # bookkeeping
    eval_every: int = _key(10, "quick evaluation every N iterations (0: never)", at_least(0))
    eval_tasks: int = _key(40, "tasks of the quick evaluation", at_least(1))
    run_dir: str = _key("runs", "folder that holds the run folders")
    torch_threads: int = _key(0, "torch threads for updates (0: all cores)", THREADS)
    # where rollouts run (the episodes are the same bit for bit: omnirl.ray_collector)
    collector_backend: str = _key("local", "rollouts local or on Ray", one_of(("local", "ray")))
    collector_workers: int = _key(2, "Ray actors (collector_backend: ray)", at_least(1))

    def __post_init__(self) -> None:
        validate_fields(self)
        try:
            # Short name even when given the Gymnasium id: run folders are named after it.
            object.__setattr__(self, "family", registry.get_family(self.family).name)
        except registry.UnknownNameError as exc:
            raise ConfigError(f"config key 'family': {exc}") from None


FIELDS = schema_fields(TrainConfig)


# ----------------------------------------------------------------------------------- YAML
# YAML 1.2 style scientific notation: 1e-5, 2E3, 1.5e+2 (YAML 1.1 needs a dot and a sign).
_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")
_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_BOOL_TAG = "tag:yaml.org,2002:bool"


def _fix_resolvers(cls: type) -> type:
    """Give a PyYAML loader or dumper class the config scalar rules (see the module docstring)."""
    cls.yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag != _BOOL_TAG]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    cls.add_implicit_resolver(_BOOL_TAG, _BOOL, list("tTfF"))
    cls.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))
    return cls


@_fix_resolvers
class _Loader(yaml.SafeLoader):
    """Safe YAML with the config scalar rules; a key given twice is an error, not a silent win."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:  # noqa: D102
        seen: set[str] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value != "<<":
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key '{key_node.value}' given twice", key_node.start_mark
                    )
                seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


@_fix_resolvers
class _Dumper(yaml.SafeDumper):
    """Safe YAML dumper that quotes exactly the strings :class:`_Loader` would not read back."""


MAX_CONFIG_BYTES = 1 << 20  # a config is a page of keys; anything larger is not one


def _parse_yaml(text: str, where: str, lines: bool = True) -> Any:
    """Parse ``text`` with :class:`_Loader`; a YAML error names ``where`` (and the line).

    Aliases are refused: a config has no use for them, and a few hundred bytes of nested
    aliases expand to gigabytes (the "billion laughs").
    """
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{where}: {len(text):,} bytes is not a config (at most 1 MiB)")
    try:
        if any(isinstance(event, yaml.AliasEvent) for event in yaml.parse(text, Loader=_Loader)):
            raise ConfigError(f"{where}: YAML aliases (*name) are not allowed in configs")
        return yaml.load(text, Loader=_Loader)  # safe: _Loader is a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if lines and mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{where}{line}: {problem}") from None


# -------------------------------------------------------------------------------- loading
def packaged_configs() -> list[str]:
    """Names of the configs shipped in ``omnirl.configs`` (``navigation-2d``, ...), sorted."""
    files = importlib.resources.files("omnirl.configs").iterdir()
    return sorted(f.name.removesuffix(".yaml") for f in files if f.name.endswith(".yaml"))


def _read_source(source: str) -> tuple[str, str]:
    """Return the text of ``source`` (packaged name or path) and how to name it in messages."""
    if source in packaged_configs():
        packaged = importlib.resources.files("omnirl.configs") / f"{source}.yaml"
        return packaged.read_text(encoding="utf-8"), f"{source}.yaml"
    path = Path(source)
    if not path.is_file():
        names = ", ".join(packaged_configs())
        raise ConfigError(f"no config '{source}': not a packaged config ({names}) nor a YAML file")
    try:
        return path.read_text(encoding="utf-8"), source
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config {source}: {exc}") from None


def _unknown_key(key: str, where: str, fields: dict[str, Any]) -> ConfigError:
    close = difflib.get_close_matches(key, fields, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else f"; known keys: {', '.join(fields)}"
    return ConfigError(f"unknown config key {key!r}{where}{hint}")


def _parse_override(item: str) -> tuple[str, Any]:
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set takes key=value, got {item!r}")
    return key, _parse_yaml(text, f"--set {key}={text}", lines=False)


def load_config(source: str, overrides: Sequence[str] = (), schema: type = TrainConfig) -> Any:
    """Load a packaged config by name (``navigation-2d``) or a YAML path, then apply overrides.

    Keys the file leaves out take the schema's defaults; the packaged files write every key.

    Args:
        source: packaged config name (see :func:`packaged_configs`) or path to a YAML file.
        overrides: ``"key=value"`` strings, applied in order after the file; values are parsed
            as YAML (``3``, ``true``, ``[32, 32]``, ``null``) and then type-checked.
        schema: the frozen config dataclass to build (:class:`TrainConfig` for RL); its fields
            are declared with :func:`config_key` and checked by :func:`validate_fields`.

    Returns:
        The validated config.

    Raises:
        ConfigError: a missing file, invalid YAML, an unknown key, a malformed override, a
            wrong type or an out-of-range value (one line naming the key and what is allowed).
    """
    text, where = _read_source(source)
    data = _parse_yaml(text, where)
    if data is None:  # never all defaults: an empty run config is a damaged one
        raise ConfigError(f"{where} is empty (a config names at least its family)")
    if not isinstance(data, dict):
        raise ConfigError(
            f"{where}: a config is a mapping of keys to values, got {type(data).__name__}"
        )
    fields = schema_fields(schema)
    for name in data:
        if name not in fields:
            raise _unknown_key(str(name), f" in {where}", fields)
    values = dict(data)
    for item in overrides:
        name, value = _parse_override(item)
        if name not in fields:
            raise _unknown_key(name, " in --set", fields)
        values[name] = value
    return schema(**values)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain YAML/JSON values in field order (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}


def config_bytes(cfg: Any) -> bytes:
    """The resolved config as YAML; ``load_config(path, schema=type(cfg))`` reads it back."""
    body = yaml.dump(config_to_dict(cfg), Dumper=_Dumper, sort_keys=False, default_flow_style=None)
    return ("# Resolved omnirl config (every key).\n" + body).encode()


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as YAML, atomically."""
    write_atomic(path, config_bytes(cfg))


def family_of(source: str | Path) -> str | None:
    """The ``family:`` of a run folder, packaged config or YAML file, or ``source`` itself.

    ``None`` where the file cannot be read or names no family (loading it reports why).
    """
    path = Path(source)
    try:
        if (path / "config.yaml").is_file():
            text = (path / "config.yaml").read_text(encoding="utf-8")
        elif str(source) in packaged_configs():
            text = _read_source(str(source))[0]
        elif path.is_file():
            text = path.read_text(encoding="utf-8")
        else:
            return str(source)
        data = yaml.load(text, Loader=_Loader)  # safe: _Loader is a SafeLoader
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    family = data.get("family") if isinstance(data, dict) else None
    return family if isinstance(family, str) else None


def kind_of(source: str | Path | None) -> registry.ProblemKind:
    """The problem kind of a family name, packaged config, YAML file or run folder.

    Anything that names no supervised kind is ``rl``: loading it as an RL config then reports
    an unknown family or a bad file properly.
    """
    family = None if source is None else family_of(source)
    kinds = registry.kinds()
    return kinds[family] if family in kinds and family != "rl" else kinds["rl"]


def load_run_config(run_dir: str | Path, overrides: Sequence[str] = ()) -> Any:
    """The config in ``run_dir/config.yaml``, loaded with its kind's schema.

    Raises:
        FileNotFoundError: ``run_dir`` is not a run folder (one line).
        ConfigError: the file cannot be used as a config.
    """
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no config.yaml)")
    return load_config(str(path), overrides, schema=kind_of(run_dir).load("config"))
