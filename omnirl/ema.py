"""The EMA teacher of Omni-Training's self-distillation."""

from __future__ import annotations

import copy
from typing import Any

import torch


class EMATeacher:
    """An exponential moving average of a student module: ``theta~ <- d theta~ + (1 - d) theta``.

    The teacher is a deep copy kept in eval mode with ``requires_grad`` off: it never receives
    gradients, it only follows the student after every outer step.

    Args:
        student: the module to follow.
        ema_decay: d in [0, 1).

    References:
        Tarvainen, Valpola. "Mean teachers are better role models." NeurIPS 2017.
        Shu, Kou, Yang, Wang, Long. "Omni-Training for Data-Efficient Deep Learning."
    """

    def __init__(self, student: torch.nn.Module, ema_decay: float = 0.99):
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
        self.ema_decay = ema_decay
        self.module = copy.deepcopy(student).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, student: torch.nn.Module) -> None:
        """Move every teacher parameter towards the student's; copy buffers."""
        for teacher_p, student_p in zip(
            self.module.parameters(), student.parameters(), strict=True
        ):
            teacher_p.lerp_(student_p, 1.0 - self.ema_decay)
        for teacher_b, student_b in zip(self.module.buffers(), student.buffers(), strict=True):
            teacher_b.copy_(student_b)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Evaluate the teacher module."""
        return self.module(*args, **kwargs)

    def state_dict(self) -> dict[str, Any]:
        """Teacher parameters and decay."""
        return {"module": self.module.state_dict(), "ema_decay": self.ema_decay}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.module.load_state_dict(state["module"])
        self.ema_decay = state["ema_decay"]
