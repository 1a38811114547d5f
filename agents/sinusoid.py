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
parameters (:func:`omnirl.optim.adam_step`), then the EMA update. Each loss is a small pure
function below. Every learner implements :class:`omnirl.learner.Learner` (kind
``"sinusoid"``); its ``update`` takes the numpy :class:`omnirl.envs.sinusoid.MetaBatch`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn

from omnirl.agents.sinusoid_net import MLPRegressor, inner_params, omni_regressor
from omnirl.ema import EMATeacher, TeacherState
from omnirl.functional import Params, detached, sgd_step, task_call, task_params
from omnirl.optim import adam_step


# ------------------------------------------------------------------------------- losses
class RegressionBatch(NamedTuple):
    """A meta-batch as tensors: K support and Q query points of B tasks, ``(B, N, 1)``."""

    x_support_BK1: torch.Tensor
    y_support_BK1: torch.Tensor
    x_query_BQ1: torch.Tensor
    y_query_BQ1: torch.Tensor

    @classmethod
    def from_arrays(cls, *arrays_BN: Any) -> RegressionBatch:
        """From the ``(B, N)`` numpy arrays of a :class:`omnirl.envs.sinusoid.MetaBatch`."""
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
class RegressionLearner:
    """A learning rule around one regressor, with an Adam outer step on its weighted terms.

    Args:
        cfg: the sinusoid config (``omnirl.sinusoid.config.SinusoidConfig``).

    Attributes:
        eval_flow: the flow adapted and evaluated at test time.
        model: the regressor.
    """

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "sinusoid"
    eval_flow: ClassVar[str | None] = None
    adapts: ClassVar[bool] = True
    trains: ClassVar[bool] = True

    def __init__(self, cfg: Any):
        self.cfg = cfg
        self.model = self.make_model()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.outer_lr)

    def make_model(self) -> nn.Module:
        """A plain tanh MLP; the Omni learner overrides this with the Omni-Net."""
        return MLPRegressor(self.cfg.hidden_sizes)

    @property
    def flows(self) -> tuple[str | None, ...]:
        """The regressor's flows (``(None,)`` for the plain MLP)."""
        return tuple(self.model.flows)

    @property
    def adapt_branches(self) -> bool:
        """Whether inner steps adapt Omni-Net branch factors (no branches: no difference)."""
        return self.cfg.adapt_branches

    @property
    def inner_lrs(self) -> list[float]:
        """Inner learning rate of each training inner step."""
        return [self.cfg.inner_lr] * self.cfg.inner_steps

    @property
    def loss_weights(self) -> dict[str, float]:
        """The weight of each term in the objective (1 where not listed)."""
        return {}

    def losses(self, batch: RegressionBatch) -> dict[str, torch.Tensor]:
        """The terms of the outer objective, unweighted (``<term>_mse``, ``<term>_distill``)."""
        raise NotImplementedError

    def update(self, data: Any) -> dict[str, float]:
        """One Adam step on the weighted sum of :meth:`losses`; returns ``train/`` metrics.

        Args:
            data: an :class:`omnirl.envs.sinusoid.MetaBatch` (numpy ``(B, K)``, ``(B, Q)``).

        Raises:
            FloatingPointError: a non-finite loss (nothing is updated).
        """
        terms = self.losses(RegressionBatch.from_arrays(*data))
        weights = self.loss_weights
        # Summed in the terms' order from zero, so the loss is the same float as ever.
        loss = sum(
            (weights[k] * v if k in weights else v for k, v in terms.items()), torch.zeros(())
        )
        grad_norm = adam_step(self.optimizer, loss, list(self.model.parameters()))
        self.after_step()
        metrics = {f"train/{key}": float(value.detach()) for key, value in terms.items()}
        metrics["train/loss"] = float(loss.detach())
        metrics["train/grad_norm"] = grad_norm
        return metrics

    def after_step(self) -> None:
        """Called after every outer step (the Omni learner updates its teacher here)."""

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


class PretrainRegression(RegressionLearner):
    """``pretrain`` (the Baseline): regression on all tasks' points at once, fine-tuned at test.

    Without the task as an input it can only learn the mean over tasks; that is the point of
    the baseline (Finn et al. 2017, section 5.1, "pretrained").

    References:
        Finn, Abbeel, Levine. "Model-Agnostic Meta-Learning for Fast Adaptation of Deep
        Networks." ICML 2017.
    """

    name = "pretrain"

    def losses(self, batch: RegressionBatch) -> dict[str, torch.Tensor]:
        """``{"pre_mse": MSE over every point}``."""
        pred = self.model(batch.x_all_BM1)
        return {"pre_mse": task_mse(pred, batch.y_all_BM1).mean()}


class MAMLRegression(RegressionLearner):
    """``maml``: second-order MAML with SGD inner steps and an Adam outer step.

    References:
        Finn, Abbeel, Levine. "Model-Agnostic Meta-Learning for Fast Adaptation of Deep
        Networks." ICML 2017.
    """

    name = "maml"

    def losses(self, batch: RegressionBatch) -> dict[str, torch.Tensor]:
        """``{"meta_mse": MAML's query MSE after adaptation}``."""
        loss, _ = maml_loss(self.model, batch, None, self.inner_lrs, self.cfg.first_order)
        return {"meta_mse": loss}


class JointRegression(RegressionLearner):
    """``joint`` (Joint-Training): one plain network trained on ``L_pre + L_meta`` together.

    References:
        Shu, Kou, Yang, Wang, Long. "Omni-Training for Data-Efficient Deep Learning."
        (the Joint-Training baseline).
    """

    name = "joint"

    def losses(self, batch: RegressionBatch) -> dict[str, torch.Tensor]:
        """``{"pre_mse": ..., "meta_mse": ...}`` on the same network."""
        pred = self.model(batch.x_all_BM1)
        meta, _ = maml_loss(self.model, batch, None, self.inner_lrs, self.cfg.first_order)
        return {"pre_mse": task_mse(pred, batch.y_all_BM1).mean(), "meta_mse": meta}


class OmniRegression(TeacherState, RegressionLearner):
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

    @property
    def loss_weights(self) -> dict[str, float]:
        """The weight lambda of both distillation terms (logged unweighted, weighted here)."""
        weight = self.cfg.distill_weight
        return {"pre_distill": weight, "meta_distill": weight}

    def losses(self, batch: RegressionBatch) -> dict[str, torch.Tensor]:
        """``L_pre``, ``R_pre``, ``L_meta``, ``R_meta`` and the joint flow's two MSEs."""
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
            "pre_mse": task_mse(pred_pre, y_all).mean(),
            "pre_distill": distill(pred_pre, teacher_pre),
            "meta_mse": meta,
            "meta_distill": distill(pred_meta, teacher_meta),
            "joint_pre_mse": task_mse(model(x_all, flow="joint"), y_all).mean(),
            "joint_meta_mse": joint_meta,
        }

    def after_step(self) -> None:
        """EMA teacher update: ``theta~ <- d theta~ + (1 - d) theta``."""
        self.teacher.update(self.model)
