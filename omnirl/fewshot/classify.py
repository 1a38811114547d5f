"""Few-shot classifiers on features: prototypes (ProtoNet) and a fine-tuned linear layer (Baseline).

Pure tensor functions, shared by the learning rules (training losses) and the evaluation (test
episodes). Shapes are in the names: ``E`` episodes, ``W`` way, ``K`` shot, ``Q`` queries per
class, ``D`` feature size, ``N`` images.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

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


def prototype_accuracy(support_EWKD: torch.Tensor, query_EWQD: torch.Tensor) -> torch.Tensor:
    """Accuracy (E,) of nearest-prototype classification of every episode's queries."""
    episodes, way, queries, dim = query_EWQD.shape
    logits = prototype_logits(
        query_EWQD.reshape(episodes, way * queries, dim), prototypes(support_EWKD)
    )
    return accuracy(logits, episode_labels(way, queries))


def finetune_accuracy(
    support_EWKD: torch.Tensor,
    query_EWQD: torch.Tensor,
    generator: torch.Generator,
    epochs: int = 100,
    batch_size: int = 4,
    lr: float = 0.01,
) -> torch.Tensor:
    """Accuracy (E,) of a new linear classifier trained on each episode's frozen support features.

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
        return accuracy(logits, episode_labels(way, query_EWQD.shape[2]))
