"""Sinusoid regressors and their learning rules: ``omni``, ``maml``, ``pretrain``, ``joint``.

The supervised form of Omni-Training (DESIGN.md sections 6 and 9) on the same Omni-Layers as
the RL policy (:class:`~omnirl.agents.omni_net.OmniNet`), with mean squared error in place of
the policy-gradient surrogate:

- ``L_pre``: MSE of the pre flow on all points of the meta-batch (ordinary regression
  pre-training; the Baseline of the MAML paper).
- ``L_meta``: MAML. Each task's parameters take ``inner_steps`` SGD steps on the MSE of its K
  support points, ``theta'_b = theta - alpha grad MSE(S_b; theta)``; the loss is the MSE of the
  adapted flow on the task's query points, differentiated through the steps (second order
  unless ``first_order``).
- ``L_joint``: both of the above for the joint flow.
- ``R_pre``, ``R_meta``: squared differences to an EMA teacher's outputs; for the meta flow the
  teacher adapts on the same support points with its own first-order, detached steps.

``O = (L_pre + lambda R_pre) + (L_meta + lambda R_meta) + L_joint``, one Adam step on all
parameters, then the EMA update. Each loss is a small pure function below.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn

from omnirl.agents.base import check_finite
from omnirl.agents.omni_net import OmniNet
from omnirl.agents.policies import mlp
from omnirl.ema import EMATeacher, TeacherState
from omnirl.maml import detached, flow_params, sgd_step, task_call, task_params
from omnirl.pg import Params


# ------------------------------------------------------------------------------- models
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


# ------------------------------------------------------------------------------- losses
class RegressionBatch(NamedTuple):
    """A meta-batch: K support and Q query points for each of B tasks, shaped ``(B, N, 1)``."""

    x_support_BK1: torch.Tensor
    y_support_BK1: torch.Tensor
    x_query_BQ1: torch.Tensor
    y_query_BQ1: torch.Tensor

    @classmethod
    def from_arrays(cls, *arrays_BN: Any) -> RegressionBatch:
        """From the ``(B, N)`` numpy arrays of :func:`omnirl.envs.sinusoid.sample_batch`."""
        return cls(*(torch.as_tensor(a, dtype=torch.float32).unsqueeze(-1) for a in arrays_BN))

    @property
    def x_all_BM1(self) -> torch.Tensor:
        """Support and query inputs together (what pre-training regresses on)."""
        return torch.cat([self.x_support_BK1, self.x_query_BQ1], dim=1)

    @property
    def y_all_BM1(self) -> torch.Tensor:
        """Support and query targets together."""
        return torch.cat([self.y_support_BK1, self.y_query_BQ1], dim=1)


def task_mse(pred_BN1: torch.Tensor, target_BN1: torch.Tensor) -> torch.Tensor:
    """Mean squared error of every task, ``(B,)``: ``mean_n (pred_bn - target_bn)^2``."""
    return (pred_BN1 - target_BN1).square().mean(dim=(1, 2))


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


def adaptation_steps(
    model: nn.Module,
    params: Params,
    x_BK1: torch.Tensor,
    y_BK1: torch.Tensor,
    flow: str | None,
    lrs: Sequence[float],
    first_order: bool = False,
) -> Iterator[dict[str, torch.Tensor]]:
    """Adapt ``params`` to every task; yield the stacked parameters ``(B, ...)`` after each step.

    Step i is ``theta_b - lrs[i] grad MSE(S_b; theta_b)`` for every task b at once (per-task
    parameter copies, one ``vmap``); with ``first_order`` the steps are not differentiated
    through.
    """
    with torch.enable_grad():  # the copies must carry gradient even under no_grad
        params_B = task_params(params, x_BK1.shape[0])
    for lr in lrs:
        # Grad mode is set per step, never held across a yield (it would leak to the caller).
        with torch.enable_grad():
            losses_B = task_mse(task_call(model, params_B, x_BK1, flow=flow), y_BK1)
            params_B = sgd_step(params_B, losses_B.sum(), lr, first_order)
        yield params_B


def adapt(
    model: nn.Module,
    params: Params,
    x_BK1: torch.Tensor,
    y_BK1: torch.Tensor,
    flow: str | None,
    lrs: Sequence[float],
    first_order: bool = False,
) -> dict[str, torch.Tensor]:
    """The stacked parameters after all of :func:`adaptation_steps` (``params`` if no step)."""
    # Second order keeps every intermediate step in the graph anyway; the list costs nothing.
    steps = list(adaptation_steps(model, params, x_BK1, y_BK1, flow, lrs, first_order))
    return steps[-1] if steps else task_params(params, x_BK1.shape[0])


def maml_loss(
    model: nn.Module,
    batch: RegressionBatch,
    flow: str | None,
    lrs: Sequence[float],
    first_order: bool = False,
    branches: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """MAML's outer loss ``mean_b MSE(Q_b; theta'_b)`` with ``theta'_b`` adapted on ``S_b``.

    ``branches``: whether the inner steps adapt the flow's branch factors (:func:`inner_params`).

    Returns:
        The loss and the adapted predictions on the query points ``(B, Q, 1)``.
    """
    adapted = adapt(
        model,
        inner_params(model, flow, branches),
        batch.x_support_BK1,
        batch.y_support_BK1,
        flow,
        lrs,
        first_order,
    )
    pred_BQ1 = task_call(model, adapted, batch.x_query_BQ1, flow=flow)
    return task_mse(pred_BQ1, batch.y_query_BQ1).mean(), pred_BQ1


def distill(student_BN1: torch.Tensor, teacher_BN1: torch.Tensor) -> torch.Tensor:
    """Self-distillation ``R = mean (student - teacher)^2``; the teacher is a constant."""
    return (student_BN1 - teacher_BN1.detach()).square().mean()


# ------------------------------------------------------------------------- learning rules
class RegressionAgent:
    """A learning rule around one regressor, with an Adam outer step on the sum of its losses.

    Args:
        cfg: the sinusoid config (``omnirl.regression.SinusoidConfig``).

    Attributes:
        eval_flow: the flow adapted and evaluated at test time.
        model: the regressor.
    """

    name: ClassVar[str] = ""
    eval_flow: ClassVar[str | None] = None

    def __init__(self, cfg: Any):
        self.cfg = cfg
        self.model = self.make_model()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.outer_lr)

    def make_model(self) -> nn.Module:
        """A plain tanh MLP; the Omni agent overrides this with the Omni-Net."""
        return MLPRegressor(self.cfg.hidden_sizes)

    @property
    def adapt_branches(self) -> bool:
        """Whether inner steps adapt Omni-Net branch factors (no branches: no difference)."""
        return self.cfg.adapt_branches

    @property
    def inner_lrs(self) -> list[float]:
        """Inner learning rate of each training inner step."""
        return [self.cfg.inner_lr] * self.cfg.inner_steps

    def losses(self, batch: RegressionBatch) -> dict[str, torch.Tensor]:
        """The terms of the outer objective (summed)."""
        raise NotImplementedError

    def update(self, batch: RegressionBatch) -> dict[str, float]:
        """One Adam step on the sum of :meth:`losses`; returns ``train/`` metrics.

        Raises:
            FloatingPointError: a non-finite loss (nothing is updated).
        """
        terms = self.losses(batch)
        loss = sum(terms.values(), torch.zeros(()))
        check_finite(loss, "outer loss")
        self.optimizer.zero_grad()
        loss.backward()
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in self.model.parameters()])
        self.optimizer.step()
        self.after_step()
        metrics = {f"train/{key}": float(value.detach()) for key, value in terms.items()}
        metrics["train/loss"] = float(loss.detach())
        metrics["train/grad_norm"] = float(grad_norm)
        return metrics

    def after_step(self) -> None:
        """Called after every outer step (the Omni agent updates its teacher here)."""

    def adapted_predictions(
        self,
        x_support_BK1: torch.Tensor,
        y_support_BK1: torch.Tensor,
        x_BM1: torch.Tensor,
        lrs: Sequence[float],
        flow: str | None = None,
    ) -> torch.Tensor:
        """Predictions at ``x_BM1`` after 0, 1, ..., ``len(lrs)`` SGD steps on the support points.

        The test protocol: step i at ``lrs[i]`` on the support MSE of each task, first order
        (nothing differentiates through test-time steps), the model itself untouched.

        Args:
            x_support_BK1: support inputs, ``(B, K, 1)``.
            y_support_BK1: support targets.
            x_BM1: where to predict, ``(B, M, 1)``.
            lrs: one learning rate per step.
            flow: the flow to adapt (default: :attr:`eval_flow`).

        Returns:
            ``(len(lrs) + 1, B, M, 1)``, detached.
        """
        flow = self.eval_flow if flow is None else flow
        params = detached(inner_params(self.model, flow, self.adapt_branches))
        steps = adaptation_steps(
            self.model, params, x_support_BK1, y_support_BK1, flow, lrs, first_order=True
        )
        with torch.no_grad():
            start = task_params(params, x_BM1.shape[0])
            predictions = [task_call(self.model, start, x_BM1, flow=flow)]
            for params_B in steps:
                predictions.append(task_call(self.model, params_B, x_BM1, flow=flow))
        return torch.stack(predictions)

    def state_dict(self) -> dict[str, Any]:
        """Model and optimizer: everything needed to continue training bit for bit."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])


class PretrainRegression(RegressionAgent):
    """``pretrain`` (the Baseline): regression on all tasks' points at once, fine-tuned at test.

    Without the task as an input it can only learn the mean over tasks; that is the point of
    the baseline (Finn et al. 2017, section 5.1, "pretrained").

    References:
        Finn, Abbeel, Levine. "Model-Agnostic Meta-Learning for Fast Adaptation of Deep
        Networks." ICML 2017.
    """

    name = "pretrain"

    def losses(self, batch: RegressionBatch) -> dict[str, torch.Tensor]:
        """``{"pre": MSE over every point}``."""
        pred = self.model(batch.x_all_BM1)
        return {"pre": task_mse(pred, batch.y_all_BM1).mean()}


class MAMLRegression(RegressionAgent):
    """``maml``: second-order MAML with SGD inner steps and an Adam outer step.

    References:
        Finn, Abbeel, Levine. "Model-Agnostic Meta-Learning for Fast Adaptation of Deep
        Networks." ICML 2017.
    """

    name = "maml"

    def losses(self, batch: RegressionBatch) -> dict[str, torch.Tensor]:
        """``{"meta": MAML's query MSE after adaptation}``."""
        loss, _ = maml_loss(self.model, batch, None, self.inner_lrs, self.cfg.first_order)
        return {"meta": loss}


class JointRegression(RegressionAgent):
    """``joint`` (Joint-Training): one plain network trained on ``L_pre + L_meta`` together.

    References:
        Shu, Kou, Yang, Wang, Long. "Omni-Training for Data-Efficient Deep Learning."
        (the Joint-Training baseline).
    """

    name = "joint"

    def losses(self, batch: RegressionBatch) -> dict[str, torch.Tensor]:
        """``{"pre": ..., "meta": ...}`` on the same network."""
        pred = self.model(batch.x_all_BM1)
        meta, _ = maml_loss(self.model, batch, None, self.inner_lrs, self.cfg.first_order)
        return {"pre": task_mse(pred, batch.y_all_BM1).mean(), "meta": meta}


class OmniRegression(TeacherState, RegressionAgent):
    """``omni``: Omni-Training on the tri-flow Omni-Net regressor.

    Pre flow trained by regression pre-training, meta flow by MAML, joint flow by both, and
    EMA self-distillation of the pre and meta flows (``distill_weight`` lambda, ``ema_decay``).
    Tested and evaluated on the meta flow.

    References:
        Shu, Kou, Yang, Wang, Long. "Omni-Training for Data-Efficient Deep Learning."
        Finn, Abbeel, Levine. "Model-Agnostic Meta-Learning for Fast Adaptation of Deep
        Networks." ICML 2017.
        Tarvainen, Valpola. "Mean teachers are better role models." NeurIPS 2017.
    """

    name = "omni"
    eval_flow = "meta"

    def __init__(self, cfg: Any):
        super().__init__(cfg)
        self.teacher = EMATeacher(self.model, cfg.ema_decay)

    def make_model(self) -> nn.Module:
        """The tri-flow Omni-Net regressor."""
        return omni_regressor(self.cfg.hidden_sizes, self.cfg.branch_rank)

    def losses(self, batch: RegressionBatch) -> dict[str, torch.Tensor]:
        """``pre``, ``meta``, their weighted distillation terms, ``joint_pre``, ``joint_meta``."""
        cfg, model, teacher = self.cfg, self.model, self.teacher.module
        x_all, y_all = batch.x_all_BM1, batch.y_all_BM1
        pred_pre = model(x_all, flow="pre")
        meta, pred_meta = maml_loss(
            model, batch, "meta", self.inner_lrs, cfg.first_order, self.adapt_branches
        )
        # The teacher adapts with its own first-order steps from detached copies: it never
        # receives gradients, and its targets do not move with the student.
        teacher_adapted = adapt(
            teacher,
            detached(inner_params(teacher, "meta", self.adapt_branches)),
            batch.x_support_BK1,
            batch.y_support_BK1,
            "meta",
            self.inner_lrs,
            first_order=True,
        )
        with torch.no_grad():
            teacher_pre = teacher(x_all, flow="pre")
            teacher_meta = task_call(teacher, teacher_adapted, batch.x_query_BQ1, flow="meta")
        joint_meta, _ = maml_loss(model, batch, "joint", self.inner_lrs, cfg.first_order)
        return {
            "pre": task_mse(pred_pre, y_all).mean(),
            "pre_distill": cfg.distill_weight * distill(pred_pre, teacher_pre),
            "meta": meta,
            "meta_distill": cfg.distill_weight * distill(pred_meta, teacher_meta),
            "joint_pre": task_mse(model(x_all, flow="joint"), y_all).mean(),
            "joint_meta": joint_meta,
        }

    def after_step(self) -> None:
        """EMA teacher update: ``theta~ <- d theta~ + (1 - d) theta``."""
        self.teacher.update(self.model)
