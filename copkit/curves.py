"""Accuracy over mask ratios, and the two numbers the paper reads off that curve (Table 5, Fig. 8).

- :func:`sweep_ratios`: the mask ratios of an evaluation (evenly spaced, plus Table 5's columns);
- :func:`sweep`: top-1 and top-5 of a classifier at each mask ratio, keeping the top of each
  image's collapse order, a random subset, or what a learned pruner keeps;
- :func:`auc`: Table 5's AuC, the area under top-1 over the mask ratio, normalised by the range;
- :func:`knee`: the Kneedle knee of the top-1 curve (Satopaa et al. 2011, the ``kneed`` package),
  where the paper reads its 78%.

The classifiers are :mod:`copkit.cvit`'s; what they cost is :mod:`copkit.efficiency`'s.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from kneed import KneeLocator
from torch import Tensor, nn
from tqdm import tqdm

from .cvit import PrunedViT, forward_keep, n_keep
from .metrics import topk_accuracy

__all__ = ["sweep_ratios", "sweep", "auc", "knee"]


def sweep_ratios(points: int, extra: Sequence[float] = (0.3, 0.5, 0.78),
                 top: float = 0.99) -> np.ndarray:
    """The mask ratios of an evaluation: ``points`` evenly from 0 to ``top``, plus Table 5's
    columns (0.3, 0.5, 0.78), sorted and unique.

    >>> sweep_ratios(3).tolist()
    [0.0, 0.3, 0.495, 0.5, 0.78, 0.99]
    """
    if points < 2:
        raise ValueError(f"a sweep needs at least 2 evenly spaced points, got {points}")
    r = np.concatenate([np.linspace(0.0, top, points), np.asarray(extra, dtype=float)])
    return np.unique(np.round(r, 6))


@torch.no_grad()
def sweep(model: nn.Module, data: tuple[Tensor, Tensor, Tensor | None], ratios: Sequence[float],
          order_source: str = "collapse", batch_size: int = 1000, seed: int = 0,
          progress: bool = False, desc: str = "sweep") -> dict[str, list[float]]:
    """Top-1 and top-5 accuracy (percent) at each mask ratio (Table 5, Fig. 8).

    Args:
        model: a timm ViT (evaluated with :func:`~copkit.cvit.forward_keep`) or
            a :class:`~copkit.cvit.PrunedViT`.
        data: (images (n, C, H, W) or anything sliced into such batches, labels (n,), collapse
            orders (n, N) best first, or None).
        ratios: mask ratios in [0, 1]; each keeps :func:`~copkit.cvit.n_keep` patches.
        order_source: ``"collapse"`` keeps the top of each image's collapse order; ``"random"`` a
            random subset (one random order per image from ``seed``, so the kept sets are nested
            across ratios); ``"learned"`` lets a :class:`~copkit.cvit.PrunedViT` choose.

    Returns:
        ``{"ratios", "kept", "top1", "top5"}`` as lists.
    """
    images, labels, orders = data
    if order_source not in ("collapse", "random", "learned"):
        raise ValueError("order_source must be 'collapse', 'random' or 'learned', got "
                         f"{order_source!r}")
    pruned = isinstance(model, PrunedViT)
    if pruned != (order_source == "learned"):
        raise ValueError("order_source='learned' goes with a PrunedViT, and a PrunedViT only with "
                         "'learned'")
    if order_source == "collapse" and orders is None:
        raise ValueError("order_source='collapse' needs the collapse orders of the test images")
    n_tokens = (model.vit if pruned else model).patch_embed.num_patches
    if order_source == "random":
        g = torch.Generator().manual_seed(seed)
        orders = torch.rand(len(images), n_tokens, generator=g).argsort(1)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = {"ratios": [], "kept": [], "top1": [], "top5": []}
    for r in tqdm(list(ratios), desc=desc, disable=not progress, mininterval=5.0, ncols=100):
        k = n_keep(float(r), n_tokens)
        logits = []
        for s in range(0, len(images), batch_size):
            x = images[s:s + batch_size].to(device)
            if pruned:
                logits.append(model(x, n_keep=k).float().cpu())
            else:
                keep = None if k == n_tokens else orders[s:s + batch_size, :k].to(device)
                logits.append(forward_keep(model, x, keep).float().cpu())
        acc = topk_accuracy(torch.cat(logits), labels.cpu(), ks=(1, 5))
        out["ratios"].append(float(r))
        out["kept"].append(k)
        out["top1"].append(100.0 * acc[1])
        out["top5"].append(100.0 * acc[5])
    model.train(was_training)
    return out


def _curve(ratios: Sequence[float], values: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(ratios, dtype=float), np.asarray(values, dtype=float)
    if x.ndim != 1 or x.shape != y.shape or x.size < 2:
        raise ValueError(f"need two 1-D sequences of the same length >= 2, got {x.shape} and "
                         f"{y.shape}")
    if not np.all(np.diff(x) > 0):
        raise ValueError("mask ratios must be strictly increasing")
    return x, y


def auc(ratios: Sequence[float], top1: Sequence[float]) -> float:
    """Table 5's AuC: the area under top-1 against mask ratio (trapezoid rule), divided by the
    ratio range, so it is in top-1's units (an average accuracy over the masked range).

    >>> auc([0.0, 0.5, 1.0], [80.0, 60.0, 0.0])
    50.0
    """
    x, y = _curve(ratios, top1)
    return float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)) / (x[-1] - x[0]))


def knee(ratios: Sequence[float], top1: Sequence[float],
         sensitivity: float = 1.0) -> tuple[float, float]:
    """The knee of a top-1 curve (Sec. 5, Fig. 8): ``kneed.KneeLocator`` (Kneedle, Satopaa et al.
    2011) with ``curve="concave", direction="decreasing"`` on mask ratio ascending. Returns
    (mask ratio, top-1 there); (nan, nan) when Kneedle finds no knee.

    A curve flat until 0.6 and falling linearly after it bends at 0.6:

    >>> x = [i / 10 for i in range(10)]
    >>> knee(x, [80.0] * 7 + [60.0, 40.0, 20.0])
    (0.6, 80.0)
    """
    x, y = _curve(ratios, top1)
    loc = KneeLocator(x, y, curve="concave", direction="decreasing", S=sensitivity)
    if loc.knee is None:
        return float("nan"), float("nan")
    return float(loc.knee), float(y[np.argmin(np.abs(x - loc.knee))])
