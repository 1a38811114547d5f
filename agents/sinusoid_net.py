"""The sinusoid regressors: a plain tanh MLP and the tri-flow Omni-Net with linear heads.

Split from :mod:`omnirl.agents.sinusoid` (the losses and learning rules) to keep modules short.
:func:`inner_params` says which of a regressor's parameters the inner SGD steps adapt.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from omnirl.agents.omni_net import OmniNet
from omnirl.agents.policies import mlp
from omnirl.functional import flow_params


class MLPRegressor(nn.Module):
    """``y = w . tanh-MLP(x) + b``: the plain network of ``maml``, ``pretrain`` and ``joint``.

    Args:
        hidden: hidden layer sizes (tanh).
        d_in: input size (1 for sinusoids).
    """

    flows = (None,)

    def __init__(self, hidden: Sequence[int] = (64, 64), d_in: int = 1):
        super().__init__()
        self.body = mlp([d_in, *hidden])
        self.head = nn.Linear(hidden[-1] if hidden else d_in, 1)

    def forward(self, x: torch.Tensor, flow: str | None = None) -> torch.Tensor:
        """Prediction ``(..., 1)`` for inputs ``(..., d_in)``; a plain MLP has no flows."""
        if flow is not None:
            raise ValueError(f"MLPRegressor has a single flow; got flow={flow!r}")
        return self.head(self.body(x))

    def flow_parameter_names(self, flow: str | None = None) -> list[str]:
        """All parameters: the single flow uses every one."""
        if flow is not None:
            raise ValueError(f"MLPRegressor has a single flow; got flow={flow!r}")
        return [name for name, _ in self.named_parameters()]


def omni_regressor(hidden: Sequence[int] = (64, 64), rank: int = 16, d_in: int = 1) -> OmniNet:
    """The tri-flow Omni-Net regressor: Omni-Layers (tanh) and one linear head per flow.

    ``model(x, flow)`` is the prediction ``(..., 1)`` of ``flow`` (joint, pre or meta); at
    initialisation the three flows compute the same function.
    """
    return OmniNet([d_in, *hidden], rank, lambda d: nn.Linear(d, 1))


def inner_params(
    model: nn.Module, flow: str | None, branches: bool = True
) -> dict[str, torch.Tensor]:
    """The live parameters the inner steps adapt: all that ``flow`` uses, or all but its branches.

    With ``branches=False`` the low-rank branch factors of an Omni-Net flow are left to the
    outer loop (meta-parameters, like MAML's initialisation) and the inner steps adapt the
    joint chunks and the flow's head. Adapting both factors ``U``, ``D`` of a branch makes the
    step on the folded weight ``W + U D`` larger than a plain layer's (``-alpha (g D^T D + U U^T
    g)`` on top of ``-alpha g``) and second order in alpha; on sinusoids the meta flow learned
    to make one such step and then oscillated over ten (results/README.md, sinusoid).
    """
    params = flow_params(model, flow)
    if branches:
        return params

    def is_branch(name: str) -> bool:
        part = name.split(".")
        return part[0] == "layers" and part[2] in ("pre", "meta")

    return {name: p for name, p in params.items() if not is_branch(name)}
