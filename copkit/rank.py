r"""Patch ranking: PageRank on the mask graph, and collapse orders (the paper's Secs. 3.2 and 6).

The :math:`N` masks of an image form a weighted graph, :math:`A_{ij} = w_{ij}` = how much target
:math:`i` relies on patch :math:`j`. Patch :math:`i` *links to* the patches it relies on, so score
flows from a patch to what it needs; the transition matrix is the row-normalised :math:`A`
transposed (column-stochastic),

.. math::

    P = (D^{-1} A)^\top, \qquad D = \operatorname{diag}(\text{row sums of } A),

and PageRank is the fixed point :math:`r = (1 - c)\,\beta + c\,P r` with damping :math:`c` and
teleport :math:`\beta` (uniform unless given; Eq. 15). A row of :math:`A` that sums to 0 (a patch
relying on nothing, "dangling") sends its score to :math:`\beta`, as networkx does. The
**collapse order** is the patches by descending score: what many patches rely on is realised
first.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .tokens import flip_order

__all__ = ["PageRank", "transition", "pagerank", "pagerank_solve", "collapse_order", "ranks",
           "keep_top", "class_mean_order", "flip_order", "fixed_order", "top_overlap", "footrule",
           "order_diversity", "TIE_RTOL", "same_order"]


@dataclass
class PageRank:
    """Scores (B, N) summing to 1 per graph, iterations used, and the final L1 change per graph."""

    scores: Tensor
    iterations: int
    delta: Tensor
    converged: Tensor


def _teleport(a: Tensor, teleport: Tensor | None) -> Tensor:
    b, n, _ = a.shape
    if teleport is None:
        return torch.full((b, n), 1.0 / n, dtype=a.dtype, device=a.device)
    t = torch.as_tensor(teleport, dtype=a.dtype, device=a.device).expand(b, n)
    if not torch.isfinite(t).all() or (t < 0).any() or not (t.sum(-1) > 0).all():
        raise ValueError("teleport must be finite and non-negative with a positive sum")
    return t / t.sum(-1, keepdim=True)


def _check(a: Tensor) -> tuple[Tensor, bool]:
    single = a.dim() == 2
    a = a.unsqueeze(0) if single else a
    if a.dim() != 3 or a.shape[-1] != a.shape[-2]:
        raise ValueError(f"A must be (N, N) or (B, N, N), got {tuple(a.shape)}")
    if not torch.isfinite(a).all():
        raise ValueError("A must be finite: it holds NaN or infinite weights (allowed: finite "
                         "values >= 0)")
    if (a < 0).any():
        raise ValueError("A must be non-negative (mask values): allowed are finite values >= 0")
    return a, single


def _check_damping(damping: float) -> None:
    if (isinstance(damping, bool) or not isinstance(damping, (int, float))
        or not 0.0 < damping < 1.0):
        raise ValueError(f"damping must be a number in (0, 1) (the paper's 0.85), got {damping!r}")


def transition(a: Tensor) -> tuple[Tensor, Tensor]:
    r"""(P, dangling): :math:`P = (D^{-1} A)^\top`, the row-normalised :math:`A` transposed,
    column-stochastic except for dangling columns, and the (B, N) bool of rows of :math:`A` that
    sum to 0."""
    rows = a.sum(-1, keepdim=True)
    dangling = rows.squeeze(-1) <= 0
    p = torch.where(rows > 0, a / rows.clamp_min(torch.finfo(a.dtype).tiny), torch.zeros_like(a))
    return p.transpose(-1, -2), dangling


def pagerank(a: Tensor, damping: float = 0.85, teleport: Tensor | None = None, tol: float = 1e-10,
             max_iter: int = 1000, check_every: int | None = None) -> PageRank:
    r"""Batched PageRank by power iteration on any device.

    Args:
        a: (N, N) or (B, N, N) finite non-negative weights, a[i, j] = how much i relies on j.
        damping: :math:`c` in :math:`r = (1 - c)\,\beta + c\,P r`, in (0, 1).
        teleport: :math:`\beta`, (N,) or (B, N), normalised here; uniform by default (personalised
            otherwise).
        tol: stop when every graph's L1 change is below N * tol (networkx's rule).
        check_every: test that every ``check_every`` iterations (default: each one on the CPU,
            every 16th elsewhere, since reading the test's answer makes the host wait for a GPU).
            Iterating past convergence only brings the scores closer to the fixed point.

    Returns:
        :class:`PageRank` with scores (N,) or (B, N).

    Example (every patch relies only on patch 2, so patch 2 ranks first):
        >>> a = torch.zeros(4, 4); a[:, 2] = 1.0; a[2, 2] = 0.0
        >>> pagerank(a).scores.argmax().item()
        2
    """
    _check_damping(damping)
    if not tol > 0 or max_iter < 1:
        raise ValueError(f"tol must be > 0 and max_iter >= 1, got tol={tol!r}, "
                         f"max_iter={max_iter!r}")
    a, single = _check(a)
    a = a.double() if a.dtype != torch.float64 and a.device.type != "mps" else a
    p, dangling = transition(a)
    beta = _teleport(a, teleport)
    n = a.shape[-1]
    r = beta.clone()
    delta = torch.full((a.shape[0],), float("inf"), dtype=a.dtype, device=a.device)
    every = check_every or (1 if a.device.type == "cpu" else 16)
    it = 0
    for it in range(1, max_iter + 1):
        lost = (r * dangling).sum(-1, keepdim=True)  # score of dangling patches, sent to beta
        new = (1 - damping) * beta + damping * (torch.einsum("bij,bj->bi", p, r) + lost * beta)
        delta = (new - r).abs().sum(-1)
        r = new
        if it % every == 0 and (delta < n * tol).all():
            break
    scores = r / r.sum(-1, keepdim=True)
    conv = delta < n * tol
    return PageRank(scores[0] if single else scores, it, delta[0] if single else delta,
                    conv[0] if single else conv)


def pagerank_solve(a: Tensor, damping: float = 0.85, teleport: Tensor | None = None) -> Tensor:
    r"""The exact PageRank: solve :math:`(I - c\,\tilde P)\,r = (1 - c)\,\beta` with a linear
    solver, where :math:`\tilde P` is :math:`P` with each dangling column replaced by
    :math:`\beta`. For checking :func:`pagerank`; (N,) or (B, N), sums to 1.

    >>> a = torch.rand(5, 5, generator=torch.Generator().manual_seed(0)).fill_diagonal_(0)
    >>> torch.allclose(pagerank_solve(a), pagerank(a).scores.double(), atol=1e-8)
    True
    """
    _check_damping(damping)
    a, single = _check(a)
    a = a.double()
    p, dangling = transition(a)
    beta = _teleport(a, teleport)
    p = p + beta.unsqueeze(-1) * dangling.unsqueeze(-2).to(a.dtype)
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    r = torch.linalg.solve(eye - damping * p, ((1 - damping) * beta).unsqueeze(-1)).squeeze(-1)
    r = r / r.sum(-1, keepdim=True)
    return r[0] if single else r


def collapse_order(masks: Tensor, damping: float = 0.85, teleport: Tensor | None = None,
                   **kwargs) -> Tensor:
    """The collapse order of each image: patches by descending PageRank score, (N,) or (B, N) long.

    Ties keep the lower index first (a stable sort), so the order is deterministic.

    >>> masks = torch.full((4, 4), 0.1).fill_diagonal_(0)
    >>> masks[[0, 1, 3], 2] = 1.0  # every other patch relies on patch 2 ...
    >>> collapse_order(masks).tolist()[0]  # ... so patch 2 is realised first
    2
    """
    scores = pagerank(masks, damping, teleport, **kwargs).scores
    return torch.sort(-scores, dim=-1, stable=True).indices


#: Two float64 scores of one graph closer than this share of the graph's largest score are tied
#: (:func:`same_order`). A linear solve or a power iteration in float64 leaves errors near 1e-15
#: of the scores, so patches closer than this are ordered by rounding, not by the graph.
TIE_RTOL = 1e-12


def same_order(a: Tensor, b: Tensor, rtol: float = TIE_RTOL) -> Tensor:
    """Whether two sets of scores (N,) or (B, N) of the same patches order them alike, ties
    allowed: true for a graph where no two patches are put one way by ``a`` and the other way by
    ``b``, each time by more than ``rtol`` times that set's largest absolute score. Patches closer
    than that are tied, and may come in either order. For exact ties this is whether one order of
    the patches sorts both ``a`` and ``b`` from high to low. A bool tensor (B,), or () for (N,).

    Scaling the scores (``b = 10 a``) keeps the order; swapping two patches whose scores differ
    changes it; swapping two tied patches does not, although a stable sort of each set may put
    them differently:

    >>> a = torch.tensor([[0.4, 0.3, 0.3], [0.5, 0.3, 0.2]], dtype=torch.float64)
    >>> b = torch.stack([10 * a[0, [0, 2, 1]], a[1, [1, 0, 2]]])
    >>> same_order(a, b).tolist()
    [True, False]
    """
    if a.shape != b.shape or a.dim() not in (1, 2):
        raise ValueError(f"a and b must be scores of the same shape, (N,) or (B, N); got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    if not (isinstance(rtol, (int, float)) and 0 <= rtol < 1):
        raise ValueError(f"rtol (the share of the largest score within which scores tie) must be "
                         f"in [0, 1), got {rtol!r}")
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        raise ValueError("scores must be finite")

    def above(s: Tensor) -> Tensor:  # [..., i, j]: patch i scores clearly above patch j
        tie = rtol * s.abs().amax(-1, keepdim=True).unsqueeze(-1)
        return s.unsqueeze(-1) - s.unsqueeze(-2) > tie

    return ~(above(a) & above(b).transpose(-1, -2)).any((-1, -2))


def ranks(order: Tensor) -> Tensor:
    """The inverse permutation: ranks[..., t] = position of token t in the order (0 = first).

    Example:
        >>> ranks(torch.tensor([2, 0, 1])).tolist()
        [1, 2, 0]
    """
    out = torch.empty_like(order)
    out.scatter_(-1, order,
                 torch.arange(order.shape[-1], device=order.device).expand_as(order).contiguous())
    return out


def keep_top(order: Tensor, keep: int | float) -> Tensor:
    """The first ``keep`` token indices of each order (an int, or a fraction of N rounded to at
    least 1).

    >>> keep_top(torch.tensor([[4, 0, 3, 1, 2]]), 0.4).tolist()
    [[4, 0]]
    """
    n = order.shape[-1]
    k = keep if isinstance(keep, int) else max(1, round(keep * n))
    if not 1 <= k <= n:
        raise ValueError(f"keep must leave between 1 and {n} tokens, got {keep}")
    return order[..., :k]


def class_mean_order(orders: Tensor, labels: Tensor, n_classes: int) -> Tensor:
    """Per class, the order of the patches by mean rank over the class's images: (n_classes, N).

    A class without images gets the raster order.
    """
    r = ranks(orders).double()
    out = torch.arange(orders.shape[-1]).repeat(n_classes, 1)
    for c in range(n_classes):
        sel = labels == c
        if sel.any():
            out[c] = torch.sort(r[sel].mean(0), stable=True).indices
    return out


# ------------------------------------------------- how much orders depend on the image
def fixed_order(orders: Tensor) -> Tensor:
    """The one order closest to every image's: the patches by mean rank over ``orders`` (B, N)
    (Borda's count; ties keep the lower index first). (N,) long.

    >>> fixed_order(torch.tensor([[2, 0, 1], [2, 1, 0], [0, 2, 1]])).tolist()
    [2, 0, 1]
    """
    return torch.sort(ranks(orders).double().mean(0), stable=True).indices


def top_overlap(orders: Tensor, reference: Tensor, keep: int | float) -> Tensor:
    """Per order of ``orders`` (B, N), the share of its first ``keep`` patches (:func:`keep_top`)
    that are also among the first ``keep`` of ``reference`` (N,) or (B, N). (B,) float in [0, 1].

    >>> orders = torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0]])
    >>> top_overlap(orders, torch.tensor([0, 2, 1, 3]), 2).tolist()
    [0.5, 0.5]
    """
    n = orders.shape[-1]
    mine = torch.zeros(orders.shape, dtype=torch.bool).scatter_(-1, keep_top(orders, keep), True)
    ref = torch.zeros((n,) if reference.dim() == 1 else reference.shape, dtype=torch.bool)
    ref.scatter_(-1, keep_top(reference, keep), True)
    return (mine & ref).sum(-1).double() / keep_top(orders[:1], keep).shape[-1]


def footrule(a: Tensor, b: Tensor) -> Tensor:
    """Spearman's footrule between orders ``a`` and ``b`` (..., N), sum over patches of the distance
    between the patch's two places, divided by its mean over independent uniformly random
    orders, :math:`(N^2 - 1) / 3`: 0 for equal orders, 1 on average for unrelated ones, up to
    about 1.5 for reversed ones.

    >>> float(footrule(torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2])))
    0.0
    >>> float(footrule(torch.tensor([0, 1, 2]), torch.tensor([2, 1, 0])))
    1.5
    """
    n = a.shape[-1]
    return (ranks(a) - ranks(b)).abs().sum(-1).double() / ((n * n - 1) / 3)


def order_diversity(orders: Tensor, labels: Tensor | None = None, keep: float = 0.22,
                    pairs: int = 5000, seed: int = 0) -> dict[str, float]:
    """How much the collapse orders of images (B, N) differ from image to image.

    Returns ``distinct_first`` (different first patches), ``distinct_top`` (different sets of the
    first ``keep`` patches), ``fixed_overlap`` (mean share of an image's first ``keep`` patches that
    the best single order, :func:`fixed_order`, also puts first; 1 = one order for all),
    ``footrule`` (mean :func:`footrule` between ``pairs`` random pairs of images; 0 = one order,
    1 = unrelated orders) and, given ``labels``, ``footrule_within`` and ``footrule_across`` over
    pairs of the same class and of different classes.
    """
    b = orders.shape[0]
    if b < 2:
        raise ValueError(f"order_diversity compares images: give at least 2 orders, got {b}")
    top = torch.sort(keep_top(orders, keep), dim=-1).values
    out = {"images": float(b), "keep": float(top.shape[-1]),
           "distinct_first": float(orders[:, 0].unique().numel()),
           "distinct_top": float(top.unique(dim=0).shape[0]),
           "fixed_overlap": float(top_overlap(orders, fixed_order(orders), keep).mean())}
    g = torch.Generator().manual_seed(seed)
    i, j = torch.randint(0, b, (2, pairs), generator=g)
    j = torch.where(i == j, (j + 1) % b, j)
    dist = footrule(orders[i], orders[j])
    out["footrule"] = float(dist.mean())
    if labels is not None:
        same = labels[i] == labels[j]
        out["footrule_within"] = float(dist[same].mean()) if same.any() else float("nan")
        out["footrule_across"] = float(dist[~same].mean()) if (~same).any() else float("nan")
    return out
