"""The Gaussian token model against independent truths: explicit numpy Schur complements, the
scalar closed form, the chain rule, and brute force over observed sets."""

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import Tensor

from copkit.entropy import GaussianTokens, curve_area
from copkit.tokens import patchify, random_orders


# ------------------------------------------------------------ Gaussian random fields: a known truth
def field_covariance(size: int, length_scale: float = 3.0, kernel: str = "exponential",
                     variance: float = 1.0, nugget: float = 1e-4) -> Tensor:
    """Covariance of a stationary Gaussian random field on a size x size pixel grid (float64).

    ``Cov(x_a, x_b) = variance * k(|a - b| / length_scale) + nugget * [a == b]``, with
    ``k(r) = exp(-r)`` (``"exponential"``, rough fields) or ``exp(-r^2 / 2)``
    (``"squared_exponential"``, smooth ones). Pixels are in raster order, so the result is (size^2,
    size^2).
    """
    ij = torch.stack(torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij"), -1)
    ij = ij.reshape(-1, 2).double()
    r = torch.cdist(ij, ij) / length_scale
    if kernel == "exponential":
        k = torch.exp(-r)
    elif kernel == "squared_exponential":
        k = torch.exp(-0.5 * r**2)
    else:
        raise ValueError(f"kernel must be 'exponential' or 'squared_exponential', got {kernel!r}")
    return variance * k + nugget * torch.eye(size * size, dtype=torch.float64)


def gaussian_field(n: int, size: int, cov: Tensor | None = None, seed: int = 0, **kwargs) -> Tensor:
    """``n`` samples of a zero-mean Gaussian random field with a known covariance: (n, 1, size,
    size).

    ``cov`` is the (size^2, size^2) pixel covariance; by default :func:`field_covariance` with
    ``kwargs``. Because the covariance is known exactly, entropies computed from it are ground
    truth.
    """
    if cov is None:
        cov = field_covariance(size, **kwargs)
    if cov.shape != (size * size, size * size):
        raise ValueError(f"cov must be ({size * size}, {size * size}) for a {size}x{size} field, "
                         f"got {tuple(cov.shape)}")
    chol = torch.linalg.cholesky(cov.double())
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, size * size, generator=g, dtype=torch.float64)
    return (z @ chol.T).float().reshape(n, 1, size, size)


def test_gaussian_field_has_its_covariance():
    cov = field_covariance(4, length_scale=1.5, kernel="squared_exponential")
    x = gaussian_field(40000, 4, cov=cov, seed=2).reshape(40000, 16).double()
    assert torch.allclose(torch.cov(x.T), cov, atol=0.04)
    with pytest.raises(ValueError, match="cov must be"):
        gaussian_field(2, 5, cov=cov)


def random_spd(nd: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(nd, nd))
    return a @ a.T / nd + 0.1 * np.eye(nd)


def numpy_conditional_entropy(cov: np.ndarray, n: int, d: int, observed: list[int],
                              target: int) -> float:
    """1/2 log det(2 pi e Sigma_{n|S}) with the Schur complement written out with np.linalg.inv."""
    t = np.arange(target * d, (target + 1) * d)
    s = (np.concatenate([np.arange(i * d, (i + 1) * d) for i in observed]) if observed
         else np.array([], int))
    c = cov[np.ix_(t, t)]
    if s.size:
        c = c - cov[np.ix_(t, s)] @ np.linalg.inv(cov[np.ix_(s, s)]) @ cov[np.ix_(s, t)]
    return 0.5 * np.log(np.linalg.det(2 * np.pi * np.e * c))


@pytest.mark.parametrize("seed", range(4))
def test_conditional_entropy_matches_explicit_schur_complement(seed):
    n, d = 6, 3
    cov = random_spd(n * d, seed)
    model = GaussianTokens(torch.zeros(n, d), torch.from_numpy(cov))
    rng = np.random.default_rng(100 + seed)
    masks = torch.from_numpy(rng.random((8, n)) < 0.4)
    masks[0] = False  # nothing observed
    masks[1] = True  # everything observed
    masks[2:4] = torch.tensor([True, False, True, False, False, False])  # two of one size
    h = model.conditional_entropy(masks)
    assert h.shape == (8, n)
    # masks are grouped by size and factorised chunk at a time: one at a time is the same
    one_at_a_time = dataclasses.replace(model, chunk=1).conditional_entropy(masks)
    assert torch.allclose(h, one_at_a_time, rtol=1e-12, atol=0)
    for b in range(8):
        obs = [int(i) for i in torch.nonzero(masks[b])]
        for t in range(n):
            if t in obs:
                assert h[b, t] == -math.inf
            else:
                want = numpy_conditional_entropy(cov, n, d, obs, t)
                assert h[b, t].item() == pytest.approx(want, rel=1e-10, abs=1e-10)
    # an index list and a single mask give the same as the batch
    assert torch.allclose(model.conditional_entropy(torch.tensor([1, 4])),
                          model.conditional_entropy(torch.tensor([False, True, False, False, True,
                                                                  False])))


def test_scalar_tokens_match_the_one_dimensional_closed_form():
    # d = 1, two tokens with variances s1, s2 and correlation rho:
    # H(e_1) = 1/2 log(2 pi e s1), H(e_1 | e_2) = 1/2 log(2 pi e s1 (1 - rho^2)).
    s1, s2, rho = 2.0, 0.5, 0.6
    c12 = rho * math.sqrt(s1 * s2)
    model = GaussianTokens(torch.zeros(2, 1),
                           torch.tensor([[s1, c12], [c12, s2]], dtype=torch.float64))
    h0 = model.conditional_entropy(torch.tensor([False, False]))
    h1 = model.conditional_entropy(torch.tensor([False, True]))
    assert h0[0].item() == pytest.approx(0.5 * math.log(2 * math.pi * math.e * s1), rel=1e-12)
    assert h0[1].item() == pytest.approx(0.5 * math.log(2 * math.pi * math.e * s2), rel=1e-12)
    assert (h1[0].item() == pytest.approx(0.5 * math.log(2 * math.pi * math.e * s1 * (1 - rho**2)),
                                          rel=1e-12))
    assert model.joint_entropy().item() == pytest.approx(
        0.5 * math.log((2 * math.pi * math.e) ** 2 * s1 * s2 * (1 - rho**2)), rel=1e-12)


def test_chain_rule_sum_is_the_same_for_every_order():
    n, d = 8, 2
    model = GaussianTokens(torch.zeros(n, d), torch.from_numpy(random_spd(n * d, 7)))
    orders = random_orders(5, n, seed=11)
    sums = model.chain_rule_sum(orders)
    joint = model.joint_entropy()
    assert torch.allclose(sums, joint.expand(5), rtol=1e-8, atol=0)
    assert (sums.max() - sums.min()).abs() <= 1e-8 * joint.abs()
    # and equals the sum of the explicit numpy terms along one order
    cov = model.cov.numpy()
    o = orders[0].tolist()
    explicit = sum(numpy_conditional_entropy(cov, n, d, o[:k], o[k]) for k in range(n))
    assert sums[0].item() == pytest.approx(explicit, rel=1e-10)


def test_prefix_curve_matches_collapse_entropy_of_each_prefix():
    n, d = 7, 3
    model = GaussianTokens(torch.randn(n, d, dtype=torch.float64),
                           torch.from_numpy(random_spd(n * d, 3)))
    order = torch.tensor([3, 0, 6, 1, 5, 2, 4])
    curve = model.prefix_curve(order)
    masks = torch.zeros(n + 1, n, dtype=torch.bool)
    for k in range(1, n + 1):
        masks[k, order[:k]] = True
    direct = model.collapse_entropy(masks)
    assert torch.allclose(curve, direct, rtol=1e-10, atol=1e-10)
    assert curve[0].item() == pytest.approx(model.marginal_entropies().sum().item(), rel=1e-12)
    assert curve[-1].item() == 0.0
    # batched curves are the single ones stacked
    orders = random_orders(3, n, seed=0)
    assert torch.allclose(model.prefix_curve(orders)[1], model.prefix_curve(orders[1]), rtol=1e-12)


def test_greedy_step_is_the_brute_force_minimiser():
    n, d = 6, 2
    model = GaussianTokens(torch.zeros(n, d), torch.from_numpy(random_spd(n * d, 5)))
    greedy = model.greedy_order().tolist()
    worst = model.greedy_order(worst=True).tolist()
    assert sorted(greedy) == list(range(n)) and sorted(worst) == list(range(n))
    # replay: at every prefix, brute force over all candidates with the explicit formula
    for order, pick in ((greedy, min), (worst, max)):
        for k in range(n):
            seen = order[:k]
            cand = [j for j in range(n) if j not in seen]
            scores = {j: model.collapse_entropy(torch.tensor(seen + [j])).item() for j in cand}
            assert order[k] == pick(scores, key=scores.get)


def test_greedy_beats_raster_and_random_on_a_fitted_model():
    # A model fitted to samples of a rough Gaussian random field, cut into 4x4 tokens on a 5x5 grid.
    images = gaussian_field(4000, 20, length_scale=2.0, seed=0)
    model = GaussianTokens.fit(patchify(images, 4))
    n = model.n_tokens
    greedy = curve_area(model.prefix_curve(model.greedy_order()))
    raster = curve_area(model.prefix_curve(torch.arange(n)))
    rand = curve_area(model.prefix_curve(random_orders(20, n, seed=1)))
    worst = curve_area(model.prefix_curve(model.greedy_order(worst=True)))
    assert greedy < raster
    assert greedy < rand.mean()
    assert worst > rand.mean()


def test_fit_recovers_a_known_covariance_and_stays_positive_definite():
    cov = field_covariance(8, length_scale=2.0)
    images = gaussian_field(20000, 8, cov=cov, seed=1)
    model = GaussianTokens.fit(patchify(images, 4), eps=1e-6)
    # the token-major covariance is the pixel covariance permuted into patch order
    idx = patchify(torch.arange(64.).reshape(1, 8, 8), 4).reshape(-1).long()
    want = cov[idx][:, idx]
    assert torch.allclose(model.cov, want, atol=0.05)
    # constant pixels (zero variance) are fine thanks to eps
    flat = torch.zeros(10, 4, 4)
    flat[:, 0] = torch.randn(10, 4)
    m = GaussianTokens.fit(flat)
    assert torch.isfinite(m.joint_entropy())
    with pytest.raises(ValueError, match="positive"):
        GaussianTokens.fit(flat, eps=0.0)


def test_conditional_mean_and_samples_keep_observed_tokens():
    n, d = 5, 2
    cov = torch.from_numpy(random_spd(n * d, 9))
    model = GaussianTokens(torch.zeros(n, d), cov)
    x = torch.randn(n, d, dtype=torch.float64)
    obs = torch.tensor([True, False, True, False, False])
    mean, ccov = model.conditional(x, obs)
    assert torch.equal(mean[obs], x[obs])
    # Independent truth: the regression mean with np.linalg.solve
    s = obs.repeat_interleave(d).numpy()
    c = cov.numpy()
    want = c[~s][:, s] @ np.linalg.solve(c[s][:, s], x.reshape(-1).numpy()[s])
    assert np.allclose(mean.reshape(-1).numpy()[~s], want)
    draws = model.sample_conditional(x, obs, 4000, seed=0)
    assert torch.equal(draws[:, obs], x[obs].expand(4000, -1, -1))
    emp = torch.cov(draws.reshape(4000, -1)[:, torch.from_numpy(~s)].T)
    assert torch.allclose(emp, ccov[torch.from_numpy(~s)][:, torch.from_numpy(~s)], atol=0.1)
