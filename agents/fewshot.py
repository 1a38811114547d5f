"""Few-shot classification learners on a tri-flow Omni conv backbone (Shu et al., Omni-Training).

The backbone is the Conv-4 of ProtoNet and of Chen et al.'s Baseline (4 blocks of 3x3 conv,
batch norm, ReLU, 2x2 max-pool), with every 3x3 convolution an Omni-Layer: a joint 3x3 kernel
shared by all flows plus a 1x1 branch per parallel flow, and a batch norm per flow::

    joint flow:  x_l = pool(relu(BN_joint(conv3(x_{l-1}))))
    pre flow:    x_l = pool(relu(BN_pre(conv3(x_{l-1}) + conv1_pre(x_{l-1}))))
    meta flow:   x_l = pool(relu(BN_meta(conv3(x_{l-1}) + conv1_meta(x_{l-1}))))

The branches start at zero and the heads as copies, so every flow starts as the same network.

Learning rules: ``omni`` (pre flow = Baseline: linear classifier + cross-entropy; meta flow =
ProtoNet; joint flow trained with both; EMA self-distillation), ``pretrain`` (Baseline alone),
``protonet`` (ProtoNet alone) and ``joint`` (one plain network trained on both losses).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from omnirl.agents.omni_net import FLOWS
from omnirl.ema import EMATeacher, TeacherState
from omnirl.fewshot.classify import accuracy, as_input, protonet_loss
from omnirl.pg import distill_loss


# -------------------------------------------------------------------------------- network
class OmniConv2d(nn.Module):
    """A 3x3 convolution shared by all flows plus a zero-initialised 1x1 branch per other flow.

    Args:
        c_in: input channels.
        c_out: output channels.
        branches: the flows that get a 1x1 branch (none: a plain 3x3 convolution).
    """

    def __init__(self, c_in: int, c_out: int, branches: Sequence[str] = ("pre", "meta")):
        super().__init__()
        # No biases: a batch norm follows every convolution.
        self.joint = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.branch = nn.ModuleDict(
            {flow: nn.Conv2d(c_in, c_out, 1, bias=False) for flow in branches}
        )
        for conv in self.branch.values():
            nn.init.zeros_(conv.weight)

    def forward(self, x: torch.Tensor, flow: str) -> torch.Tensor:
        """``conv3(x)``, plus ``flow``'s 1x1 branch if it has one."""
        if flow not in self.branch:
            return self.joint(x)
        # conv3(x; W) + conv1(x; V) = conv3(x; W + V at the kernel centre) (RepVGG's fold): a
        # branch flow costs one 3x3 convolution, like the joint flow, and gradients reach both.
        weight = self.joint.weight + F.pad(self.branch[flow].weight, (1, 1, 1, 1))
        return F.conv2d(x, weight, padding=1)


class OmniConvBlock(nn.Module):
    """Omni 3x3 convolution, a batch norm per flow, ReLU, 2x2 max-pool."""

    def __init__(self, c_in: int, c_out: int, flows: Sequence[str]):
        super().__init__()
        self.conv = OmniConv2d(c_in, c_out, [f for f in flows if f != "joint"])
        self.norm = nn.ModuleDict({flow: nn.BatchNorm2d(c_out) for flow in flows})

    def forward(self, x: torch.Tensor, flow: str) -> torch.Tensor:
        """The block's output for ``flow``."""
        return F.max_pool2d(F.relu(self.norm[flow](self.conv(x, flow))), 2)


class OmniConvNet(nn.Module):
    """Conv-4 backbone with flows ``flows`` and a linear classifier head per flow in ``heads``.

    With ``flows=("joint",)`` it is the plain Conv-4 (no branches, one batch norm per block),
    the backbone of the single-paradigm baselines.

    Args:
        num_classes: classes of the linear heads (the training classes).
        image_size: input height and width.
        channels: output channels of each block (Conv-4: 64, 64, 64, 64).
        in_channels: image channels.
        flows: the flows, ``FLOWS`` for the tri-flow Omni-Net.
        heads: flows that get a linear classifier head (ProtoNet flows need none).
    """

    def __init__(
        self,
        num_classes: int,
        image_size: int,
        channels: Sequence[int] = (64, 64, 64, 64),
        in_channels: int = 3,
        flows: Sequence[str] = FLOWS,
        heads: Sequence[str] = ("joint", "pre"),
    ):
        super().__init__()
        self.flows = tuple(flows)
        sizes = [in_channels, *channels]
        self.blocks = nn.ModuleList(
            OmniConvBlock(c_in, c_out, self.flows)
            for c_in, c_out in zip(sizes[:-1], sizes[1:], strict=True)
        )
        side = image_size
        for _ in channels:
            side //= 2  # each max-pool halves (floors) the side
        if side < 1:
            raise ValueError(f"image_size {image_size} is too small for {len(channels)} blocks")
        self.feature_dim = channels[-1] * side * side
        self.heads = nn.ModuleDict({f: nn.Linear(self.feature_dim, num_classes) for f in heads})
        for flow in heads[1:]:  # every flow starts as the same classifier
            self.heads[flow].load_state_dict(self.heads[heads[0]].state_dict())

    def features(self, images: torch.Tensor, flow: str = "joint") -> torch.Tensor:
        """Flattened features (N, feature_dim) of ``flow`` for images (N, C, H, W)."""
        if flow not in self.flows:
            raise ValueError(f"flow must be one of {', '.join(self.flows)}; got {flow!r}")
        x = images
        for block in self.blocks:
            x = block(x, flow)
        return x.flatten(1)

    def forward(self, images: torch.Tensor, flow: str = "joint") -> torch.Tensor:
        """Class logits of ``flow``'s linear head."""
        return self.heads[flow](self.features(images, flow))


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
    labels = torch.arange(episode.way).repeat_interleave(episode.queries)
    return loss, logits, accuracy(logits, labels)


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

    Subclasses define :meth:`objective`. Attributes say what a training step needs
    (``uses_batch``: a pre-training batch, ``uses_episode``: an episode) and how to test a flow.

    Args:
        cfg: the few-shot config (``omnirl.fewshot.config.FewShotConfig``).
        num_classes: training classes (the size of the linear heads).
    """

    name: ClassVar[str] = ""
    flows: ClassVar[tuple[str, ...]] = ("joint",)
    heads: ClassVar[tuple[str, ...]] = ()
    eval_flow: ClassVar[str] = "joint"
    uses_batch: ClassVar[bool] = False
    uses_episode: ClassVar[bool] = False

    def __init__(self, cfg: Any, num_classes: int):
        self.cfg = cfg
        self.net = OmniConvNet(num_classes, cfg.image_size, cfg.channels, 3, self.flows, self.heads)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=cfg.lr)

    def classifier(self, flow: str) -> str:
        """How ``flow`` is tested: ``"finetune"`` (new linear layer) or ``"protonet"``."""
        return "protonet"

    def objective(
        self, batch: Batch | None, episode: EpisodeBatch | None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss to minimise and the metrics to log."""
        raise NotImplementedError

    def step(self, batch: Batch | None, episode: EpisodeBatch | None) -> dict[str, float]:
        """One Adam step on :meth:`objective`; returns the metrics (``train/...``).

        Raises:
            FloatingPointError: the loss is not finite (nothing is updated).
        """
        self.net.train()
        loss, metrics = self.objective(batch, episode)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {loss.item()}")
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.after_step()
        return {"train/loss": loss.item(), **{k: float(v) for k, v in metrics.items()}}

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
        return loss, {"train/loss_pre": loss.detach(), "train/accuracy_pre": acc}


class ProtoNetLearner(FewShotLearner):
    """``protonet``: a plain Conv-4 meta-trained on episodes with the prototype loss.

    References:
        Snell, Swersky, Zemel. "Prototypical Networks for Few-shot Learning." NeurIPS 2017.
    """

    name = "protonet"
    uses_episode = True

    def objective(self, batch, episode):  # noqa: D102
        loss, _, acc = episode_loss(self.net, episode, "joint")
        return loss, {"train/loss_meta": loss.detach(), "train/accuracy_meta": acc}


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
            "train/loss_pre": pre.detach(),
            "train/loss_meta": meta.detach(),
            "train/accuracy_pre": acc_pre,
            "train/accuracy_meta": acc_meta,
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
    - ``L_joint``: the joint flow trained with both losses (its own linear head).

    The teacher follows the student, ``theta~ <- d theta~ + (1 - d) theta`` after every step.
    Tested with the meta flow's prototypes by default; the pre flow is tested by fine-tuning.

    References:
        Shu, Cao, Gao, Wang, Yu, Long. "Omni-Training: Bridging Pre-Training and Meta-Training
        for Few-Shot Learning." TPAMI 2023 (arXiv:2110.07510).
        Chen et al. ICLR 2019 (Baseline); Snell et al. NeurIPS 2017 (ProtoNet).
    """

    name = "omni"
    flows = FLOWS
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
        joint_pre, _, _ = pretrain_loss(self.net, batch, "joint")
        joint_meta, _, acc_joint = episode_loss(self.net, episode, "joint")
        teacher_pre, teacher_meta = self._teacher_outputs(batch, episode)
        r_pre = consistency_loss(pre_logits, teacher_pre)
        r_meta = consistency_loss(meta_logits, teacher_meta)
        loss = (pre + weight * r_pre) + (meta + weight * r_meta) + (joint_pre + joint_meta)
        metrics = {
            "train/loss_pre": pre.detach(),
            "train/loss_meta": meta.detach(),
            "train/loss_joint": (joint_pre + joint_meta).detach(),
            "train/distill_pre": r_pre.detach(),
            "train/distill_meta": r_meta.detach(),
            "train/accuracy_pre": acc_pre,
            "train/accuracy_meta": acc_meta,
            "train/accuracy_joint": acc_joint,
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

    def after_step(self) -> None:
        """Move the EMA teacher towards the student."""
        self.teacher.update(self.net)
