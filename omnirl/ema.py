"""The EMA teacher of Omni-Training's self-distillation."""

from __future__ import annotations

import copy
from typing import Any

import torch


def _check_decay(ema_decay: float) -> float:
    if not 0.0 <= ema_decay < 1.0:  # also rejects NaN
        raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
    return float(ema_decay)


class EMATeacher:
    """An exponential moving average of a student module.

    After every outer step, each teacher parameter follows the student's::

        theta~ <- d * theta~ + (1 - d) * theta        (d = ema_decay)

    and buffers are copied. The teacher is a deep copy kept in eval mode with ``requires_grad``
    off: it never receives gradients, so distilling towards its outputs pulls the student without
    the target moving with it.

    Args:
        student: the module to follow; the teacher starts as an exact copy.
        ema_decay: d in [0, 1). ``d = 0`` makes the teacher a copy of the latest student.

    Raises:
        ValueError: if ``ema_decay`` is outside [0, 1).

    References:
        Tarvainen, Valpola. "Mean teachers are better role models: Weight-averaged consistency
        targets improve semi-supervised deep learning results." NeurIPS 2017.
        Shu, Kou, Yang, Wang, Long. "Omni-Training for Data-Efficient Deep Learning."
        (self-distillation from an EMA teacher).
    """

    def __init__(self, student: torch.nn.Module, ema_decay: float = 0.99):
        self.ema_decay = _check_decay(ema_decay)
        self.module = copy.deepcopy(student).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, student: torch.nn.Module) -> None:
        """Move every teacher parameter towards the student's; copy buffers.

        Args:
            student: a module with the same parameters and buffers, in the same order, as the
                one the teacher was made from.
        """
        for teacher_p, student_p in zip(
            self.module.parameters(), student.parameters(), strict=True
        ):
            # lerp_(end, w) = start + w (end - start) = d start + (1 - d) end for w = 1 - d.
            teacher_p.lerp_(student_p, 1.0 - self.ema_decay)
        for teacher_b, student_b in zip(self.module.buffers(), student.buffers(), strict=True):
            teacher_b.copy_(student_b)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Evaluate the teacher module."""
        return self.module(*args, **kwargs)

    def state_dict(self) -> dict[str, Any]:
        """Teacher parameters, buffers and decay."""
        return {"module": self.module.state_dict(), "ema_decay": self.ema_decay}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`.

        Raises:
            ValueError: if the saved ``ema_decay`` is outside [0, 1).
        """
        ema_decay = _check_decay(state["ema_decay"])
        self.module.load_state_dict(state["module"])
        self.ema_decay = ema_decay


class TeacherState:
    """Mixin for a learner with an ``EMATeacher`` in ``self.teacher``: its state travels with it.

    Put it before the learner's base class (``class OmniAgent(TeacherState, Agent)``), so
    :meth:`state_dict` extends the base's state with the teacher and resuming restores both.
    """

    teacher: EMATeacher

    def state_dict(self) -> dict[str, Any]:
        """The base class's state plus the EMA teacher's."""
        return {**super().state_dict(), "teacher": self.teacher.state_dict()}  # type: ignore[misc]

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        super().load_state_dict(state)  # type: ignore[misc]
        self.teacher.load_state_dict(state["teacher"])
