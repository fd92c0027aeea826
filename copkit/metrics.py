"""Evaluation numbers: top-k accuracy, and FID / Inception Score / precision-recall on a given
feature network (the book uses a Fashion-MNIST classifier, since Inception-v3 features mean
little on 28x28 grey images and cannot be downloaded here; the shipped ViT's features are a second
feature space, :func:`penultimate`), and a score's spread over sampling seeds (:func:`over_seeds`).
"""

from __future__ import annotations

import math
import statistics
import warnings
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .dist import shard as process_shard
from .profiles import BaseSizes
from .recipe import Recipe, TrainConfig, batch_indices, host_generator, take
from .tokens import SIDE

__all__ = ["topk_accuracy", "FeatureNetConfig", "FeatureNet", "classifier_step_fn",
           "FeatureNetData", "RECIPE", "from_profile", "knn_radii", "precision_recall",
           "penultimate", "GenerativeScores", "CrossChecked", "seed_spread", "over_seeds",
           "spread_fields"]


def topk_accuracy(logits: Tensor, labels: Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[int, float]:
    """Fraction of rows whose label is among the ``k`` largest logits, for each ``k`` (a ``k`` of
    at least the number of classes counts every row).

    >>> logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.3]])
    >>> topk_accuracy(logits, torch.tensor([1, 2]), ks=(1, 2))
    {1: 0.5, 2: 1.0}
    """
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"logits must be (n, classes) and labels (n,); got {tuple(logits.shape)} "
                         f"and {tuple(labels.shape)}")
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hit = top == labels[:, None]
    return {k: hit[:, :k].any(dim=1).float().mean().item() for k in ks}


# ------------------------------------------------------------------------------ the feature network
@dataclass(frozen=True)
class FeatureNetConfig:
    """The feature network's sizes (part of its run's hash)."""

    n_classes: int = 10
    width: int = 16  #: channels of the first convolution (then 2x, 4x)
    features: int = 128  #: the penultimate layer: the feature space of FID and precision / recall


class FeatureNet(nn.Module):
    """A small CNN classifier of 28x28 grey images (in [-1, 1]); its penultimate layer is the
    feature space of FID and precision / recall, its softmax the classifier of the Inception Score.
    (Inception-v3 features mean little on 28x28 Fashion-MNIST, and no weights can be downloaded
    here.)"""

    def __init__(self, n_classes: int = 10, width: int = 16, features: int = 128) -> None:
        super().__init__()
        self.num_features = features
        self.body = nn.Sequential(  # 28 -> 14 -> 7 with strided convolutions
            nn.Conv2d(1, width, 3, padding=1), nn.GELU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1), nn.GELU(),
            # the last 7 x 7 map
            nn.Flatten(), nn.Linear(4 * width * (SIDE // 4) ** 2, features), nn.GELU(),
        )
        self.head = nn.Linear(features, n_classes)

    def features(self, images: Tensor) -> Tensor:
        return self.body(images)

    def no_weight_decay(self) -> set[str]:
        """No matrix is exempt from weight decay (:func:`copkit.recipe.weight_decay_groups`)."""
        return set()

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.body(images))


def penultimate(net: nn.Module) -> Callable[[Tensor], Tensor]:
    """The feature function of a classifier: images -> its penultimate features (n, f).

    A network with a ``features`` method (:class:`FeatureNet`) gives that; a timm model (the
    shipped ViT, :mod:`copkit.cvit`) gives its pre-logits features,
    ``forward_head(forward_features(x), pre_logits=True)`` (the class token after the final norm,
    for the ViT). Anything else is refused, naming what it lacks."""
    if callable(getattr(net, "features", None)):
        return net.features
    if callable(getattr(net, "forward_features", None)) and callable(getattr(net, "forward_head",
                                                                             None)):
        return lambda images: net.forward_head(net.forward_features(images), pre_logits=True)
    raise TypeError(f"{type(net).__name__} has no feature function: give a network with a "
                    "`features(images)` method (FeatureNet) or timm's `forward_features` and "
                    "`forward_head` (a timm ViT), or pass `features=` explicitly")


class _Features(nn.Module):
    """What torchmetrics' FID calls: images -> (n, features), with ``num_features`` set; ``owner``
    (the network the function reads) is registered so that moving this module moves it."""

    def __init__(self, fn: Callable[[Tensor], Tensor], num_features: int,
                 owner: nn.Module | None = None) -> None:
        super().__init__()
        self.fn, self.owner, self.num_features = fn, owner, num_features

    def forward(self, images: Tensor) -> Tensor:
        return self.fn(images)


class _Logits(nn.Module):
    """What torchmetrics' Inception Score calls: images -> class logits."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)


def classifier_step_fn(net: FeatureNet, images: Tensor, labels: Tensor, batch_size: int, seed: int):
    """A cross-entropy training step for :func:`copkit.train.train`, with random horizontal flips
    and one-pixel shifts so that the features do not hinge on exact pixel positions."""
    device = next(net.parameters()).device
    part = process_shard(batch_size)

    def step_fn(step: int, gen: torch.Generator):
        idx = part.cut(batch_indices(len(images), batch_size, step, seed))
        x, y = take(images, idx, device), take(labels, idx, device)
        flips = part.cut(torch.rand(part.total, generator=gen, device=device) < 0.5)
        x = torch.where(flips[:, None, None, None], x.flip(-1), x)
        host = host_generator(gen)
        dx, dy = (int(v) for v in torch.randint(-1, 2, (2,), generator=host, device=host.device))
        x = torch.roll(x, (dy, dx), dims=(-2, -1))
        logits = net(x)
        loss = F.cross_entropy(logits, y)
        return loss, "net", {"acc": (logits.argmax(1) == y).float().mean().detach()}

    return step_fn


# --------------------------------------------------------------------------------- the scores
def knn_radii(x: Tensor, k: int = 3, chunk: int = 2048) -> Tensor:
    """The distance from each point of ``x`` (n, f) to its k-th nearest other point: the radii of
    the k-NN manifold of Kynkaeaenniemi et al. (2019)."""
    out = []
    for s in range(0, len(x), chunk):
        d = torch.cdist(x[s:s + chunk], x)
        out.append(d.kthvalue(k + 1, dim=1).values)  # the 0th neighbour is the point itself
    return torch.cat(out)


def precision_recall(real: Tensor, fake: Tensor, k: int = 3, chunk: int = 2048,
                     real_radii: Tensor | None = None) -> tuple[float, float]:
    """Improved precision and recall (Kynkaeaenniemi et al. 2019) of feature sets (n, f).

    Each set's manifold is the union of balls around its points with radius the distance to the
    point's k-th nearest neighbour in the same set (:func:`knn_radii`; pass ``real_radii`` to reuse
    them). Precision: the fraction of fake points inside the real manifold; recall: the fraction of
    real points inside the fake manifold.
    """

    def inside(x: Tensor, ref: Tensor, r: Tensor) -> float:
        hits = []
        for s in range(0, len(x), chunk):
            hits.append((torch.cdist(x[s:s + chunk], ref) <= r[None]).any(dim=1))
        return torch.cat(hits).float().mean().item()

    real, fake = real.double(), fake.double()
    r_real = knn_radii(real, k, chunk) if real_radii is None else real_radii.double()
    return inside(fake, real, r_real), inside(real, fake, knn_radii(fake, k, chunk))


class GenerativeScores:
    """FID (torchmetrics' ``FrechetInceptionDistance`` on a feature function), a classifier-based
    Inception Score (torchmetrics' ``InceptionScore`` on the classifier's logits, one split), and
    precision / recall on the same features, all against one reference set (the test images),
    whose features are computed once.

    The features are ``features`` when given (any function images -> (n, f)), else the network's
    penultimate features (:func:`penultimate`: the book's classifier, or the shipped ViT as a
    second feature space).

    >>> net = FeatureNet(features=8).eval()
    >>> scores = GenerativeScores(net, torch.rand(64, 1, 28, 28) * 2 - 1)
    >>> sorted(scores(torch.rand(32, 1, 28, 28) * 2 - 1))
    ['fid', 'inception_score', 'precision', 'recall']
    """

    def __init__(self, net: nn.Module, reference: Tensor, batch_size: int = 500,
                 k: int = 3, features: Callable[[Tensor], Tensor] | None = None) -> None:
        """``net``: a classifier whose ``net(images)`` are logits (the Inception Score) and, unless
        ``features`` is given, with penultimate features (:func:`penultimate`), such as
        :class:`FeatureNet` or a timm ViT."""
        self.net, self.batch_size, self.k = net.eval(), batch_size, k
        self.feature_fn = features if features is not None else penultimate(net)
        self.image_shape = tuple(reference.shape[1:])
        self.device = next(net.parameters()).device
        with torch.no_grad():
            probe = self.feature_fn(reference[:2].to(self.device))
        if probe.ndim != 2 or len(probe) != min(2, len(reference)):
            raise ValueError(f"the feature function must map images (n, ...) to features (n, f); "
                             f"it gave {tuple(probe.shape)} for {min(2, len(reference))} images")
        # imported here, not at the top: torchmetrics brings scipy.signal and torchvision.models,
        # seconds of start-up for every process that imports copkit and never scores a sample
        from torchmetrics.image.fid import FrechetInceptionDistance

        self.fid = FrechetInceptionDistance(
            feature=_Features(self.feature_fn, probe.shape[1], net), reset_real_features=False,
            normalize=True)
        self.fid.to(self.device)
        with torch.no_grad():
            for s in range(0, len(reference), batch_size):
                self.fid.update(reference[s:s + batch_size].to(self.device), real=True)
        self.real_features = self._features(reference).double()
        self.real_radii = knn_radii(self.real_features, k)

    @torch.no_grad()
    def _features(self, images: Tensor) -> Tensor:
        return torch.cat([self.feature_fn(images[s:s + self.batch_size].to(self.device))
                          for s in range(0, len(images), self.batch_size)])

    @torch.no_grad()
    def __call__(self, images: Tensor) -> dict[str, float]:
        """The scores of generated images (n, 1, 28, 28) in [-1, 1]."""
        if images.ndim != 4 or images.shape[1:] != self.image_shape:
            raise ValueError(f"expected images (n, {', '.join(map(str, self.image_shape))}) like "
                             f"the reference; got {tuple(images.shape)}")
        from torchmetrics.image.inception import InceptionScore

        self.fid.reset()  # keeps the reference features
        with warnings.catch_warnings():  # it warns that it keeps the logits: a few MB here
            warnings.filterwarnings("ignore", message="Metric `InceptionScore` will save")
            inception = InceptionScore(feature=_Logits(self.net), splits=1).to(self.device)
        for s in range(0, len(images), self.batch_size):
            x = images[s:s + self.batch_size].to(self.device).float()
            self.fid.update(x, real=False)
            inception.update(x)
        precision, recall = precision_recall(self.real_features, self._features(images), self.k,
                                             real_radii=self.real_radii)
        with warnings.catch_warnings():  # one split: torchmetrics' spread over splits is undefined
            warnings.filterwarnings("ignore", message="std\\(\\): degrees of freedom")
            inception_score = float(inception.compute()[0])
        return {"fid": float(self.fid.compute()), "inception_score": inception_score,
                "precision": precision, "recall": recall}


class CrossChecked:
    """Every score of a first :class:`GenerativeScores` (FID, IS, precision, recall) and the FID
    of each other one as ``fid_<name>``: a second feature space (the shipped ViT's, say) that
    checks whether the first space's ranking of generators holds beyond its own features.

    >>> ref = torch.rand(64, 1, 28, 28) * 2 - 1
    >>> both = CrossChecked(GenerativeScores(FeatureNet(features=8).eval(), ref),
    ...                     vit=GenerativeScores(FeatureNet(features=6).eval(), ref))
    >>> sorted(both(torch.rand(32, 1, 28, 28) * 2 - 1))
    ['fid', 'fid_vit', 'inception_score', 'precision', 'recall']
    """

    def __init__(self, first: GenerativeScores, **others: GenerativeScores) -> None:
        self.first, self.others = first, others

    def __call__(self, images: Tensor) -> dict[str, float]:
        """The scores of generated images (n, 1, 28, 28) in [-1, 1]."""
        out = self.first(images)
        for name, scores in self.others.items():
            out[f"fid_{name}"] = scores(images)["fid"]
        return out


# ---------------------------------------------------------------------------- spread over seeds
def seed_spread(values: Sequence[float]) -> dict:
    """A score over sampling seeds: ``mean``, ``sd`` (the sample standard deviation, n - 1 in the
    denominator: the seed-to-seed spread of one draw; None for a single value) and the
    ``values`` themselves, in seed order.

    >>> seed_spread([140.0, 160.0, 180.0])
    {'mean': 160.0, 'sd': 20.0, 'values': [140.0, 160.0, 180.0]}
    """
    values = [float(v) for v in values]
    if not values or not all(math.isfinite(v) for v in values):
        raise ValueError(f"need at least one finite score, got {values!r}")
    return {"mean": statistics.fmean(values),
            "sd": statistics.stdev(values) if len(values) > 1 else None, "values": values}


def over_seeds(score: Callable[[int], Mapping[str, float]],
               seeds: Sequence[int] = (0, 1, 2)) -> dict[str, dict]:
    """``score(seed)`` (a dict of numbers: one seed's samples scored) for every seed, gathered per
    key into :func:`seed_spread` (mean, sd, per-seed values). Every seed must give the same keys.

    >>> over_seeds(lambda s: {"fid": 10.0 + s}, seeds=(0, 2))["fid"]["mean"]
    11.0
    """
    if not seeds:
        raise ValueError("seeds: give at least one sampling seed")
    rows = [dict(score(seed)) for seed in seeds]
    if any(set(r) != set(rows[0]) for r in rows):
        raise ValueError(f"every seed must give the same scores; got {[sorted(r) for r in rows]}")
    return {key: seed_spread([r[key] for r in rows]) for key in rows[0]}


def spread_fields(name: str, spread: Mapping) -> dict:
    """A :func:`seed_spread` as flat fields of a results file: ``name`` (the mean),
    ``name_sd`` and ``name_seeds`` (the per-seed values).

    >>> spread_fields("fid_cfg", seed_spread([1.0, 3.0]))
    {'fid_cfg': 2.0, 'fid_cfg_sd': 1.4142135623730951, 'fid_cfg_seeds': [1.0, 3.0]}
    """
    return {name: spread["mean"], f"{name}_sd": spread["sd"], f"{name}_seeds": spread["values"]}


@dataclass(frozen=True, eq=False)
class FeatureNetData:
    """What the feature network trains on (:data:`RECIPE`): labelled images (n, 1, 28, 28) in [-1,
    1]."""

    images: Tensor
    labels: Tensor


#: How :func:`copkit.train.fit` trains the feature network (:func:`classifier_step_fn`, one
#: optimiser "net"); runs in ``<data_dir>/runs/featurenet-<hash8>``.
#:
#: :meta hide-value:
RECIPE = Recipe(name="featurenet", module="net",
                build=lambda cfg, data: FeatureNet(cfg.n_classes, cfg.width, cfg.features),
                step=lambda net, model_cfg, train_cfg, data: classifier_step_fn(
                    net, data.images, data.labels, train_cfg.batch_size, train_cfg.seed))


def from_profile(sizes: BaseSizes, seed: int) -> tuple[FeatureNetConfig, TrainConfig]:
    """The feature network and its training for one seed, from its sizes: the ``classifier``
    section of the pretraining config (:class:`copkit.profiles.BaseSizes`). It is only ever a base
    model: Chapter 4 scores its samples with the shipped one (:mod:`copkit.pretrained`)."""
    return sizes.configs(FeatureNetConfig, seed)
