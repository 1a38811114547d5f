"""Gaussian MLP policies.

A policy has one ordinary ``forward(obs, flow=None) -> Normal``. MAML evaluates it with other
parameters through ``torch.func.functional_call(policy, params, (obs,), {"flow": flow})``, so
there is no hand-written functional copy of the network.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.distributions import Normal

MIN_LOG_STD = math.log(1e-6)


def mlp(sizes: Sequence[int], activation: type[nn.Module] = nn.Tanh) -> nn.Sequential:
    """Linear layers of the given sizes with ``activation`` after every one."""
    layers: list[nn.Module] = []
    for d_in, d_out in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(d_in, d_out), activation()]
    return nn.Sequential(*layers)


def gaussian(mean: torch.Tensor, log_std: torch.Tensor) -> Normal:
    """A diagonal Gaussian; ``validate_args=False`` keeps it usable under ``torch.func.vmap``."""
    return Normal(mean, log_std.clamp_min(MIN_LOG_STD).exp(), validate_args=False)


class GaussianMLPPolicy(nn.Module):
    """``N(mu(o), diag(sigma^2))``: a tanh MLP mean and a state-independent log-std.

    Args:
        obs_dim: observation size.
        act_dim: action size.
        hidden: hidden layer sizes (64, 64 as in the MAML paper).
        init_std: initial standard deviation of every action dimension.
    """

    def __init__(
        self, obs_dim: int, act_dim: int, hidden: Sequence[int] = (64, 64), init_std: float = 1.0
    ):
        super().__init__()
        self.body = mlp([obs_dim, *hidden])
        self.mean = nn.Linear(hidden[-1] if hidden else obs_dim, act_dim)
        self.log_std = nn.Parameter(torch.full((act_dim,), math.log(init_std)))

    flows = (None,)

    def forward(self, obs: torch.Tensor, flow: str | None = None) -> Normal:
        """Action distribution for ``obs`` (..., obs_dim); a plain MLP has no flows."""
        if flow is not None:
            raise ValueError(f"GaussianMLPPolicy has a single flow; got flow={flow!r}")
        return gaussian(self.mean(self.body(obs)), self.log_std)

    def flow_parameter_names(self, flow: str | None = None) -> list[str]:
        """All parameters: the single flow uses every one."""
        if flow is not None:
            raise ValueError(f"GaussianMLPPolicy has a single flow; got flow={flow!r}")
        return [name for name, _ in self.named_parameters()]
