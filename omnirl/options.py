"""The options of ``omnirl evaluate`` and ``omnirl render``, parsed once for every problem kind.

A kind's evaluation or rendering takes an :class:`EvaluateOptions` / :class:`RenderOptions` as
typed by the user (``None`` where not given), parses the text options with the parsers here,
and refuses, with :func:`reject`, the options that do not apply to it. Every parser raises
:class:`OptionError`, whose message is one line naming the option.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from omnirl.schema import MAX_SEED

CHECKPOINTS = ("best", "latest")
RL_ONLY = ("ray",)


class OptionError(ValueError):
    """A command-line option that cannot be used; the message is one line naming it."""


@dataclass(frozen=True)
class EvaluateOptions:
    """``omnirl evaluate`` options as given (``None``: the kind's default)."""

    tasks: int | None = None
    steps: int | None = None
    episodes: int | None = None
    shots: str | None = None
    seed: int = 1000
    checkpoint: str = "best"
    flow: str | None = None
    lr_schedule: str | None = None
    out: Path | None = None
    data: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_seed(self.seed)

    split: str = "test"  # RL: the task split (test, val or an out-of-distribution one)
    ray: str | None = None  # RL: task chunks on Ray workers ("local" or a cluster's address)


@dataclass(frozen=True)
class RenderOptions:
    """``omnirl render`` options as given (``None``: the kind's default)."""

    task: str | None = None
    steps: str | None = None
    out: Path | None = None
    shots: str | None = None
    episodes: int | None = None
    seed: int = 0
    checkpoint: str = "best"
    flow: str | None = None
    sample: bool = False
    horizon: int | None = None

    def __post_init__(self) -> None:
        check_seed(self.seed)


def reject(options: EvaluateOptions | RenderOptions, names: Sequence[str], kind: str) -> None:
    """Refuse options that ``kind`` does not use, instead of silently ignoring them.

    Raises:
        OptionError: ``--NAME does not apply to KIND runs`` for the first one given.
    """
    defaults = {f.name: f.default for f in fields(options)}
    if kind != "RL":  # options of RL runs only, refused for the others without their listing them
        names = [*names, *(name for name in RL_ONLY if name in defaults)]
    for name in names:
        if getattr(options, name) != defaults[name]:
            flag = "--" + name.replace("_", "-")
            raise OptionError(f"{flag} does not apply to {kind} runs")


def check_seed(seed: int) -> int:
    """``seed`` if the seeding accepts it (0 to 2^63 - 1).

    Raises:
        OptionError: any other integer.
    """
    if not 0 <= seed <= MAX_SEED:
        raise OptionError(f"--seed must be an integer from 0 to 2^63 - 1, got {seed}")
    return seed


def check_checkpoint(which: str) -> str:
    """``which`` if it names a checkpoint (``best`` or ``latest``).

    Raises:
        OptionError: any other name.
    """
    if which not in CHECKPOINTS:
        raise OptionError(f"--checkpoint must be best or latest, got {which!r}")
    return which


def parse_counts(text: str, option: str, low: int, high: int) -> list[int]:
    """``"0,1,4"`` -> ``[0, 1, 4]``: sorted, unique integers, each in ``low..high``.

    Raises:
        OptionError: not comma-separated integers in range (one line naming ``option``).
    """
    try:
        counts = sorted({int(part) for part in text.split(",")})
    except ValueError:
        raise OptionError(f"{option} takes comma-separated integers, got {text!r}") from None
    if counts[0] < low or counts[-1] > high:
        raise OptionError(f"{option} values must lie in {low}..{high}, got {text!r}")
    return counts


def parse_lr_schedule(text: str | None, steps: int) -> list[float] | None:
    """``"0.1,0.05"`` -> ``[0.1, 0.05]``: one finite, positive rate per step; ``None`` stays.

    Raises:
        OptionError: not numbers, not ``steps`` of them, or not all finite and > 0.
    """
    if text is None:
        return None
    try:
        rates = [float(x) for x in text.split(",")]
    except ValueError:
        raise OptionError(f"--lr-schedule takes comma-separated numbers, got {text!r}") from None
    if len(rates) != steps or not all(math.isfinite(r) and r > 0 for r in rates):
        raise OptionError(
            f"--lr-schedule needs {steps} positive rates (one per step), got {text!r}"
        )
    return rates


MAX_TASK_CHARS = 10_000  # a task is a few numbers; JSON nested deeper than Python recurses
MAX_TASK_DEPTH = 8  # would end in a RecursionError


def parse_task(text: str, space: Any, name: str) -> dict[str, Any]:
    """The task typed as JSON, validated by the task ``space`` of ``name``.

    Raises:
        OptionError: too long or too deeply nested, not JSON, or not a task of that space.
    """
    depth = deepest = 0
    for char in text[:MAX_TASK_CHARS]:
        depth += (char in "[{") - (char in "]}")
        deepest = max(deepest, depth)
    if len(text) > MAX_TASK_CHARS or deepest > MAX_TASK_DEPTH:
        raise OptionError(
            f"--task is a small JSON object like {json.dumps(space.example())}, not "
            f"{len(text):,} characters nested {deepest} deep"
        )
    try:
        return space.validate(json.loads(text))
    except json.JSONDecodeError as exc:
        raise OptionError(
            f"--task must be JSON like {json.dumps(space.example())}: {exc}"
        ) from None
    except ValueError as exc:
        raise OptionError(f"--task does not fit {name}: {exc}") from None


def check_flow(learner: Any, flow: str | None, where: object) -> None:
    """Refuse a ``--flow`` that ``learner`` does not have (``None``: its ``eval_flow``).

    Raises:
        OptionError: naming the run (``where``) and its flows.
    """
    if flow is not None and flow not in learner.flows:
        names = ", ".join(str(f) for f in learner.flows if f is not None) or "none"
        raise OptionError(f"--flow {flow!r} does not exist in {where} (its flows: {names})")
