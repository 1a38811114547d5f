"""Registries of problem kinds, task families and learners, all resolved lazily by name.

The core never imports ``omnirl.envs`` or ``omnirl.agents`` statically: RL families register
themselves when ``omnirl.envs`` is imported (:func:`families` does that on first use), and
learners and the pieces of a problem kind are ``"module:attr"`` strings, as Gymnasium's
``register(entry_point=...)``. Users add their own with :func:`register_family`,
:func:`register_learner` and :func:`register_kind`.

A *problem kind* is what a run trains and how it is run: ``rl`` (the Gymnasium task families),
``sinusoid`` (few-shot regression) and ``fewshot`` (few-shot classification). Every run's
config names a ``family``; RL families map to the ``rl`` kind, and a supervised kind's family
is its own name.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from typing import Any, Protocol


class TaskDistribution(Protocol):
    """What a family's task space offers (see ``omnirl.envs.tasks.TaskSpace``).

    Splits: ``train`` (what training samples), ``test`` and ``val`` (fresh tasks of the training
    distribution) and the family's out-of-distribution splits; validation accepts every split's
    values.
    """

    summary: str

    @property
    def split_names(self) -> tuple[str, ...]: ...  # noqa: D102

    def describe_splits(self) -> list[tuple[str, str, str]]: ...  # noqa: D102

    def sample(self, n: int, rng: Any, split: str = "train") -> list[dict[str, Any]]: ...  # noqa: D102

    def validate(self, task: Any) -> dict[str, Any]: ...  # noqa: D102

    def describe(self) -> str: ...  # noqa: D102

    def example(self) -> dict[str, Any]: ...  # noqa: D102


@dataclass(frozen=True)
class Family:
    """An RL task family: a short name, its Gymnasium id and its task distribution.

    ``optimum``, where the optimal return is known exactly, is the ``"module:function"`` entry
    point of ``(tasks, horizon) -> (N,) returns`` (drawn as a line on evaluation plots).
    """

    name: str
    env_id: str
    tasks: TaskDistribution
    optimum: str | None = None

    @property
    def horizon(self) -> int | None:
        """The episode horizon registered with Gymnasium (``max_episode_steps``)."""
        import gymnasium

        return gymnasium.spec(self.env_id).max_episode_steps


class UnknownNameError(ValueError):
    """A family, kind or learner name that is not registered; the message lists the known ones."""


def resolve(entry_point: str) -> Any:
    """Import ``"module:attr"`` and return the attribute."""
    module, _, attr = entry_point.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class ProblemKind:
    """The pieces that run one kind of problem, as ``"module:attr"`` entry points.

    Attributes:
        name: ``rl``, ``sinusoid``, ``fewshot``.
        config: the frozen config dataclass of its runs.
        trainer: the :class:`omnirl.trainer.RunTrainer` subclass that trains them.
        learner: ``(cfg, state | None) -> Learner``: a new learner for a config (``state``, a
            loaded checkpoint, when the learner is sized by it, e.g. few-shot classes).
        evaluate: ``(runs, options, on_progress) -> omnirl.report.Report`` (``omnirl evaluate``).
        render: ``(run, options) -> omnirl.report.Report`` (``omnirl render``).
        data: the module (in ``omnirl.envs``) that says what its tasks are and makes its data.
        summary: one line for ``omnirl list``.
    """

    name: str
    config: str
    trainer: str
    learner: str
    evaluate: str
    render: str
    data: str
    summary: str = ""

    def load(self, piece: str) -> Any:
        """The imported piece (``"config"``, ``"trainer"``, ...; ``"data"``: the module)."""
        if piece == "data":
            return importlib.import_module(self.data)
        return resolve(getattr(self, piece))


_KINDS: dict[str, ProblemKind] = {
    "rl": ProblemKind(
        "rl",
        "omnirl.config:TrainConfig",
        "omnirl.trainer:Trainer",
        "omnirl.trainer:make_agent",
        "omnirl.evaluation:evaluate_report",
        "omnirl.render:render_report",
        "omnirl.envs",
        "meta-RL on the task families (omnirl train FAMILY)",
    ),
    "sinusoid": ProblemKind(
        "sinusoid",
        "omnirl.sinusoid.config:SinusoidConfig",
        "omnirl.sinusoid.train:SinusoidTrainer",
        "omnirl.sinusoid.config:make_learner",
        "omnirl.sinusoid.evaluate:evaluate_report",
        "omnirl.sinusoid.render:render_report",
        "omnirl.envs.sinusoid",
        "few-shot sinusoid regression (omnirl train sinusoid)",
    ),
    "fewshot": ProblemKind(
        "fewshot",
        "omnirl.fewshot.config:FewShotConfig",
        "omnirl.fewshot.train:FewShotTrainer",
        "omnirl.fewshot.config:make_learner",
        "omnirl.fewshot.evaluate:evaluate_report",
        "omnirl.fewshot.render:render_report",
        "omnirl.envs.fewshot",
        "few-shot image classification (omnirl train fewshot)",
    ),
}
_FAMILIES: dict[str, Family] = {}
# (kind, name) -> "module:Class". One registry for every learner of every kind.
_LEARNERS: dict[tuple[str, str], str] = {
    ("rl", "omni"): "omnirl.agents.omni:OmniAgent",
    ("rl", "maml"): "omnirl.agents.maml:MAMLAgent",
    ("rl", "pretrain"): "omnirl.agents.pretrain:PretrainAgent",
    ("rl", "joint"): "omnirl.agents.joint:JointAgent",
    ("rl", "random"): "omnirl.agents.random:RandomAgent",
    ("rl", "oracle"): "omnirl.agents.oracle:OracleAgent",
    ("sinusoid", "omni"): "omnirl.agents.sinusoid:OmniRegression",
    ("sinusoid", "maml"): "omnirl.agents.sinusoid:MAMLRegression",
    ("sinusoid", "pretrain"): "omnirl.agents.sinusoid:PretrainRegression",
    ("sinusoid", "joint"): "omnirl.agents.sinusoid:JointRegression",
    ("fewshot", "omni"): "omnirl.agents.fewshot:OmniLearner",
    ("fewshot", "protonet"): "omnirl.agents.fewshot:ProtoNetLearner",
    ("fewshot", "pretrain"): "omnirl.agents.fewshot:PretrainLearner",
    ("fewshot", "joint"): "omnirl.agents.fewshot:JointLearner",
}
_BUILTIN_FAMILIES_LOADED = False


def register_family(
    name: str, env_id: str, tasks: TaskDistribution, optimum: str | None = None
) -> None:
    """Register an RL family under ``name`` (e.g. ``"halfcheetah-vel"``) for ``env_id``."""
    _FAMILIES[name] = Family(name, env_id, tasks, optimum)


def register_learner(name: str, entry_point: str, kind: str = "rl") -> None:
    """Register a learner class of problem ``kind`` by ``"module:Class"`` entry point."""
    _LEARNERS[(kind, name)] = entry_point


def register_kind(kind: ProblemKind) -> None:
    """Register a problem kind (its family name is its own name)."""
    _KINDS[kind.name] = kind


def learner_names(kind: str = "rl") -> list[str]:
    """Names of the learners registered for ``kind``."""
    return [name for k, name in _LEARNERS if k == kind]


def load_learner(name: str, kind: str = "rl") -> Any:
    """Import and return the learner class registered as ``name`` for ``kind``.

    Raises:
        UnknownNameError: the message lists the kind's known learners.
    """
    if (kind, name) not in _LEARNERS:
        raise _unknown(f"{kind} learner", "learners", name, sorted(learner_names(kind)))
    return resolve(_LEARNERS[(kind, name)])


def kinds() -> dict[str, ProblemKind]:
    """The registered problem kinds by name."""
    return dict(_KINDS)


def kind_of(family: str) -> ProblemKind:
    """The problem kind a run of ``family`` belongs to (``rl`` for the Gymnasium families).

    Raises:
        UnknownNameError: neither a supervised kind nor a registered family.
    """
    if family in _KINDS and family != "rl":
        return _KINDS[family]
    get_family(family)
    return _KINDS["rl"]


def families() -> dict[str, Family]:
    """All registered RL families (importing ``omnirl.envs`` once registers the built-in ones)."""
    global _BUILTIN_FAMILIES_LOADED
    if not _BUILTIN_FAMILIES_LOADED:
        importlib.import_module("omnirl.envs")
        _BUILTIN_FAMILIES_LOADED = True
    return dict(_FAMILIES)


def _unknown(kind: str, plural: str, name: str, known: list[str]) -> UnknownNameError:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return UnknownNameError(f"unknown {kind} {name!r}.{hint} Known {plural}: {', '.join(known)}")


def get_family(name: str) -> Family:
    """Look an RL family up by short name or by Gymnasium id.

    Raises:
        UnknownNameError: the message lists the known families.
    """
    known = families()
    if name in known:
        return known[name]
    for family in known.values():
        if family.env_id == name:
            return family
    raise _unknown("family", "families", name, sorted(known))
