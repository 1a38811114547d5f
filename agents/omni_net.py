"""The tri-flow Omni-Net Gaussian policy (Shu et al., Omni-Training, section 4.1).

Every hidden layer is an Omni-Layer: a main chunk ``f_joint`` shared by all flows plus two
lightweight low-rank branches, ``f_pre`` and ``f_meta``::

    joint flow:  x_l = tanh(f_joint(x_{l-1}))
    pre flow:    x_l = tanh(f_joint(x_{l-1}) + f_pre(x_{l-1}))     (x_{l-1} of the pre flow)
    meta flow:   x_l = tanh(f_joint(x_{l-1}) + f_meta(x_{l-1}))    (x_{l-1} of the meta flow)

Each flow has its own Gaussian head. The branches' second factors start at zero and the heads
start as copies, so at initialisation the three flows are the same policy. One ordinary
``forward`` serves every flow; MAML evaluates it with adapted parameters through
``torch.func.functional_call``. :class:`OmniNet` holds the flow logic with any head; the
policy puts Gaussian heads on it, the sinusoid regressor (``omnirl.agents.sinusoid_net``)
linear ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.distributions import Normal
from torch.nn import functional as F

from omnirl.agents.policies import gaussian

FLOWS = ("joint", "pre", "meta")


class LowRankBranch(nn.Module):
    """The factors of ``Linear(d_in, r) -> Linear(r, d_out)``; the second starts at zero.

    :class:`OmniLayer` applies them folded into its joint weight.
    """

    def __init__(self, d_in: int, d_out: int, rank: int):
        super().__init__()
        self.down = nn.Linear(d_in, rank)
        self.up = nn.Linear(rank, d_out)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)


class OmniLayer(nn.Module):
    """A linear layer with a shared joint chunk and one low-rank branch per parallel flow."""

    def __init__(self, d_in: int, d_out: int, rank: int):
        super().__init__()
        self.joint = nn.Linear(d_in, d_out)
        self.pre = LowRankBranch(d_in, d_out, rank)
        self.meta = LowRankBranch(d_in, d_out, rank)

    def forward(self, x: torch.Tensor, flow: str) -> torch.Tensor:
        """Pre-activation of ``flow``: the joint chunk, plus the flow's branch if it has one."""
        if flow == "joint":
            return self.joint(x)
        branch = self.pre if flow == "pre" else self.meta
        # f_joint(x) + up(down(x)) = (W_j + W_u W_d) x + (b_j + W_u b_d + b_u): the branch is
        # folded into one d_out x d_in weight (a tiny matrix product), so a branch flow costs
        # per sample what the joint flow costs; gradients still reach every factor.
        up, down = branch.up, branch.down
        weight = self.joint.weight + up.weight @ down.weight
        bias = self.joint.bias + up.weight @ down.bias + up.bias
        return F.linear(x, weight, bias)


class GaussianHead(nn.Module):
    """Mean layer and state-independent log-std of one flow."""

    def __init__(self, d_in: int, act_dim: int, init_std: float):
        super().__init__()
        self.mean = nn.Linear(d_in, act_dim)
        self.log_std = nn.Parameter(torch.full((act_dim,), math.log(init_std)))

    def forward(self, x: torch.Tensor) -> Normal:
        """Action distribution from hidden features."""
        return gaussian(self.mean(x), self.log_std)


class OmniNet(nn.Module):
    """Omni-Layers (tanh) with one head per flow; the heads start as copies of the joint one.

    The flow-generic part of every Omni-Net: the policy below puts Gaussian heads on it, the
    sinusoid regressor (``omnirl.agents.sinusoid_net``) linear ones. ``forward(x, flow)`` returns
    whatever the head returns.

    Args:
        sizes: input size, then the hidden layer sizes.
        rank: rank r of the pre and meta branches.
        make_head: builds one flow's head from the last hidden size.
    """

    flows = FLOWS

    def __init__(self, sizes: Sequence[int], rank: int, make_head: Callable[[int], nn.Module]):
        super().__init__()
        self.layers = nn.ModuleList(
            OmniLayer(d_in, d_out, rank) for d_in, d_out in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.heads = nn.ModuleDict({flow: make_head(sizes[-1]) for flow in FLOWS})
        # Every flow starts as the joint flow's function: the branches add zero, and the heads
        # start as copies. Otherwise each flow's rollouts would be far off-policy for the
        # others from the first iteration on, and the joint flow reuses them.
        for flow in ("pre", "meta"):
            self.heads[flow].load_state_dict(self.heads["joint"].state_dict())

    def features(self, x: torch.Tensor, flow: str = "joint") -> torch.Tensor:
        """Last hidden features of ``flow``."""
        if flow not in FLOWS:
            raise ValueError(f"flow must be one of {', '.join(FLOWS)}; got {flow!r}")
        for layer in self.layers:
            x = torch.tanh(layer(x, flow))
        return x

    def forward(self, x: torch.Tensor, flow: str = "joint") -> Any:
        """The head of ``flow`` on the features of ``flow`` for ``x`` (..., d_in)."""
        return self.heads[flow](self.features(x, flow))

    def flow_parameter_names(self, flow: str) -> list[str]:
        """Names of the parameters ``flow`` uses: the joint chunks, its branches and its head."""
        if flow not in FLOWS:
            raise ValueError(f"flow must be one of {', '.join(FLOWS)}; got {flow!r}")

        def used(name: str) -> bool:
            part = name.split(".")
            if part[0] == "heads":
                return part[1] == flow
            return part[2] == "joint" or part[2] == flow

        return [name for name, _ in self.named_parameters() if used(name)]


class OmniNetPolicy(OmniNet):
    """Gaussian policy with three flows (joint, pre, meta) over shared Omni-Layers.

    Args:
        obs_dim: observation size.
        act_dim: action size.
        hidden: hidden layer sizes.
        rank: rank r of the pre and meta branches.
        init_std: initial standard deviation of every head.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: Sequence[int] = (64, 64),
        rank: int = 16,
        init_std: float = 1.0,
    ):
        super().__init__([obs_dim, *hidden], rank, lambda d: GaussianHead(d, act_dim, init_std))

    def forward(self, obs: torch.Tensor, flow: str = "joint") -> Normal:
        """Action distribution of ``flow`` for ``obs`` (..., obs_dim)."""
        return super().forward(obs, flow)
