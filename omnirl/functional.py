"""Functional parameter helpers shared by every problem kind: flows, per-task copies, SGD steps.

Models are never mutated: they are evaluated with parameter dicts through
``torch.func.functional_call``, and an inner step returns a new dict (PyTorch's functorch MAML
example). The RL inner step (:mod:`omnirl.maml`) and the supervised ones use the same pieces.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch.func import functional_call, vmap

Params = Mapping[str, torch.Tensor]


def flow_params(policy: torch.nn.Module, flow: str | None) -> dict[str, torch.Tensor]:
    """The live parameters ``flow`` uses, by name (gradients flow to the module's parameters)."""
    named = dict(policy.named_parameters())
    return {name: named[name] for name in policy.flow_parameter_names(flow)}


def task_params(params: Params, num_tasks: int) -> dict[str, torch.Tensor]:
    """One copy of ``params`` per task, ``(B, ...)``, still differentiable w.r.t. ``params``."""
    return {name: p.unsqueeze(0).expand(num_tasks, *p.shape) for name, p in params.items()}


def unstack(params_B: Params) -> list[dict[str, torch.Tensor]]:
    """Per-task parameter dicts from stacked ``(B, ...)`` ones."""
    num_tasks = next(iter(params_B.values())).shape[0]
    return [{name: p[b] for name, p in params_B.items()} for b in range(num_tasks)]


def sgd_step(
    params: Params, loss: torch.Tensor, lr: float, first_order: bool = False
) -> dict[str, torch.Tensor]:
    """The generic inner step: ``{name: p - lr * dloss/dp}``, a new dict (``params`` untouched).

    With stacked per-task copies (:func:`task_params`) and ``loss`` the sum of the per-task
    losses, every task gets its own gradient from one backward pass. ``create_graph=not
    first_order``: the outer loss differentiates through the step (second order) unless asked
    not to. The RL inner step (:mod:`omnirl.maml`) and the supervised ones both use it.
    """
    grads = torch.autograd.grad(loss, list(params.values()), create_graph=not first_order)
    return {name: p - lr * g for (name, p), g in zip(params.items(), grads, strict=True)}


def task_call(
    module: torch.nn.Module, params_B: Params, inputs_B: torch.Tensor, **kwargs: Any
) -> Any:
    """``module(inputs_B[b], **kwargs)`` with parameters ``{k: v[b]}`` for every task b at once.

    One ``torch.func.vmap`` of ``functional_call`` over the leading task axis (the supervised
    counterpart of :func:`omnirl.pg.task_dist`); ``params_B`` may cover only some parameters.
    """

    def one_task(params: Params, inputs: torch.Tensor) -> Any:
        return functional_call(module, dict(params), (inputs,), kwargs)

    return vmap(one_task)(dict(params_B), inputs_B)


def detached(params: Params) -> dict[str, torch.Tensor]:
    """Leaf copies that require grad: a starting point for adaptation without outer gradients."""
    return {name: p.detach().requires_grad_() for name, p in params.items()}
