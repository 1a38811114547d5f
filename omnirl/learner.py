"""The one contract every learner implements, of every problem kind.

The trainer, the evaluator, checkpoints and the command line reach RL agents, sinusoid and
few-shot learners and the oracle only through :class:`Learner` (as stable-baselines3 reaches
PPO and SAC through ``BaseAlgorithm``), never by probing for attributes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, NamedTuple, Protocol, runtime_checkable


@runtime_checkable
class Learner(Protocol):
    """A learning rule around one model.

    Attributes:
        name: the name it is registered under (``omnirl.registry``), e.g. ``"maml"``.
        kind: its problem kind, ``"rl"``, ``"sinusoid"`` or ``"fewshot"``.
        eval_flow: the flow evaluated and adapted at test time (``None``: a plain model).
        adapts: whether test time adapts it by gradient steps; the oracle is told the task
            instead and is evaluated as it is.
        trains: whether it has a training step; ``random`` only saves its initial parameters.
    """

    name: ClassVar[str]
    kind: ClassVar[str]
    eval_flow: ClassVar[str | None]
    adapts: ClassVar[bool]
    trains: ClassVar[bool]

    @property
    def flows(self) -> tuple[str | None, ...]:
        """The flows its model can be evaluated with (``(None,)`` for a plain model)."""
        ...

    def update(self, data: Any) -> dict[str, float]:
        """One outer step on one draw of training data; the metrics to log.

        ``data`` is what the kind's trainer draws: an :class:`omnirl.trainer.TaskDraw` for RL
        (collector, tasks, seed), a meta-batch for sinusoid regression, a batch and an episode
        for few-shot classification.

        Raises:
            FloatingPointError: a non-finite loss; nothing was updated.
        """
        ...

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training bit for bit."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        ...


class TaskDraw(NamedTuple):
    """What an RL learner's :meth:`Learner.update` gets: one meta-iteration's tasks.

    Attributes:
        collector: the batched collector of the run's family.
        tasks: the meta-batch of tasks.
        seed: seeds the iteration's first collection.
    """

    collector: Any
    tasks: Sequence[dict[str, Any]]
    seed: int
