r"""Exact patch entropies under a Gaussian model of the tokens: the ground truth beside the method.

The paper measures how much uncertainty is left in the unobserved patches once some patches are
known. For a Gaussian model of the :math:`N` tokens (each of dimension :math:`d`) this is exact:

.. math::

    H(e_n \mid e_S) &= \tfrac12 \log\det\left(2\pi e\,\Sigma_{n\mid S}\right), \\
    \Sigma_{n\mid S} &= \Sigma_{nn} - \Sigma_{nS}\,\Sigma_{SS}^{-1}\,\Sigma_{Sn}
        \qquad \text{(the Schur complement).}

From it:

- Definition 1 / Eq. 8, the collapse entropy of an observed set,
  :math:`H_c(S) = \sum_{n \notin S} H(e_n \mid e_S)`;
- the **prefix curve** of an order, :math:`H_c(S_k)` for the first :math:`k` patches of the order,
  :math:`k = 0, \dots, N`, and its area, the order-dependent quantity an order should make small;
- the chain-rule sum of Eq. 1, :math:`\sum_k H(e_{o_k} \mid e_{o_1}, \dots, e_{o_{k-1}})`, which
  equals the joint entropy :math:`\tfrac12 \log\det(2\pi e\,\Sigma)` for *every* order (so Eq. 1
  cannot rank orders);
- the greedy order: each step observes the patch after which :math:`H_c` is smallest.

All computation is in float64 with Cholesky factors and triangular solves, never explicit inverses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["DEQUANTIZATION_VARIANCE", "GaussianTokens", "curve_area"]

#: Variance of uniform noise over one 8-bit quantisation step of pixels scaled to [-1, 1]:
#: :math:`(2/255)^2 / 12`. Adding it to the covariance treats each pixel as the continuous value
#: that rounds to it, so every differential entropy is finite even for pixels that never vary.
DEQUANTIZATION_VARIANCE: float = (2.0 / 255.0) ** 2 / 12.0

_LOG_2PIE = math.log(2.0 * math.pi * math.e)


def _logdet_spd(m: Tensor) -> Tensor:
    """log det of (batched) symmetric positive definite matrices through Cholesky."""
    return 2.0 * torch.log(torch.diagonal(torch.linalg.cholesky(m), dim1=-2, dim2=-1)).sum(-1)


def curve_area(curve: Tensor | np.ndarray) -> Tensor:
    r"""Area under a prefix curve :math:`H_c(S_k)`, :math:`k = 0, \dots, N`, over the fraction
    observed :math:`k/N \in [0, 1]`.

    The trapezoid rule; both end points are the same for every order (:math:`H_c` of nothing
    observed is the sum of the marginal entropies, :math:`H_c` of everything observed is 0), so
    only the interior points tell orders apart. Works on (N+1,) or (B, N+1) curves; returns nats.
    """
    c = torch.as_tensor(curve, dtype=torch.float64)
    n = c.shape[-1] - 1
    return torch.trapezoid(c, dx=1.0 / n, dim=-1)


@dataclass
class GaussianTokens:
    r"""A Gaussian model of N tokens of dimension d: mean (N, d), covariance (N d, N d), float64.

    The covariance is indexed token-major: entry (n d + a, m d + b) is
    :math:`\operatorname{Cov}(e_n[a], e_m[b])`, which is what ``tokens.reshape(M, N * d)`` gives
    for tokens from :func:`copkit.tokens.patchify`.

    Two scalar tokens with unit variance and correlation 0.8: observing one leaves the other
    the entropy :math:`\tfrac12 \log(2\pi e\,(1 - 0.8^2))` nats, and Eq. 1 sums to the joint
    entropy in any order.

    >>> import math
    >>> cov = torch.tensor([[1.0, 0.8], [0.8, 1.0]], dtype=torch.float64)
    >>> m = GaussianTokens(torch.zeros(2, 1), cov)
    >>> h = m.conditional_entropy(torch.tensor([True, False]))[1].item()
    >>> abs(h - 0.5 * math.log(2 * math.pi * math.e * 0.36)) < 1e-12
    True
    >>> torch.allclose(m.chain_rule_sum(torch.tensor([0, 1])),
    ...                m.chain_rule_sum(torch.tensor([1, 0])))
    True
    """

    mean: Tensor
    cov: Tensor
    #: how many orders :meth:`prefix_curve` walks, and how many masks of one size
    #: :meth:`conditional_entropy` factorises, at once (memory: at most
    #: :math:`\mathrm{chunk} \times (N d)^2 \times 8` bytes)
    chunk: int = 64

    def __post_init__(self) -> None:
        self.mean = torch.as_tensor(self.mean, dtype=torch.float64)
        self.cov = torch.as_tensor(self.cov, dtype=torch.float64, device=self.mean.device)
        if self.mean.dim() != 2:
            raise ValueError(f"mean must be (N, d), got {tuple(self.mean.shape)}")
        nd = self.mean.numel()
        if self.cov.shape != (nd, nd):
            raise ValueError(f"cov must be ({nd}, {nd}) for a mean of shape "
                             f"{tuple(self.mean.shape)}, got {tuple(self.cov.shape)}")
        if not torch.allclose(self.cov, self.cov.T, rtol=1e-10, atol=1e-12):
            raise ValueError("cov must be symmetric")
        try:
            torch.linalg.cholesky(self.cov)
        except RuntimeError as err:
            raise ValueError("cov is not positive definite; fit with a larger eps") from err

    # ------------------------------------------------------------------ construction
    @classmethod
    def fit(cls, tokens: Tensor, eps: float = DEQUANTIZATION_VARIANCE) -> "GaussianTokens":
        """Fit mean and covariance to tokens (M, N, d), then add ``eps`` to the diagonal.

        The sample covariance is the unbiased one. ``eps`` (default
        :data:`DEQUANTIZATION_VARIANCE`) is the stated regularisation: it makes the covariance
        positive definite when some pixels never vary (Fashion-MNIST's borders) or M < N d.
        """
        if tokens.dim() != 3:
            raise ValueError(f"tokens must be (M, N, d), got {tuple(tokens.shape)}")
        m, n, d = tokens.shape
        if m < 2:
            raise ValueError(f"need at least 2 samples to fit a covariance, got {m}")
        if eps <= 0:
            raise ValueError(f"eps must be positive, got {eps}")
        x = tokens.reshape(m, n * d).to(torch.float64)
        mean = x.mean(0)
        xc = x - mean
        cov = xc.T @ xc / (m - 1)
        cov = 0.5 * (cov + cov.T) + eps * torch.eye(n * d, dtype=torch.float64, device=x.device)
        return cls(mean.reshape(n, d), cov)

    @property
    def n_tokens(self) -> int:
        return self.mean.shape[0]

    @property
    def dim(self) -> int:
        return self.mean.shape[1]

    # ------------------------------------------------------------------ exact entropies
    def joint_entropy(self) -> Tensor:
        r""":math:`H(e_1, \dots, e_N) = \tfrac12 \log\det(2\pi e\,\Sigma)`, in nats."""
        return 0.5 * (self.cov.shape[0] * _LOG_2PIE + _logdet_spd(self.cov))

    def marginal_entropies(self) -> Tensor:
        """:math:`H(e_n)` for every token: (N,), nats."""
        n, d = self.n_tokens, self.dim
        blocks = self.cov.reshape(n, d, n, d).diagonal(dim1=0, dim2=2).permute(2, 0, 1)
        return 0.5 * (d * _LOG_2PIE + _logdet_spd(blocks))

    def _observed_mask(self, observed: Tensor | np.ndarray | list) -> Tensor:
        """``observed`` as a bool mask (N,) or (B, N). The rule: a **bool** tensor (or list, or
        array) is a mask, True = observed; an **integer** one is a 1-d list of distinct token
        indices in 0..N-1. Anything else is refused, and so is an integer list of length N holding
        only 0s and 1s: it reads as a 0/1 mask as well as indices (pass ``mask.bool()``)."""
        n = self.n_tokens
        observed = torch.as_tensor(observed, device=self.mean.device)
        if observed.numel() == 0 and observed.dim() == 1:  # [] : nothing observed
            return torch.zeros(n, dtype=torch.bool, device=self.mean.device)
        if observed.dtype == torch.bool:
            if observed.dim() not in (1, 2) or observed.shape[-1] != n:
                raise ValueError(f"observed: a bool mask must be (N,) or (B, N) with N={n}, got "
                                 f"{tuple(observed.shape)}")
            return observed
        if observed.is_floating_point() or observed.is_complex() or observed.dim() != 1:
            raise ValueError("observed: give a bool mask (N,) or (B, N), or a 1-d integer tensor "
                             f"of token indices; got {observed.dtype} of shape "
                             f"{tuple(observed.shape)}")
        if len(observed) == n and bool(((observed == 0) | (observed == 1)).all()):
            raise ValueError(f"observed: an integer tensor of N={n} zeros and ones is ambiguous (a "
                             "0/1 mask or indices?); pass a bool mask (observed.bool()) or "
                             "distinct token indices")
        if (bool(((observed < 0) | (observed >= n)).any())
            or len(observed.unique()) != len(observed)):
            raise ValueError(f"observed: token indices must be distinct and in 0..{n - 1}, got "
                             f"{observed.tolist()}")
        mask = torch.zeros(n, dtype=torch.bool, device=self.mean.device)
        mask[observed.long()] = True
        return mask

    def conditional_entropy(self, observed: Tensor) -> Tensor:
        r""":math:`H(e_n \mid e_S)` for every token :math:`n`, given the observed set :math:`S`
        (Definition 1's terms).

        Args:
            observed: a bool mask (N,) or a batch of masks (B, N), True = observed; or a 1-d
                integer tensor of distinct observed token indices (the rule:
                ``GaussianTokens._observed_mask``).

        Returns:
            (N,) or (B, N) float64 nats; ``-inf`` at observed tokens (a known value has no
            uncertainty left), so :math:`H_c(S)` is the sum over the finite entries.

        Masks are grouped by how many tokens they observe, :math:`|S|`. For each group (in
        batches of ``chunk``) the observed block :math:`\Sigma_{SS}` is gathered and factorised
        once, :math:`\Sigma_{SS} = L L^\top`, and :math:`W = L^{-1} \Sigma_{SU}` gives every
        unobserved token's conditional covariance, the Schur complement
        :math:`\Sigma_{n\mid S} = \Sigma_{nn} - W_n^\top W_n`: :math:`O(s^3 + s^2 u)` for
        :math:`s` observed and :math:`u` unobserved coordinates, not :math:`O((N d)^3)` per mask.
        """
        mask = self._observed_mask(observed)
        single = mask.dim() == 1
        if single:
            mask = mask.unsqueeze(0)
        n, d = self.n_tokens, self.dim
        blocks = self.cov.reshape(n, d, n, d).diagonal(dim1=0, dim2=2).permute(2, 0, 1)  # (N, d, d)
        coord = torch.arange(d, device=mask.device)
        h = torch.full(mask.shape, -math.inf, dtype=torch.float64, device=mask.device)
        sizes = mask.sum(-1)
        for s in sizes.unique().tolist():
            if s == n:  # everything observed: no uncertainty left anywhere
                continue
            for rows in torch.nonzero(sizes == s).squeeze(1).split(self.chunk):
                r, u = len(rows), n - s
                seen = torch.nonzero(mask[rows])[:, 1].reshape(r, s)  # token indices, ascending
                free = torch.nonzero(~mask[rows])[:, 1].reshape(r, u)
                cond = blocks[free]  # (r, u, d, d): Sigma_nn, before conditioning
                if s:
                    sc = (seen[:, :, None] * d + coord).reshape(r, s * d)  # coordinates of S
                    fc = (free[:, :, None] * d + coord).reshape(r, u * d)  # coordinates of U
                    chol = torch.linalg.cholesky(self.cov[sc[:, :, None], sc[:, None, :]])
                    w = torch.linalg.solve_triangular(
                        chol, self.cov[sc[:, :, None], fc[:, None, :]], upper=False)
                    w = w.reshape(r, s * d, u, d)
                    cond = cond - torch.einsum("rkna,rknc->rnac", w, w)
                h[rows[:, None], free] = 0.5 * (
                    d * _LOG_2PIE + _logdet_spd(cond.reshape(-1, d, d))).reshape(r, u)
        return h[0] if single else h

    def collapse_entropy(self, observed: Tensor) -> Tensor:
        r""":math:`H_c(S) = \sum_{n \notin S} H(e_n \mid e_S)` (Definition 1, Eq. 8): () or (B,)
        nats."""
        h = self.conditional_entropy(observed)
        return torch.where(torch.isfinite(h), h, torch.zeros_like(h)).sum(-1)

    # ------------------------------------------------------------------ orders
    def _check_orders(self, order: Tensor) -> Tensor:
        order = torch.as_tensor(order, dtype=torch.long, device=self.mean.device)
        single = order.dim() == 1
        o = order.unsqueeze(0) if single else order
        expected = torch.arange(self.n_tokens, device=o.device)
        if (o.shape[-1] != self.n_tokens
            or not torch.equal(o.sort(-1).values, expected.expand_as(o))):
            raise ValueError(f"an order must be a permutation of 0..{self.n_tokens - 1}")
        return o

    def _walk(self, orders: Tensor) -> tuple[Tensor, Tensor]:
        """Observe the tokens of each order one by one, updating Sigma_{.|S} by Schur complements.

        The covariance is first permuted into each order's sequence, so the tokens still to be
        observed are always the trailing block, and observing the next one updates that block
        alone (a block Cholesky step): a third of the work of updating the whole matrix.

        Returns (curve, steps): curve[b, k] = H_c(S_k) for k = 0..N; steps[b, k] = H(e_{o_k} |
        e_{o_1..o_{k-1}}), the k-th term of Eq. 1's chain-rule sum.
        """
        bsz, n, d = orders.shape[0], self.n_tokens, self.dim
        coords = (orders[:, :, None] * d + torch.arange(d, device=orders.device)).reshape(bsz, -1)
        c = self.cov[coords[:, :, None], coords[:, None, :]]  # (B, N d, N d), in order sequence
        curve = torch.zeros(bsz, n + 1, dtype=torch.float64, device=c.device)
        steps = torch.zeros(bsz, n, dtype=torch.float64, device=c.device)
        for k in range(n):
            left = n - k  # tokens not yet observed: c is their conditional covariance
            blocks = c.reshape(bsz, left, d, left, d).diagonal(dim1=1, dim2=3).permute(0, 3, 1, 2)
            h = 0.5 * (d * _LOG_2PIE + _logdet_spd(blocks.reshape(-1, d, d))).reshape(bsz, left)
            curve[:, k] = h.sum(-1)
            steps[:, k] = h[:, 0]
            # Condition the rest on the next token j: C <- C - C_{:,j} C_jj^{-1} C_{j,:}, via
            # L = chol(C_jj).
            chol = torch.linalg.cholesky(blocks[:, 0])  # (B, d, d)
            x = torch.linalg.solve_triangular(chol, c[:, :d, d:], upper=False)  # L^-1 C_{j,rest}
            c = c[:, d:, d:].baddbmm_(x.transpose(1, 2), x, alpha=-1.0)  # in place: a view
        return curve, steps

    def prefix_curve(self, order: Tensor) -> Tensor:
        r""":math:`H_c(S_k)` for the first :math:`k` tokens of ``order``, :math:`k = 0, \dots, N`:
        (N+1,) or (B, N+1) nats.

        ``order`` is a permutation (N,) or a batch of them (B, N), first-observed first. The curve
        starts at the sum of marginal entropies and ends at 0; :func:`curve_area` summarises it.
        """
        o = self._check_orders(order)
        curve = torch.cat([self._walk(chunk)[0] for chunk in o.split(self.chunk)])
        return curve[0] if torch.as_tensor(order).dim() == 1 else curve

    def chain_rule_sum(self, order: Tensor) -> Tensor:
        r"""Eq. 1 of the paper: :math:`\sum_k H(e_{o_k} \mid e_{o_1}, \dots, e_{o_{k-1}})` along
        ``order``.

        By the chain rule this is the joint entropy for every order; it is computed here term by
        term so that the invariance is a measurement, not an assumption. () or (B,) nats.
        """
        o = self._check_orders(order)
        total = torch.cat([self._walk(chunk)[1].sum(-1) for chunk in o.split(self.chunk)])
        return total[0] if torch.as_tensor(order).dim() == 1 else total

    def greedy_order(self, worst: bool = False) -> Tensor:
        r"""The greedy order: each step observes the token after which :math:`H_c` is smallest.

        With ``worst=True`` each step takes the token after which :math:`H_c` is *largest* (the
        anti-greedy order, a pessimistic reference). Ties go to the lowest index. (N,) long.

        Every candidate is scored exactly: for all pairs :math:`(m, j)` of unobserved tokens the
        block

        .. math::

            \Sigma_{m\mid S+j} = \Sigma_{m\mid S}
                - \Sigma_{mj\mid S}\,\Sigma_{jj\mid S}^{-1}\,\Sigma_{jm\mid S}

        is formed in one batch, so a step costs :math:`O(N^2 d^3)` on top of the
        :math:`O((N d)^2 d)` update.
        """
        n, d = self.n_tokens, self.dim
        c = self.cov.clone()
        observed = torch.zeros(n, dtype=torch.bool, device=c.device)
        order: list[int] = []
        for _ in range(n):
            free = torch.nonzero(~observed).squeeze(1)
            c4 = c.reshape(n, d, n, d)
            cf = c4[free][:, :, free].permute(0, 2, 1, 3)  # (u, u, d, d): [m, j] = C_{mj}
            cjj = cf.diagonal(dim1=0, dim2=1).permute(2, 0, 1)  # (u, d, d)
            chol = torch.linalg.cholesky(cjj)
            # y[m, j] = L_j^{-1} C_{jm}; then C_{m|S+j} = C_mm - y^T y.
            y = torch.linalg.solve_triangular(chol.unsqueeze(0), cf.transpose(-1, -2), upper=False)
            cmm = cjj.unsqueeze(1)  # (u, 1, d, d) indexed by m
            new = cmm - y.transpose(-1, -2) @ y
            u = free.numel()
            off = ~torch.eye(u, dtype=torch.bool, device=c.device)
            h = torch.zeros(u, u, dtype=torch.float64, device=c.device)
            h[off] = 0.5 * (d * _LOG_2PIE + _logdet_spd(new[off]))
            score = h.sum(0)  # H_c(S + j) for each candidate j
            pick = int(torch.argmax(score) if worst else torch.argmin(score))
            j = int(free[pick])
            order.append(j)
            col = c.reshape(n * d, n, d)[:, j, :]
            x = torch.linalg.solve_triangular(chol[pick], col.T, upper=False)
            c = c - x.T @ x
            c = 0.5 * (c + c.T)
            observed[j] = True
        return torch.tensor(order, dtype=torch.long)

    # ------------------------------------------------------------------ conditional distribution
    def conditional(self, tokens: Tensor, observed: Tensor) -> tuple[Tensor, Tensor]:
        r"""The Gaussian of all tokens given the observed ones of one image.

        Args:
            tokens: (N, d) tokens of one image (only the observed ones are read).
            observed: bool mask (N,) or distinct integer indices of the observed tokens.

        Returns:
            The pair ``(mean, cov)``. ``mean``, shape (N, d), is the observed tokens themselves
            and :math:`\mu_U + \Sigma_{US}\,\Sigma_{SS}^{-1} (x_S - \mu_S)` elsewhere; ``cov``,
            shape (N d, N d), is :math:`\Sigma_{U\mid S}` on the unobserved coordinates and zero on
            the observed ones.
        """
        mask = self._observed_mask(observed)
        if mask.dim() != 1:
            raise ValueError(f"observed: one image's mask (N,) here, got {tuple(mask.shape)}")
        d = self.dim
        s = mask.repeat_interleave(d)
        x = tokens.to(torch.float64).reshape(-1)
        mu = self.mean.reshape(-1)
        mean = mu.clone()
        cov = torch.zeros_like(self.cov)
        uu = self.cov[~s][:, ~s]
        if s.any():
            chol = torch.linalg.cholesky(self.cov[s][:, s])
            w = torch.linalg.solve_triangular(chol, self.cov[s][:, ~s], upper=False)
            z = torch.linalg.solve_triangular(chol, (x[s] - mu[s]).unsqueeze(1), upper=False)
            mean[~s] = mu[~s] + (w.T @ z).squeeze(1)
            mean[s] = x[s]
            uu = uu - w.T @ w
        idx = torch.nonzero(~s).squeeze(1)
        cov[idx.unsqueeze(1), idx.unsqueeze(0)] = 0.5 * (uu + uu.T)
        return mean.reshape(self.mean.shape), cov

    def sample_conditional(self, tokens: Tensor, observed: Tensor, n: int, seed: int = 0) -> Tensor:
        """``n`` draws of all tokens given the observed ones: (n, N, d), observed tokens kept."""
        mask = self._observed_mask(observed)
        mean, cov = self.conditional(tokens, mask)
        free = ~mask.repeat_interleave(self.dim)
        g = torch.Generator(device="cpu").manual_seed(seed)
        out = mean.reshape(1, -1).repeat(n, 1)
        if free.any():
            chol = torch.linalg.cholesky(cov[free][:, free])
            z = torch.randn(n, int(free.sum()), generator=g, dtype=torch.float64).to(cov.device)
            out[:, free] += z @ chol.T
        return out.reshape(n, *self.mean.shape)
