"""copkit.metrics against closed forms and brute force: FID on Gaussians (scipy's matrix square
root), the Inception Score of a known classifier, precision / recall by explicit loops."""


import numpy as np
import pytest
import torch
from scipy import linalg
from torch import nn

from copkit.metrics import FeatureNet, GenerativeScores, precision_recall, topk_accuracy


class FirstPixels(nn.Module):
    """A 'feature network' whose features are the first d pixels and whose logits are given."""

    def __init__(self, d: int, logits_scale: float = 0.0) -> None:
        super().__init__()
        self.num_features = d
        self.scale = logits_scale
        self.dummy = nn.Parameter(torch.zeros(1))  # so that the scores find a device

    def features(self, x):
        return x.flatten(1)[:, :self.num_features].double()

    def forward(self, x):
        return self.scale * x.flatten(1)[:, -10:]


def exact_gaussian_sample(n, mean, cov, seed):
    """n points whose sample mean is exactly ``mean`` and whose unbiased covariance is exactly
    ``cov``."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, len(mean)))
    z -= z.mean(0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T  # sample covariance = I
    return z @ np.linalg.cholesky(cov).T + mean


def as_images(points):
    x = torch.zeros(len(points), 1, 28, 28, dtype=torch.float64)
    x.view(len(points), -1)[:, :points.shape[1]] = torch.from_numpy(points)
    return x


def test_fid_equals_the_closed_form_for_two_gaussians():
    d = 6
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((d, d)), rng.standard_normal((d, d))
    cov1, cov2 = a @ a.T + 0.5 * np.eye(d), b @ b.T + 0.5 * np.eye(d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d) + 1.0
    real, fake = exact_gaussian_sample(4000, mu1, cov1,
                                       1), exact_gaussian_sample(3000, mu2, cov2, 2)
    closed = float(((mu1 - mu2) ** 2).sum()
                   + np.trace(cov1 + cov2 - 2 * linalg.sqrtm(cov1 @ cov2).real))
    scores = GenerativeScores(FirstPixels(d), as_images(real))
    got = scores(as_images(fake))["fid"]
    assert got == pytest.approx(closed, rel=1e-3)
    # the reference is kept across calls
    assert scores(as_images(real))["fid"] == pytest.approx(0.0, abs=1e-6)


def test_inception_score_of_a_known_classifier():
    # Confident, uniformly spread predictions: IS = number of classes; one class only: IS = 1.
    n, c = 200, 10
    x = torch.zeros(n, 1, 28, 28)
    x.view(n, -1)[torch.arange(n), 784 - 10 + torch.arange(n) % c] = 1.0
    scores = GenerativeScores(FirstPixels(4, logits_scale=60.0), x)
    assert scores(x)["inception_score"] == pytest.approx(c, rel=1e-6)
    one = torch.zeros(n, 1, 28, 28)
    one.view(n, -1)[:, 784 - 10] = 1.0
    assert scores(one)["inception_score"] == pytest.approx(1.0, rel=1e-6)


def test_precision_recall_match_brute_force():
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(60, 3, generator=g), torch.randn(50, 3, generator=g) * 1.5 + 0.5
    k = 3

    def radius(x, i):
        # 0th is the point itself
        return sorted(float((x[i] - x[j]).norm()) for j in range(len(x)))[k]

    def covered(p, ref):
        return any(float((p - ref[j]).norm()) <= radius(ref, j) for j in range(len(ref)))

    precision = sum(covered(f, real) for f in fake) / len(fake)
    recall = sum(covered(r, fake) for r in real) / len(real)
    assert precision_recall(real, fake, k=k, chunk=7) == pytest.approx((precision, recall))
    assert precision_recall(real, real, k=k) == (1.0, 1.0)


def test_scores_reject_images_of_another_shape():
    scores = GenerativeScores(FeatureNet(features=8).eval(), torch.zeros(16, 1, 28, 28))
    with pytest.raises(ValueError, match="like the reference"):
        scores(torch.zeros(4, 1, 32, 32))


def test_topk_accuracy_against_a_loop():
    g = torch.Generator().manual_seed(1)
    logits, labels = torch.randn(300, 10, generator=g), torch.randint(0, 10, (300,), generator=g)
    got = topk_accuracy(logits, labels, ks=(1, 3, 5))
    for k in (1, 3, 5):
        hits = [labels[i].item() in sorted(range(10), key=lambda j: -logits[i, j].item())[:k]
                for i in range(300)]
        assert got[k] == pytest.approx(sum(hits) / 300)
    with pytest.raises(ValueError):
        topk_accuracy(logits, labels[:5])
