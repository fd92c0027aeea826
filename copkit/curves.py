"""Accuracy over mask ratios, and the two numbers the paper reads off that curve (Table 5, Fig. 8).

- :func:`sweep_ratios`: the mask ratios of an evaluation (evenly spaced, plus Table 5's columns);
- :func:`sweep`: top-1 and top-5 of a classifier at each mask ratio, keeping the top of each
  image's collapse order, a random subset, or what a learned pruner keeps;
- :func:`auc`: Table 5's AuC, the area under top-1 over the mask ratio, normalised by the range;
- :func:`knee`: the Kneedle knee of the top-1 curve (Satopaa et al. 2011, the ``kneed`` package),
  where the paper reads its 78%.

Two sentences that read these numbers are written from them (:func:`copkit.fmt.compare`), so that
their words cannot contradict what they print: :func:`knee_text` (where the knees lie against
the paper's, and whether the ratio grid could have put one there) and :func:`order_gain_text`
(CViT with each image's own order against one fixed order).

The classifiers are :mod:`copkit.cvit`'s; what they cost is :mod:`copkit.efficiency`'s.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from kneed import KneeLocator
from torch import Tensor, nn
from tqdm import tqdm

from . import fmt
from .cvit import PrunedViT, forward_keep, n_keep
from .io import bars_off
from .metrics import topk_accuracy

__all__ = ["sweep_ratios", "sweep", "auc", "knee", "knee_text", "order_gain_text"]


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
    for r in tqdm(list(ratios), desc=desc, disable=bars_off(progress), mininterval=5.0, ncols=100):
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


def knee_text(knees: Sequence[float], ratios: Sequence[float], paper: float,
              model: str = "CViT") -> str:
    """Where Kneedle puts ``model``'s knee, one per seed (NaN: no knee), against the paper's mask
    ratio ``paper``, and what the ratio grid ``ratios`` says about the difference: whether
    ``paper`` is itself a point of the grid (then the grid could have put the knee there) or
    which grid points lie either side of it. Numbers are printed to 2 decimals.

    >>> grid = [0.66, 0.7425, 0.78, 0.825, 0.9075]
    >>> knee_text([0.825, 0.825, 0.825], grid, 0.78)
    "Kneedle puts CViT's knee at 0.82 over the seeds: the knee (0.82) is above the paper's (0.78), and 0.78 is itself a point of our ratio grid (between 0.74 and 0.82), so the grid's step does not explain the difference."
    >>> knee_text([0.66, float("nan")], [0.5, 0.66, 0.9], 0.78)
    "Kneedle puts CViT's knee at 0.66 over the seeds, and finds none for 1 seed(s): the knee (0.66) is below the paper's (0.78); our ratio grid has no point at 0.78, its nearest are 0.66 and 0.90."
    """  # noqa: E501 - a doctest's expected output is one line
    k = np.asarray(knees, dtype=float)
    grid = np.asarray(ratios, dtype=float)
    if k.size == 0:
        raise ValueError("no seeds' knees given")
    found = k[np.isfinite(k)]
    if not found.size:
        return f"Kneedle finds no knee in {model}'s curve on any seed (the paper: {paper:g})."
    two = lambda v: fmt.num(v, 2)  # noqa: E731 - one rule for every number of the sentence
    where = (f"at {two(found[0])}" if np.ptp(found) == 0
             else f"between {two(found.min())} and {two(found.max())}")
    text = f"Kneedle puts {model}'s knee {where} over the seeds"
    if found.size < k.size:
        text += f", and finds none for {k.size - found.size} seed(s)"
    name = "the knee" if np.ptp(found) == 0 else "their mean"
    text += ": " + fmt.compare(name, float(found.mean()), "the paper's", paper, two)
    on_grid = np.abs(grid - paper) < 1e-9
    if on_grid.any():
        if two(found.mean()) == two(paper):
            return text + f"; {two(paper)} is a point of our ratio grid."
        i = int(np.flatnonzero(on_grid)[0])
        nbrs = [two(grid[j]) for j in (i - 1, i + 1) if 0 <= j < grid.size]
        return (text + f", and {two(paper)} is itself a point of our ratio grid (between "
                f"{fmt.listing(nbrs)}), so the grid's step does not "
                "explain the difference.")
    below, above = grid[grid < paper], grid[grid > paper]
    near = [two(v) for v in (below.max() if below.size else None,
                             above.min() if above.size else None) if v is not None]
    return (text + f"; our ratio grid has no point at {two(paper)}, its nearest are "
            f"{fmt.listing(near)}.")


def order_gain_text(own_auc: float, fixed_auc: float, own_top1: float, fixed_top1: float,
                    ratio: float, model: str = "CViT") -> str:
    """``model``'s accuracy with each image's own collapse order against one fixed order for all
    images, said from the numbers in one order (own first): the AuC, and top-1 (%) at mask
    ``ratio``, each as a :func:`copkit.fmt.compare` sentence, and the AuC gain of the own order.

    >>> order_gain_text(82.885, 82.953, 81.07, 81.17, 0.78)
    "CViT's AuC with each image's own order (82.9) is below its AuC with one fixed order for all images (83.0), and its top-1 at 78% removed with its own order (81.1%) is below that with the fixed order (81.2%): a gain of -0.1 AuC points for the per-image order"
    """  # noqa: E501 - a doctest's expected output is one line
    one = lambda v: fmt.num(v, 1)  # noqa: E731
    auc_said = fmt.compare(f"{model}'s AuC with each image's own order", own_auc,
                           "its AuC with one fixed order for all images", fixed_auc, one)
    top1_said = fmt.compare(f"its top-1 at {fmt.share(ratio, 0)} removed with its own order",
                            own_top1, "that with the fixed order", fixed_top1,
                            lambda v: fmt.share(v / 100))
    return (f"{auc_said}, and {top1_said}: a gain of {fmt.signed(own_auc - fixed_auc, 1)} AuC "
            "points for the per-image order")
