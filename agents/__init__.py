"""omnirl policies and learning rules (uses the omnirl core and torch, never an env class)."""

from omnirl.agents.policies import GaussianMLPPolicy

__all__ = ["GaussianMLPPolicy"]
