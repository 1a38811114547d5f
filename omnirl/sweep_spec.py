"""The spec of ``omnirl sweep``: a grid of runs, its run folders, and what each one still needs.

A spec is a YAML file (a packaged one in ``omnirl.configs`` under ``sweeps/``, e.g.
``quickstart``, or a path) naming the configs (families), agents, seeds, iterations, ``--set``
overrides for every run, and *variants*: grid cells with overrides of their own. The grid is
configs x variants x agents x seeds; every cell is a normal run folder in the sweep folder:

- ``<family>-<agent>-<seed>`` for a cell without overrides of its own;
- ``<family>-<agent>-<seed>-<tag>`` for a variant, ``tag`` as the spec gives it or made from
  its overrides (``distill_weight=0.1`` is ``distill_weight-0.1``; several are joined by ``+``).

A cell's folder is *new* (no ``latest.pt``: training starts), *unfinished* (``latest.pt`` short
of the iterations: training resumes bit for bit), *finished*, or in *conflict* (its
``config.yaml`` differs from the cell's config in more than the keys that only say how to run
it: the folder is never touched, the cell is reported). The resolved spec is saved in the
sweep folder as ``sweep.yaml``; given as the spec, it runs that sweep (in that folder) again.
"""

from __future__ import annotations

import importlib.resources
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from omnirl import registry
from omnirl.config import ConfigError, _parse_yaml, config_to_dict, kind_of, load_config
from omnirl.options import parse_counts

# Keys that say how a run is executed, not what it computes: a folder may differ in them.
EXECUTION_KEYS = (
    "iterations",
    "run_dir",
    "torch_threads",
    "collector_backend",
    "collector_workers",
)
SPEC_KEYS = (
    "name families agents seeds iterations set variants num_cpus evaluate out reference".split()
)
EVALUATE_KEYS = ("tasks", "steps", "episodes", "seed", "checkpoint", "splits")


@dataclass(frozen=True)
class Variant:
    """A grid cell's own overrides and the tag its folder names end with (``None``: no tag)."""

    tag: str | None = None
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class EvalSpec:
    """How every run is evaluated after training, into its own folder (``omnirl evaluate``)."""

    tasks: int = 100
    steps: int = 4
    episodes: int = 20
    seed: int = 1000
    checkpoint: str = "best"
    splits: tuple[str, ...] = ("test",)  # RL task splits; test -> eval.json, X -> eval-X.json


@dataclass(frozen=True)
class SweepSpec:
    """A resolved sweep spec (see the module docstring; ``configs/sweeps/*.yaml`` comment it)."""

    name: str
    families: tuple[str, ...]
    agents: tuple[str, ...]
    seeds: tuple[int, ...] = (0,)
    iterations: int | None = None
    overrides: tuple[str, ...] = ()
    variants: tuple[Variant, ...] = (Variant(),)
    num_cpus: int = 1
    evaluate: EvalSpec | None = field(default_factory=EvalSpec)
    out: str = ""
    reference: str = "maml"

    @property
    def folder(self) -> Path:
        """The sweep folder (``out``, default ``sweeps/<name>``)."""
        return Path(self.out or f"sweeps/{self.name}")

    def to_yaml(self) -> str:
        """The resolved spec as it is saved in the sweep folder (``sweep.yaml``)."""
        data = {
            "name": self.name,
            "families": list(self.families),
            "agents": list(self.agents),
            "seeds": list(self.seeds),
            "iterations": self.iterations,
            "set": list(self.overrides),
            "variants": [{"tag": v.tag, "set": list(v.overrides)} for v in self.variants],
            "num_cpus": self.num_cpus,
            "evaluate": None
            if self.evaluate is None
            else {**asdict(self.evaluate), "splits": list(self.evaluate.splits)},
            "reference": self.reference,
            "out": str(self.folder),
        }
        body = yaml.safe_dump(data, sort_keys=False, default_flow_style=None)
        return (
            "# Resolved omnirl sweep spec (omnirl sweep SWEEP/sweep.yaml runs it again).\n" + body
        )


@dataclass(frozen=True)
class Cell:
    """One run of the grid: its folder name, config source, overrides and resolved config."""

    name: str
    source: str
    overrides: tuple[str, ...]
    cfg: Any
    run_dir: Path

    @property
    def kind(self) -> str:
        """The problem kind of the run (``rl``, ``sinusoid``, ``fewshot``)."""
        return registry.kind_of(self.cfg.family).name


# ------------------------------------------------------------------------------ loading
def packaged_sweeps() -> list[str]:
    """Names of the sweep specs shipped in ``omnirl.configs/sweeps``."""
    folder = importlib.resources.files("omnirl.configs") / "sweeps"
    if not folder.is_dir():
        return []
    return sorted(
        f.name.removesuffix(".yaml") for f in folder.iterdir() if f.name.endswith(".yaml")
    )


def _read_spec(source: str) -> tuple[dict[str, Any], str]:
    if source in packaged_sweeps():
        packaged = importlib.resources.files("omnirl.configs") / "sweeps" / f"{source}.yaml"
        where, text = f"sweeps/{source}.yaml", packaged.read_text(encoding="utf-8")
    elif Path(source).is_file():
        where, text = source, Path(source).read_text(encoding="utf-8")
    else:
        names = ", ".join(packaged_sweeps()) or "none"
        raise ConfigError(f"no sweep spec {source!r}: not a packaged one ({names}) nor a file")
    data = _parse_yaml(text, where)
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: a sweep spec is a mapping of keys to values")
    unknown = sorted(set(data) - set(SPEC_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(SPEC_KEYS)})")
    return data, where


def _names(value: Any, key: str, where: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(v, str) for v in items):
        raise ConfigError(f"{where}: '{key}' must be a non-empty list of names, got {value!r}")
    return tuple(items)


def _seeds(value: Any, where: str) -> tuple[int, ...]:
    if isinstance(value, str):
        return tuple(parse_counts(value, "--seeds", 0, 2**31 - 1))
    items = [value] if isinstance(value, int) else value
    ok = isinstance(items, list) and items and all(type(v) is int and v >= 0 for v in items)
    if not ok or len(set(items)) != len(items):
        raise ConfigError(f"{where}: 'seeds' must be distinct integers >= 0, got {value!r}")
    return tuple(items)


def _positive(value: Any, key: str, where: str) -> int:
    if type(value) is not int or value < 1:
        raise ConfigError(f"{where}: '{key}' must be an integer >= 1, got {value!r}")
    return value


def _variants(value: Any, where: str) -> tuple[Variant, ...]:
    if value is None:
        return (Variant(),)
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: 'variants' must be a list of {{tag: ..., set: [...]}}")
    variants = []
    for item in value:
        if not isinstance(item, dict) or set(item) - {"tag", "set"}:
            raise ConfigError(f"{where}: a variant is {{tag: NAME, set: [key=value, ...]}}")
        overrides = _names(item["set"], "set", where) if item.get("set") else ()
        tag = item.get("tag")
        if tag is not None and (not isinstance(tag, str) or not re.fullmatch(r"[\w.+=-]+", tag)):
            raise ConfigError(f"{where}: variant tag {tag!r} must be letters, digits, . + = _ -")
        variants.append(Variant(tag if tag or not overrides else derive_tag(overrides), overrides))
    return tuple(variants)


def _evaluate(value: Any, where: str) -> EvalSpec | None:
    if value is None or value is False:
        return None
    if value is True:
        return EvalSpec()
    if not isinstance(value, dict) or set(value) - set(EVALUATE_KEYS):
        raise ConfigError(f"{where}: 'evaluate' takes {', '.join(EVALUATE_KEYS)} (or false)")
    splits = value.get("splits", ["test"])
    splits = [splits] if isinstance(splits, str) else splits
    if not isinstance(splits, list) or not splits or len(set(map(str, splits))) != len(splits):
        raise ConfigError(f"{where}: evaluate.splits takes distinct split names, e.g. [test, val]")
    spec = EvalSpec(**{**value, "splits": tuple(map(str, splits))})
    for key in ("tasks", "episodes"):
        _positive(getattr(spec, key), f"evaluate.{key}", where)
    if (
        type(spec.steps) is not int
        or not 0 <= spec.steps <= 10
        or spec.checkpoint
        not in (
            "best",
            "latest",
        )
    ):
        raise ConfigError(f"{where}: 'evaluate' needs steps in 0..10 and checkpoint best|latest")
    return spec


def load_spec(source: str | None, **flags: Any) -> SweepSpec:
    """A sweep spec from a packaged name or YAML path, with command-line ``flags`` on top.

    Args:
        source: the spec (``None``: the flags say everything).
        **flags: ``families``, ``agents``, ``seeds`` (replace the spec's), ``overrides`` (added
            after the spec's ``set``), ``iterations``, ``num_cpus``, ``out``, ``reference``,
            ``evaluate`` (``False``: no evaluation); ``None`` values are not given.

    Raises:
        ConfigError: an unknown key, a malformed value (one line naming it).
    """
    data, where = _read_spec(source) if source is not None else ({}, "the command line")
    given = {k: v for k, v in flags.items() if v is not None}
    for key in ("families", "agents", "seeds", "iterations", "num_cpus", "out", "reference"):
        data[key] = given.get(key, data.get(key))
    spec_set = data.get("set") or []
    data["set"] = [
        *([spec_set] if isinstance(spec_set, str) else spec_set),
        *given.get("overrides", []),
    ]
    if given.get("evaluate") is False:
        data["evaluate"] = None
    if source is not None and Path(source).name == "sweep.yaml" and "out" not in given:
        data["out"] = str(Path(source).parent)  # a sweep's own resolved spec: that sweep
    if data["families"] is None or data["agents"] is None:
        raise ConfigError(f"{where}: a sweep needs families and agents (--family, --agent)")
    name = data.get("name") or (Path(source).stem if source else "sweep")
    iterations = data.get("iterations")
    return SweepSpec(
        name=str(name),
        families=_names(data["families"], "families", where),
        agents=_names(data["agents"], "agents", where),
        seeds=_seeds(0 if data.get("seeds") is None else data["seeds"], where),
        iterations=None if iterations is None else _positive(iterations, "iterations", where),
        overrides=_names(data["set"], "set", where) if data["set"] else (),
        variants=_variants(data.get("variants"), where),
        num_cpus=_positive(
            1 if data.get("num_cpus") is None else data["num_cpus"], "num_cpus", where
        ),
        evaluate=_evaluate(data.get("evaluate", True), where),
        out=str(data.get("out") or ""),
        reference=str(data.get("reference") or "maml"),
    )


def derive_tag(overrides: tuple[str, ...]) -> str:
    """A folder-name tag from overrides: ``distill_weight=0.1`` -> ``distill_weight-0.1``."""
    parts = [re.sub(r"[^\w.+-]+", "_", item.replace("=", "-", 1)).strip("_") for item in overrides]
    return "+".join(parts)


# -------------------------------------------------------------------------------- grid
def expand(spec: SweepSpec) -> list[Cell]:
    """The grid's cells in order (configs, variants, agents, seeds), every config validated.

    Raises:
        ConfigError: a cell's config cannot be loaded (naming the cell), or two cells would
            share a folder.
    """
    cells: list[Cell] = []
    for source in spec.families:
        schema = kind_of(source).load("config")
        for variant in spec.variants:
            for agent in spec.agents:
                for seed in spec.seeds:
                    sets = [*spec.overrides, *variant.overrides, f"agent={agent}", f"seed={seed}"]
                    sets += [f"iterations={spec.iterations}"] if spec.iterations else []
                    try:
                        cfg = load_config(source, sets, schema=schema)
                    except ConfigError as exc:
                        raise ConfigError(
                            f"sweep cell {source} {agent} seed {seed}: {exc}"
                        ) from None
                    _check_splits(spec.evaluate, cfg.family)
                    name = f"{cfg.family}-{agent}-{seed}" + (
                        f"-{variant.tag}" if variant.tag else ""
                    )
                    cells.append(Cell(name, source, tuple(sets), cfg, spec.folder / name))
    names = [cell.name for cell in cells]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"two sweep cells would share the run folder {twice[0]}")
    return cells


def _check_splits(evaluate: EvalSpec | None, family_name: str) -> None:
    """Refuse evaluation splits an RL family does not declare (supervised runs have none)."""
    if evaluate is None:
        return
    if registry.kind_of(family_name).name != "rl":
        if evaluate.splits != ("test",):
            raise ConfigError(f"evaluate.splits: {family_name} runs have no task splits")
        return
    from omnirl.evaluation import check_split
    from omnirl.options import OptionError

    for split in evaluate.splits:
        try:
            check_split(registry.get_family(family_name), split)
        except OptionError as exc:
            raise ConfigError(f"evaluate.splits: {exc}") from None


def conflict(cell: Cell) -> str | None:
    """How the cell's folder config differs from the cell's, beyond execution keys (or None)."""
    from omnirl.config import load_run_config

    theirs = config_to_dict(load_run_config(cell.run_dir))
    ours = config_to_dict(cell.cfg)
    for key, value in ours.items():
        if key not in EXECUTION_KEYS and theirs.get(key) != value:
            return f"{cell.run_dir}/config.yaml has {key}={theirs.get(key)!r}, the sweep {value!r}"
    return None


def cell_state(cell: Cell) -> tuple[str, int]:
    """``(state, iteration)``: ``new``, ``unfinished``, ``finished`` or ``conflict: ...``."""
    from omnirl import checkpoint

    latest = cell.run_dir / "checkpoints" / "latest.pt"
    if not (cell.run_dir / "config.yaml").is_file():
        return "new", 0
    problem = conflict(cell)
    if problem is not None:
        return f"conflict: {problem}", 0
    if not latest.is_file():
        return "new", 0
    iteration = int(checkpoint.load(latest)["iteration"])
    trains = registry.load_learner(cell.cfg.agent, cell.kind).trains
    done = iteration >= cell.cfg.iterations or not trains
    return ("finished" if done else "unfinished"), iteration


def pending_splits(cell: Cell, spec: EvalSpec) -> list[str]:
    """The spec's splits whose evaluation file is not this spec's, of the current checkpoint."""
    import json

    from omnirl import checkpoint
    from omnirl.evaluation import eval_stem

    try:
        which, _ = checkpoint.run_checkpoint(cell.run_dir, spec.checkpoint)
        now = int(checkpoint.load(which)["iteration"])
    except (OSError, ValueError, KeyError, TypeError):
        return list(spec.splits)
    wanted = [spec.tasks, spec.steps, spec.episodes, spec.seed]
    pending = []
    for split in spec.splits:
        try:
            payload = json.loads((cell.run_dir / f"{eval_stem(split)}.json").read_text())
            [entry] = [r for r in payload["runs"] if Path(r["run"]).name == cell.name]
            same = [len(payload["tasks"]), payload["steps"], payload["episodes"], payload["seed"]]
            done = same == wanted and payload.get("split", "test") == split
            done = done and entry["iteration"] == now
        except (OSError, ValueError, KeyError, TypeError):
            done = False
        if not done:
            pending.append(split)
    return pending


def evaluated(cell: Cell, spec: EvalSpec) -> bool:
    """Whether every split's evaluation file is this spec's, of the current checkpoint."""
    return not pending_splits(cell, spec)
