"""Evaluation numbers: top-k accuracy, and FID / Inception Score / precision-recall on a given
feature network (the book uses a Fashion-MNIST classifier, since Inception-v3 features mean
little on 28x28 grey images and cannot be downloaded here)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["topk_accuracy"]


def topk_accuracy(logits: Tensor, labels: Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[int, float]:
    """Fraction of rows whose label is among the ``k`` largest logits, for each ``k``.

    >>> topk_accuracy(torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.3]]), torch.tensor([1, 2]), ks=(1, 2))
    {1: 0.5, 2: 1.0}
    """
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"logits must be (n, classes) and labels (n,); got {tuple(logits.shape)} and {tuple(labels.shape)}")
    top = logits.topk(max(ks), dim=1).indices
    hit = top == labels[:, None]
    return {k: hit[:, :k].any(dim=1).float().mean().item() for k in ks}
