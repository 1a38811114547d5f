"""Name -> family and name -> agent registries, resolved lazily.

The core never imports ``omnirl.envs`` or ``omnirl.agents`` statically: families register
themselves when ``omnirl.envs`` is imported (:func:`families` does that on first use), and
agents are ``"module:Class"`` strings, as Gymnasium's ``register(entry_point=...)``. Users add
their own with :func:`register_family` and :func:`register_agent`.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from typing import Any, Protocol


class TaskDistribution(Protocol):
    """What a family's task space offers (see ``omnirl.envs.tasks.TaskSpace``)."""

    summary: str

    def sample(self, n: int, rng: Any) -> list[dict[str, Any]]: ...  # noqa: D102

    def validate(self, task: Any) -> dict[str, Any]: ...  # noqa: D102

    def describe(self) -> str: ...  # noqa: D102


@dataclass(frozen=True)
class Family:
    """A task family: a short name, its Gymnasium id and its task distribution."""

    name: str
    env_id: str
    tasks: TaskDistribution

    @property
    def horizon(self) -> int | None:
        """The episode horizon registered with Gymnasium (``max_episode_steps``)."""
        import gymnasium

        return gymnasium.spec(self.env_id).max_episode_steps


class UnknownNameError(ValueError):
    """A family or agent name that is not registered; the message lists the known ones."""


_FAMILIES: dict[str, Family] = {}
_AGENTS: dict[str, str] = {
    "omni": "omnirl.agents.omni:OmniAgent",
    "maml": "omnirl.agents.maml:MAMLAgent",
    "pretrain": "omnirl.agents.pretrain:PretrainAgent",
    "joint": "omnirl.agents.joint:JointAgent",
    "random": "omnirl.agents.random:RandomAgent",
    "oracle": "omnirl.agents.oracle:OracleAgent",
}
_BUILTIN_FAMILIES_LOADED = False


def register_family(name: str, env_id: str, tasks: TaskDistribution) -> None:
    """Register a family under ``name`` (e.g. ``"halfcheetah-vel"``) for Gymnasium id ``env_id``."""
    _FAMILIES[name] = Family(name, env_id, tasks)


def register_agent(name: str, entry_point: str) -> None:
    """Register an agent class by ``"module:Class"`` entry point."""
    _AGENTS[name] = entry_point


def agent_names() -> list[str]:
    """Names of the registered agents."""
    return list(_AGENTS)


def load_agent(name: str) -> Any:
    """Import and return the agent class registered as ``name``.

    Raises:
        UnknownNameError: the message lists the known agents.
    """
    if name not in _AGENTS:
        raise _unknown("agent", "agents", name, sorted(_AGENTS))
    module, _, attr = _AGENTS[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def make_agent(cfg: Any) -> Any:
    """A new ``cfg.agent`` for ``cfg.family``, sized by the family's spaces."""
    import gymnasium

    env = gymnasium.make(get_family(cfg.family).env_id)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    env.close()
    return load_agent(cfg.agent)(cfg, obs_dim, act_dim)


def families() -> dict[str, Family]:
    """All registered families (importing ``omnirl.envs`` once registers the built-in ones)."""
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
    """Look a family up by short name or by Gymnasium id.

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
