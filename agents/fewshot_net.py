"""The Omni conv backbone of few-shot classification and the classifiers on its features.

The backbone is the Conv-4 of ProtoNet and of Chen et al.'s Baseline (4 blocks of 3x3 conv,
batch norm, ReLU, 2x2 max-pool), with every 3x3 convolution an Omni-Layer: a joint 3x3 kernel
shared by all flows plus a 1x1 branch per parallel flow, and a batch norm per flow::

    joint flow:  x_l = pool(relu(BN_joint(conv3(x_{l-1}))))
    pre flow:    x_l = pool(relu(BN_pre(conv3(x_{l-1}) + conv1_pre(x_{l-1}))))
    meta flow:   x_l = pool(relu(BN_meta(conv3(x_{l-1}) + conv1_meta(x_{l-1}))))

The branches start at zero and the heads as copies, so every flow starts as the same network.

The classifiers are pure tensor functions, shared by the training losses and the test episodes:
prototypes (ProtoNet) and a fine-tuned linear layer (Baseline). Shapes are in the names: ``E``
episodes, ``W`` way, ``K`` shot, ``Q`` queries per class, ``D`` feature size, ``N`` images.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from omnirl.agents.omni_net import FLOWS


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


# ---------------------------------------------------------------------------- classifiers
# Pixel scaling of network inputs: uint8 -> roughly zero-mean, unit-scale floats.
PIXEL_MEAN, PIXEL_SCALE = 127.5, 64.0


def as_input(images_NCHW: np.ndarray) -> torch.Tensor:
    """uint8 images as network input: ``(x - 127.5) / 64`` in float32."""
    return (torch.from_numpy(images_NCHW).float() - PIXEL_MEAN) / PIXEL_SCALE


def prototypes(support_WKD: torch.Tensor) -> torch.Tensor:
    """Class prototypes ``c_w = (1/K) sum_k f(x_wk)``: the mean support feature of each class.

    Works on any leading batch dimensions: ``(..., W, K, D) -> (..., W, D)``.
    """
    return support_WKD.mean(dim=-2)


def prototype_logits(query_ND: torch.Tensor, prototypes_WD: torch.Tensor) -> torch.Tensor:
    """ProtoNet logits ``-||f(x_n) - c_w||^2`` (Snell et al. 2017, eq. 1 with Euclidean d).

    Expanded as ``-(|q|^2 - 2 q.c + |c|^2)`` so no (N, W, D) tensor is built; leading batch
    dimensions are allowed: ``(..., N, D), (..., W, D) -> (..., N, W)``.
    """
    cross = query_ND @ prototypes_WD.transpose(-1, -2)
    return -(
        query_ND.square().sum(-1, keepdim=True)
        - 2 * cross
        + prototypes_WD.square().sum(-1)[..., None, :]
    )


def episode_labels(way: int, per_class: int) -> torch.Tensor:
    """Labels of class-major episode rows: ``[0]*per_class + [1]*per_class + ...``."""
    return torch.arange(way).repeat_interleave(per_class)


def protonet_loss(
    support_WKD: torch.Tensor, query_WQD: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """ProtoNet loss, the cross-entropy of query logits ``-||f(x) - c_w||^2``: (loss, logits).

    ``logits`` are (W*Q, W), rows class-major, labels :func:`episode_labels` (W, Q).
    """
    way, queries = query_WQD.shape[:2]
    logits = prototype_logits(query_WQD.reshape(way * queries, -1), prototypes(support_WKD))
    return F.cross_entropy(logits, episode_labels(way, queries)), logits


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Fraction of rows whose arg-max is the label (over the last two dims: per batch entry)."""
    return (logits.argmax(-1) == labels).double().mean(-1)  # exact k/n in JSON


def prototype_predictions(support_EWKD: torch.Tensor, query_EWQD: torch.Tensor) -> torch.Tensor:
    """Nearest-prototype labels (E, W*Q) of every episode's queries (rows class-major)."""
    episodes, way, queries, dim = query_EWQD.shape
    logits = prototype_logits(
        query_EWQD.reshape(episodes, way * queries, dim), prototypes(support_EWKD)
    )
    return logits.argmax(-1)


def finetune_predictions(
    support_EWKD: torch.Tensor,
    query_EWQD: torch.Tensor,
    generator: torch.Generator,
    epochs: int = 100,
    batch_size: int = 4,
    lr: float = 0.01,
) -> torch.Tensor:
    """Labels (E, W*Q) of the queries by a new linear classifier fit to each episode's support.

    The classifier is trained on the frozen support features.

    The Baseline's test protocol (Chen et al. 2019, "A Closer Look at Few-shot
    Classification", their released code): a fresh ``Linear(D, W)`` per episode, cross-entropy,
    SGD with lr 0.01, momentum 0.9, dampening 0.9, weight decay 1e-3, mini-batches of 4 over
    ``epochs`` epochs of the support set. All E episodes are trained at once as one (E, D, W)
    weight: the loss is the sum of the per-episode mean losses, so each episode's slice gets
    exactly its own gradient, and SGD's momentum and weight decay are element-wise.
    """
    episodes, way, shot, dim = support_EWKD.shape
    support_END = support_EWKD.reshape(episodes, way * shot, dim)
    labels_EN = episode_labels(way, shot).expand(episodes, -1)
    bound = 1.0 / dim**0.5  # nn.Linear's default initialisation range
    weight_EDW = (torch.rand(episodes, dim, way, generator=generator) * 2 - 1) * bound
    bias_EW = (torch.rand(episodes, way, generator=generator) * 2 - 1) * bound
    weight_EDW.requires_grad_(True)
    bias_EW.requires_grad_(True)
    optimizer = torch.optim.SGD(
        [weight_EDW, bias_EW], lr=lr, momentum=0.9, dampening=0.9, weight_decay=1e-3
    )
    rows = torch.arange(episodes)[:, None]
    with torch.enable_grad():
        for _ in range(epochs):
            order_EN = torch.rand(episodes, way * shot, generator=generator).argsort(dim=1)
            for start in range(0, way * shot, batch_size):
                pick = order_EN[:, start : start + batch_size]
                logits = support_END[rows, pick] @ weight_EDW + bias_EW[:, None]
                loss = F.cross_entropy(logits.transpose(1, 2), labels_EN[rows, pick])
                optimizer.zero_grad()
                (loss * episodes).backward()  # mean over episodes -> sum: per-episode gradients
                optimizer.step()
    with torch.no_grad():
        logits = query_EWQD.reshape(episodes, -1, dim) @ weight_EDW + bias_EW[:, None]
        return logits.argmax(-1)
