"""copkit.metrics against closed forms and brute force: FID on Gaussians (scipy's matrix square
root), the Inception Score of a known classifier, precision / recall by explicit loops."""


import numpy as np
import pytest
import torch
from scipy import linalg
from torch import nn

from copkit.metrics import (
    FeatureNet,
    GenerativeScores,
    over_seeds,
    penultimate,
    precision_recall,
    seed_spread,
    spread_fields,
    topk_accuracy,
)


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


def test_fid_of_a_shifted_gaussian_on_any_feature_function_is_the_squared_shift():
    """Equal sample covariances, means ``shift`` apart: FID = |shift|^2 exactly. Features given
    as a function (here 2 x + 1 of the first d pixels) scale every distance by 2, so FID by 4; a
    set against itself is 0."""
    d = 5
    rng = np.random.default_rng(3)
    a = rng.standard_normal((d, d))
    cov, mu = a @ a.T + 0.5 * np.eye(d), rng.standard_normal(d)
    shift = np.array([0.5, -1.0, 0.0, 2.0, 0.25])
    real = exact_gaussian_sample(3000, mu, cov, 4)
    fake = exact_gaussian_sample(2000, mu + shift, cov, 5)
    net = FirstPixels(d)
    plain = GenerativeScores(net, as_images(real))
    scaled = GenerativeScores(net, as_images(real),
                              features=lambda x: 2 * x.flatten(1)[:, :d].double() + 1)
    assert plain(as_images(fake))["fid"] == pytest.approx((shift ** 2).sum(), rel=1e-4)
    assert scaled(as_images(fake))["fid"] == pytest.approx(4 * (shift ** 2).sum(), rel=1e-4)
    assert scaled(as_images(real))["fid"] == pytest.approx(0.0, abs=1e-6)


def test_penultimate_features_of_a_timm_vit_are_what_its_head_reads():
    """The ViT's feature function gives the input of its linear head: head(features) = logits."""
    from copkit.cvit import CViTConfig, make_vit

    torch.manual_seed(0)
    vit = make_vit(CViTConfig(width=32, depth=1, heads=2, mlp_ratio=2.0)).eval()
    x = torch.rand(6, 1, 28, 28) * 2 - 1
    with torch.no_grad():
        f = penultimate(vit)(x)
        assert f.shape == (6, 32)
        torch.testing.assert_close(vit.head(f), vit(x))
    scores = GenerativeScores(vit, x)
    assert scores(x)["fid"] == pytest.approx(0.0, abs=1e-3)
    assert scores(x)["precision"] == scores(x)["recall"] == 1.0
    net = FeatureNet(features=8).eval()
    assert penultimate(net) == net.features
    with pytest.raises(TypeError, match="no feature function.*features="):
        penultimate(nn.Linear(3, 2))


def test_a_feature_function_of_the_wrong_shape_is_refused():
    with pytest.raises(ValueError, match="features \\(n, f\\)"):
        GenerativeScores(FirstPixels(3), torch.zeros(8, 1, 28, 28), features=lambda x: x)


def test_the_mean_over_seeds_is_the_mean_of_single_seed_calls():
    """over_seeds of a real score (FID and precision / recall of seeded Gaussian samples against a
    fixed reference) equals the three single-seed calls, averaged and spread by hand."""
    reference = torch.randn(300, 1, 28, 28, generator=torch.Generator().manual_seed(9))
    scores = GenerativeScores(FirstPixels(4), reference)

    def score(seed):
        g = torch.Generator().manual_seed(seed)
        return scores(torch.randn(200, 1, 28, 28, generator=g) + 0.3)

    got = over_seeds(score, (0, 1, 2))
    single = [score(s) for s in (0, 1, 2)]
    for key in ("fid", "precision", "recall"):
        values = [r[key] for r in single]
        assert got[key]["values"] == pytest.approx(values)
        assert got[key]["mean"] == pytest.approx(np.mean(values))
        assert got[key]["sd"] == pytest.approx(np.std(values, ddof=1))
    assert got["fid"]["sd"] > 0  # the seeds draw different samples


def test_seed_spread_fields_and_bad_input():
    assert seed_spread([7.0]) == {"mean": 7.0, "sd": None, "values": [7.0]}
    assert spread_fields("fid", seed_spread([1.0, 2.0, 6.0])) == {
        "fid": 3.0, "fid_sd": pytest.approx(np.std([1, 2, 6], ddof=1)),
        "fid_seeds": [1.0, 2.0, 6.0]}
    with pytest.raises(ValueError, match="finite"):
        seed_spread([1.0, float("nan")])
    with pytest.raises(ValueError, match="at least one"):
        seed_spread([])
    with pytest.raises(ValueError, match="same scores"):
        over_seeds(lambda s: {"fid": 1.0} if s else {"is": 1.0}, (0, 1))
    with pytest.raises(ValueError, match="at least one sampling seed"):
        over_seeds(lambda s: {"fid": 1.0}, ())
