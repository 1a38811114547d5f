"""``random``: an untrained policy, adapted at test time like the others (a floor to beat)."""

from __future__ import annotations

from omnirl.agents.base import Agent


class RandomAgent(Agent):
    """A randomly initialised plain policy; training only saves the initial parameters."""

    name = "random"
    trains = False
