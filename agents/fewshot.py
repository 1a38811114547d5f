"""Few-shot classification learners on the tri-flow Omni conv backbone (Shu et al., Omni-Training).

Learning rules: ``omni`` (pre flow = Baseline: linear classifier + cross-entropy; meta flow =
ProtoNet; joint flow trained with both; EMA self-distillation), ``pretrain`` (Baseline alone),
``protonet`` (ProtoNet alone) and ``joint`` (one plain network trained on both losses). The
backbone and the classifiers are in :mod:`omnirl.agents.fewshot_net`.

Every learner is an :class:`omnirl.learner.Learner` of kind ``fewshot``: ``update(draw)`` takes
one training draw of uint8 arrays (``omnirl.envs.fewshot.TrainingDraw``: a batch and/or an
episode), makes the tensors and takes one Adam step. At test time a learner embeds images
(:meth:`FewShotLearner.embed`) and classifies episodes of features
(:meth:`FewShotLearner.classify`) with prototypes or a fine-tuned linear layer.
"""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from omnirl.agents.fewshot_net import (
    OmniConvNet,
    accuracy,
    as_input,
    episode_labels,
    finetune_predictions,
    protonet_loss,
    prototype_predictions,
)
from omnirl.agents.omni_net import FLOWS
from omnirl.ema import EMATeacher, TeacherState
from omnirl.optim import adam_step
from omnirl.pg import distill_loss


# ---------------------------------------------------------------------------------- data
class Batch(NamedTuple):
    """A pre-training batch: images (N, C, H, W) of the training classes and their labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor


class EpisodeBatch(NamedTuple):
    """A training episode: support then query images, class-major, in one tensor.

    Attributes:
        images: (W*K + W*Q, C, H, W): the W*K support images, then the W*Q queries.
        way: W.
        shot: K.
        queries: Q.
    """

    images: torch.Tensor
    way: int
    shot: int
    queries: int

    def split(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features of :attr:`images` as support (W, K, D) and query (W, Q, D)."""
        n = self.way * self.shot
        return (
            features[:n].reshape(self.way, self.shot, -1),
            features[n:].reshape(self.way, self.queries, -1),
        )


def as_tensors(draw: Any) -> tuple[Batch | None, EpisodeBatch | None]:
    """A training draw's uint8 arrays (``omnirl.envs.fewshot.TrainingDraw``) as network input."""
    batch = episode = None
    if draw.batch is not None:
        batch = Batch(as_input(draw.batch.images_NCHW), torch.from_numpy(draw.batch.labels_N))
    if draw.episode is not None:
        ep = draw.episode
        episode = EpisodeBatch(as_input(ep.images_NCHW), ep.way, ep.shot, ep.queries)
    return batch, episode


def pretrain_loss(
    net: nn.Module, batch: Batch, flow: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Baseline loss ``CE(H_flow(f_flow(x)), y)``; returns (loss, logits, accuracy)."""
    logits = net(batch.images, flow)
    return F.cross_entropy(logits, batch.labels), logits, accuracy(logits, batch.labels)


def episode_loss(
    net: nn.Module, episode: EpisodeBatch, flow: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ProtoNet loss of ``flow`` on one episode; returns (loss, query logits, accuracy).

    Support and queries go through the network in one pass (one set of batch-norm statistics).
    """
    support, query = episode.split(net.features(episode.images, flow))
    loss, logits = protonet_loss(support, query)
    return loss, logits, accuracy(logits, episode_labels(episode.way, episode.queries))


def consistency_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """``R = mean_n mean_c (softmax(s)_nc - softmax(t)_nc)^2``, the teacher detached.

    Omni-Training's self-distillation as squared differences of outputs; for classifiers the
    outputs compared are class probabilities, as in Mean Teacher's consistency cost. Raw
    ProtoNet logits ``-||f(x) - c||^2`` have no fixed scale: their squared difference was ~10
    after one Adam step here and, weighted by lambda, drowned the classification losses.
    """
    student, teacher = student_logits.softmax(-1), teacher_logits.softmax(-1)
    return distill_loss(student, teacher, torch.ones(len(student)))  # every row counts


# -------------------------------------------------------------------------------- learners
class FewShotLearner:
    """A few-shot learning rule around one network, trained with Adam.

    Subclasses define :meth:`objective`. Attributes say what a training draw holds
    (``uses_batch``: a pre-training batch, ``uses_episode``: an episode) and how a flow is
    tested (:meth:`classifier`). A plain Conv-4 is the joint flow alone (``model_flows``).

    Args:
        cfg: the few-shot config (``omnirl.fewshot.config.FewShotConfig``).
        num_classes: training classes (the size of the linear heads).
    """

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "fewshot"
    model_flows: ClassVar[tuple[str, ...]] = ("joint",)
    heads: ClassVar[tuple[str, ...]] = ()
    eval_flow: ClassVar[str | None] = "joint"
    adapts: ClassVar[bool] = True  # to each test episode's support set (prototypes or fine-tuning)
    trains: ClassVar[bool] = True
    uses_batch: ClassVar[bool] = False
    uses_episode: ClassVar[bool] = False

    def __init__(self, cfg: Any, num_classes: int):
        self.cfg = cfg
        self.net = OmniConvNet(
            num_classes, cfg.image_size, cfg.channels, 3, self.model_flows, self.heads
        )
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=cfg.lr)

    @property
    def flows(self) -> tuple[str | None, ...]:
        """The network's flows (``("joint",)`` for a plain Conv-4)."""
        return self.net.flows

    def classifier(self, flow: str) -> str:
        """How ``flow`` is tested: ``"finetune"`` (new linear layer) or ``"protonet"``."""
        return "protonet"

    def objective(
        self, batch: Batch | None, episode: EpisodeBatch | None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss to minimise and the metrics to log (``train/<term>_<loss>``)."""
        raise NotImplementedError

    def update(self, data: Any) -> dict[str, float]:
        """One Adam step on :meth:`objective` for one training draw; the metrics (``train/...``).

        Args:
            data: an ``omnirl.envs.fewshot.TrainingDraw`` (uint8 images; tensors are made here).

        Raises:
            FloatingPointError: the loss is not finite (nothing is updated).
        """
        self.net.train()
        # Training-mode forwards move batch-norm statistics: kept to restore on a bad loss.
        saved = [b.clone() for b in self._buffers()]
        loss, metrics = self.objective(*as_tensors(data))
        try:
            grad_norm = adam_step(self.optimizer, loss, list(self.net.parameters()))
        except FloatingPointError:
            with torch.no_grad():
                for buffer, old in zip(self._buffers(), saved, strict=True):
                    buffer.copy_(old)
            raise
        self.after_step()
        return {
            "train/loss": loss.item(),
            "train/grad_norm": grad_norm,
            **{k: float(v) for k, v in metrics.items()},
        }

    def modules(self) -> list[nn.Module]:
        """The networks a training step runs (their batch-norm statistics move in it)."""
        return [self.net]

    def _buffers(self) -> list[torch.Tensor]:
        return [b for module in self.modules() for b in module.buffers()]

    def after_step(self) -> None:
        """Hook after every optimizer step (the EMA teacher's update)."""

    @torch.no_grad()
    def embed(self, images_NCHW: np.ndarray, flow: str, chunk: int = 500) -> torch.Tensor:
        """Test-time features of ``flow`` for uint8 images (eval mode: running batch-norm stats).

        Images become float ``chunk`` at a time (12,000 mini-ImageNet test images would take
        1 GB as one float tensor).
        """
        self.net.eval()
        parts = range(0, len(images_NCHW), chunk)
        return torch.cat(
            [self.net.features(as_input(images_NCHW[i : i + chunk]), flow) for i in parts]
        )

    def classify(
        self,
        support_EWKD: torch.Tensor,
        query_EWQD: torch.Tensor,
        flow: str,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """The label (E, W*Q) of every query of E episodes of ``flow``'s features, as tested.

        Rows are class-major (query ``w * Q + q`` is of class ``w``). ``generator`` seeds the
        fine-tuned layers (:func:`~omnirl.agents.fewshot_net.finetune_predictions`).
        """
        if self.classifier(flow) == "finetune":
            return finetune_predictions(support_EWKD, query_EWQD, generator)
        return prototype_predictions(support_EWKD, query_EWQD)

    def state_dict(self) -> dict[str, Any]:
        """Network and optimizer."""
        return {"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])


class PretrainLearner(FewShotLearner):
    """``pretrain``: the Baseline, a plain Conv-4 and a linear classifier over the training classes.

    Tested by fine-tuning a new linear classifier on the frozen features of each episode's
    support set.

    References:
        Chen, Liu, Kira, Wang, Huang. "A Closer Look at Few-shot Classification." ICLR 2019.
    """

    name = "pretrain"
    heads = ("joint",)
    uses_batch = True

    def classifier(self, flow: str) -> str:
        """Fine-tuning: the Baseline's test protocol."""
        return "finetune"

    def objective(self, batch, episode):  # noqa: D102
        loss, _, acc = pretrain_loss(self.net, batch, "joint")
        return loss, {"train/pre_ce": loss.detach(), "train/pre_accuracy": acc}


class ProtoNetLearner(FewShotLearner):
    """``protonet``: a plain Conv-4 meta-trained on episodes with the prototype loss.

    References:
        Snell, Swersky, Zemel. "Prototypical Networks for Few-shot Learning." NeurIPS 2017.
    """

    name = "protonet"
    uses_episode = True

    def objective(self, batch, episode):  # noqa: D102
        loss, _, acc = episode_loss(self.net, episode, "joint")
        return loss, {"train/meta_ce": loss.detach(), "train/meta_accuracy": acc}


class JointLearner(FewShotLearner):
    """``joint``: one plain Conv-4 trained on the Baseline loss plus the ProtoNet loss.

    The "Joint-Training" baseline of Omni-Training: both paradigms, no parallel flows, no
    distillation. Tested with prototypes.
    """

    name = "joint"
    heads = ("joint",)
    uses_batch = uses_episode = True

    def objective(self, batch, episode):  # noqa: D102
        pre, _, acc_pre = pretrain_loss(self.net, batch, "joint")
        meta, _, acc_meta = episode_loss(self.net, episode, "joint")
        metrics = {
            "train/pre_ce": pre.detach(),
            "train/meta_ce": meta.detach(),
            "train/pre_accuracy": acc_pre,
            "train/meta_accuracy": acc_meta,
        }
        return pre + meta, metrics


class OmniLearner(TeacherState, FewShotLearner):
    """``omni``: Omni-Training on the tri-flow Omni conv backbone.

    One Adam step on ``O = J_pre + J_meta + L_joint``:

    - ``J_pre = L_pre + lambda R_pre``: the pre flow's Baseline cross-entropy on a batch of
      training images, ``R_pre`` the squared difference of its class probabilities to the EMA
      teacher's pre-flow probabilities on the same images (:func:`consistency_loss`);
    - ``J_meta = L_meta + lambda R_meta``: the meta flow's ProtoNet loss on an episode,
      ``R_meta`` the same for its query probabilities ``softmax(-||f(x) - c||^2)`` (the teacher
      builds its own prototypes from the support set: its adaptation);
    - ``L_joint = L_joint_pre + L_joint_meta``: the joint flow trained with both losses (its own
      linear head).

    Logged: every term (``train/pre_ce``, ``train/meta_ce``, ``train/joint_pre_ce``,
    ``train/joint_meta_ce``), the unweighted ``R`` (``train/pre_distill``,
    ``train/meta_distill``; lambda weighs them only inside ``train/loss``) and the training
    accuracies. The teacher follows the student, ``theta~ <- d theta~ + (1 - d) theta`` after
    every step. Tested with the meta flow's prototypes by default; the pre flow is tested by
    fine-tuning.

    References:
        Shu, Cao, Gao, Wang, Yu, Long. "Omni-Training: Bridging Pre-Training and Meta-Training
        for Few-Shot Learning." TPAMI 2023 (arXiv:2110.07510).
        Chen et al. ICLR 2019 (Baseline); Snell et al. NeurIPS 2017 (ProtoNet).
    """

    name = "omni"
    model_flows = FLOWS
    heads = ("joint", "pre")
    eval_flow = "meta"
    uses_batch = uses_episode = True

    def __init__(self, cfg: Any, num_classes: int):
        super().__init__(cfg, num_classes)
        self.teacher = EMATeacher(self.net, cfg.ema_decay)

    def classifier(self, flow: str) -> str:
        """The pre flow is fine-tuned (Baseline); the meta and joint flows use prototypes."""
        return "finetune" if flow == "pre" else "protonet"

    def objective(self, batch, episode):  # noqa: D102
        weight = self.cfg.distill_weight
        pre, pre_logits, acc_pre = pretrain_loss(self.net, batch, "pre")
        meta, meta_logits, acc_meta = episode_loss(self.net, episode, "meta")
        joint_pre, _, acc_joint_pre = pretrain_loss(self.net, batch, "joint")
        joint_meta, _, acc_joint_meta = episode_loss(self.net, episode, "joint")
        teacher_pre, teacher_meta = self._teacher_outputs(batch, episode)
        r_pre = consistency_loss(pre_logits, teacher_pre)
        r_meta = consistency_loss(meta_logits, teacher_meta)
        loss = (pre + weight * r_pre) + (meta + weight * r_meta) + (joint_pre + joint_meta)
        metrics = {
            "train/pre_ce": pre.detach(),
            "train/meta_ce": meta.detach(),
            "train/joint_pre_ce": joint_pre.detach(),
            "train/joint_meta_ce": joint_meta.detach(),
            "train/pre_distill": r_pre.detach(),
            "train/meta_distill": r_meta.detach(),
            "train/pre_accuracy": acc_pre,
            "train/meta_accuracy": acc_meta,
            "train/joint_pre_accuracy": acc_joint_pre,
            "train/joint_meta_accuracy": acc_joint_meta,
        }
        return loss, metrics

    @torch.no_grad()
    def _teacher_outputs(
        self, batch: Batch, episode: EpisodeBatch
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The EMA teacher's pre-flow logits on the batch and meta-flow query logits.

        The teacher normalises with batch statistics, as the student does in training (Mean
        Teacher's code runs its teacher in train mode too): at the first step it then equals
        the student exactly. In eval mode its untrained running statistics gave query logits
        so far from the student's (R_meta ~ 200 at step 1 here) that the distillation term
        collapsed the features for hundreds of steps. The running statistics this forward
        updates are overwritten by the student's in :meth:`EMATeacher.update`.
        """
        teacher = self.teacher.module.train()
        try:
            _, meta_logits, _ = episode_loss(teacher, episode, "meta")
            return teacher(batch.images, "pre"), meta_logits
        finally:
            teacher.eval()

    def modules(self) -> list[nn.Module]:
        """The student and the EMA teacher (its forward runs in training mode)."""
        return [self.net, self.teacher.module]

    def after_step(self) -> None:
        """Move the EMA teacher towards the student."""
        self.teacher.update(self.net)
