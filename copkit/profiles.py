"""The sizes of the book's three profiles, in one place, and device selection.

- ``smoke``: the whole book in minutes on a CPU; CI runs it. Numbers are not findings.
- ``cpu``:   what a reader runs on a laptop and what the site shows.
- ``gpu``:   full size on one GPU.

A chapter takes the profile's name as a papermill parameter and reads its sizes from here, so a
size is never repeated in a chapter.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

__all__ = ["EntropySizes", "ComaeSizes", "RankSizes", "CmarSizes", "CvitSizes", "Profile", "PROFILES", "get_profile", "pick_device"]


@dataclass(frozen=True)
class EntropySizes:
    """Chapter 1 (exact Gaussian patch entropies)."""

    fit_images: int | None  #: Fashion-MNIST training images the token model is fitted to (None: all 60,000)
    per_class_images: int | None  #: images per class for the class-wise models (None: all 6,000)
    random_orders: int  #: random orders behind the mean and band of the random prefix curve
    photo_crops: int  #: random crops of the photo that its token model is fitted to


@dataclass(frozen=True)
class ComaeSizes:
    """Chapter 2 (CoMAE training). Widths follow the paper's Sec. 4: a narrow selector f, a wider
    reconstructor g."""

    enc_width: int
    enc_depth: int
    enc_heads: int
    dec_width: int
    dec_depth: int
    dec_heads: int
    targets_per_image: int  #: K targets per image and step (49: the paper's Eq. 6 over all targets)
    sigma: float  #: Eq. 4
    steps: int
    batch_size: int  #: images per step (each with K targets)
    lr: float
    warmup_steps: int
    ema_decay: float
    eval_every: int
    seeds: tuple[int, ...]
    lambdas: tuple[float, ...]  #: weights of L_c compared (0: without L_c; the paper's 0.01)
    train_images: int | None  #: Fashion-MNIST training images used (the last 5,000 are validation)
    val_images: int  #: validation images scored at each evaluation
    mirror_steps: int  #: training steps of the mirrored Fashion-MNIST experiment
    planted_steps: int  #: training steps of the planted-truth (mirrored noise) experiment


@dataclass(frozen=True)
class RankSizes:
    """Chapter 3 (PageRank, collapse orders, the optimality proof)."""

    images: int  #: test images whose CoMAE graphs the chapter ranks
    random_graphs: int  #: random graphs beside the CoMAE ones in the proof checks
    random_orders: int  #: random orders behind the random prefix-curve band
    submodularity_triples: int  #: (S, T, j) triples for the submodularity check
    kendall_pairs: int  #: image pairs per group (same class / different class)


@dataclass(frozen=True)
class CmarSizes:
    """Chapter 4 (MAR and CMAR on Fashion-MNIST pixel tokens)."""

    width: int  #: encoder and decoder width
    enc_depth: int
    dec_depth: int
    heads: int
    buffer: int  #: class-embedding slots before the tokens (MAR's buffer_size)
    head_width: int  #: DiffLoss MLP width
    head_depth: int  #: DiffLoss residual blocks
    diffusion_batch_mul: int  #: noise draws per token and step (MAR's diffusion_batch_mul)
    mask_ratio_min: float  #: lower end of the truncated-normal mask ratio (MAR: 0.7)
    train_images: int | None  #: Fashion-MNIST training images (None: all 60,000)
    batch_size: int
    mar_steps: int  #: MAR, random orders, from scratch
    finetune_steps: int  #: MAR -> CMAR fine-tuning with collapse orders
    scratch_steps: int  #: CMAR from scratch (same budget as MAR)
    lr: float
    finetune_lr: float
    warmup_steps: int
    ema_decay: float
    gen_steps: int  #: generation steps S (MAR's num_iter)
    diffusion_steps: int  #: respaced DDPM steps when sampling (MAR: 100)
    cfg: float  #: the headline CFG scale
    cfg_scales: tuple[float, ...]  #: the Table 3 sweep
    samples: int  #: generated images per model, setting and seed for the headline tables
    sweep_samples: int  #: per model, scale and seed for the CFG and order sweeps
    seeds: tuple[int, ...]
    classifier_steps: int  #: the feature network's training steps
    uncertainty_images: int  #: images behind the teaser's uncertainty curves
    uncertainty_draws: int  #: samples of the hidden tokens per step and image


@dataclass(frozen=True)
class CvitSizes:
    """Chapter 5 (CViT: classification from the top of the collapse order). Every model of Table 5
    (ViT, RViT, CViT, the pruning baseline) is trained at these sizes from scratch, per seed."""

    width: int
    depth: int
    heads: int
    mlp_ratio: float
    schedule: str  #: training drop-ratio distribution (copkit.cvit.sample_drop_ratio): "cosine" is the paper's reading
    max_drop: float  #: the largest training drop ratio (Sec. 3.4: 0-99%)
    epochs: int  #: passes over the train_images
    batch_size: int
    lr: float
    warmup_steps: int
    ema_decay: float
    train_images: int | None  #: Fashion-MNIST training images (None: all 60,000)
    test_images: int | None  #: test images of the mask-ratio sweep (None: all 10,000)
    ratios: int  #: evenly spaced mask ratios of the sweep from 0 to 0.99 (0.3, 0.5, 0.78 are added)
    seeds: tuple[int, ...]


@dataclass(frozen=True)
class Profile:
    """Every size a chapter needs, by chapter."""

    name: str
    description: str
    entropy: EntropySizes
    comae: ComaeSizes
    rank: RankSizes
    cmar: CmarSizes
    cvit: CvitSizes

    def as_dict(self) -> dict:
        return asdict(self)


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        description="CI size: every chapter in seconds to minutes on a CPU; the numbers are not findings",
        entropy=EntropySizes(fit_images=3000, per_class_images=1000, random_orders=20, photo_crops=3000),
        comae=ComaeSizes(enc_width=16, enc_depth=1, enc_heads=2, dec_width=32, dec_depth=1, dec_heads=2,
                         targets_per_image=4, sigma=0.4, steps=20, batch_size=8, lr=3e-3, warmup_steps=5,
                         ema_decay=0.9, eval_every=10, seeds=(0, 1), lambdas=(0.0, 0.01), train_images=6000,
                         val_images=16, mirror_steps=20, planted_steps=20),
        rank=RankSizes(images=120, random_graphs=40, random_orders=20, submodularity_triples=40, kendall_pairs=200),
        cmar=CmarSizes(width=32, enc_depth=1, dec_depth=1, heads=2, buffer=2, head_width=32, head_depth=1,
                       diffusion_batch_mul=2, mask_ratio_min=0.7, train_images=2000, batch_size=16, mar_steps=20,
                       finetune_steps=10, scratch_steps=20, lr=1e-3, finetune_lr=5e-4, warmup_steps=5,
                       ema_decay=0.9, gen_steps=4, diffusion_steps=5, cfg=3.0, cfg_scales=(2.0, 3.0),
                       samples=40, sweep_samples=20, seeds=(0, 1), classifier_steps=20, uncertainty_images=2,
                       uncertainty_draws=3),
        cvit=CvitSizes(width=32, depth=2, heads=2, mlp_ratio=2.0, schedule="cosine", max_drop=0.99, epochs=1,
                       batch_size=64, lr=1e-3, warmup_steps=5, ema_decay=0.9, train_images=1280, test_images=256,
                       ratios=12, seeds=(0, 1, 2)),
    ),
    "cpu": Profile(
        name="cpu",
        description="a laptop's CPU: the size the site shows",
        entropy=EntropySizes(fit_images=None, per_class_images=None, random_orders=100, photo_crops=20000),
        comae=ComaeSizes(enc_width=32, enc_depth=2, enc_heads=2, dec_width=64, dec_depth=2, dec_heads=4,
                         targets_per_image=8, sigma=0.4, steps=400, batch_size=16, lr=3e-3, warmup_steps=20,
                         ema_decay=0.99, eval_every=80, seeds=(0, 1, 2), lambdas=(0.0, 0.01),
                         train_images=None, val_images=96, mirror_steps=400, planted_steps=400),
        rank=RankSizes(images=2000, random_graphs=200, random_orders=100, submodularity_triples=400,
                       kendall_pairs=2000),
        cmar=CmarSizes(width=64, enc_depth=2, dec_depth=2, heads=4, buffer=4, head_width=64, head_depth=2,
                       diffusion_batch_mul=4, mask_ratio_min=0.7, train_images=None, batch_size=32, mar_steps=1200,
                       finetune_steps=300, scratch_steps=1200, lr=1e-3, finetune_lr=3e-4, warmup_steps=60,
                       ema_decay=0.995, gen_steps=8, diffusion_steps=25, cfg=3.0, cfg_scales=(2.0, 3.0, 4.0),
                       samples=1000, sweep_samples=300, seeds=(0, 1, 2), classifier_steps=800,
                       uncertainty_images=40, uncertainty_draws=8),
        cvit=CvitSizes(width=64, depth=4, heads=4, mlp_ratio=4.0, schedule="cosine", max_drop=0.99, epochs=1,
                       batch_size=64, lr=2e-3, warmup_steps=50, ema_decay=0.99, train_images=32000,
                       test_images=1500, ratios=13, seeds=(0, 1, 2)),
    ),
    "gpu": Profile(
        name="gpu",
        description="full size on one GPU",
        entropy=EntropySizes(fit_images=None, per_class_images=None, random_orders=1000, photo_crops=60000),
        comae=ComaeSizes(enc_width=64, enc_depth=6, enc_heads=4, dec_width=256, dec_depth=6, dec_heads=8,
                         targets_per_image=49, sigma=0.4, steps=20000, batch_size=64, lr=1e-3, warmup_steps=1000,
                         ema_decay=0.999, eval_every=1000, seeds=(0, 1, 2), lambdas=(0.0, 0.01, 0.1),
                         train_images=None, val_images=1024, mirror_steps=5000, planted_steps=2000),
        rank=RankSizes(images=10000, random_graphs=1000, random_orders=1000, submodularity_triples=4000,
                       kendall_pairs=20000),
        cmar=CmarSizes(width=256, enc_depth=6, dec_depth=6, heads=8, buffer=8, head_width=256, head_depth=3,
                       diffusion_batch_mul=4, mask_ratio_min=0.7, train_images=None, batch_size=256, mar_steps=40000,
                       finetune_steps=10000, scratch_steps=40000, lr=5e-4, finetune_lr=1e-4, warmup_steps=2000,
                       ema_decay=0.9995, gen_steps=49, diffusion_steps=100, cfg=3.0, cfg_scales=(2.9, 3.0, 3.1),
                       samples=10000, sweep_samples=10000, seeds=(0, 1, 2), classifier_steps=10000,
                       uncertainty_images=64, uncertainty_draws=16),
        cvit=CvitSizes(width=384, depth=12, heads=6, mlp_ratio=4.0, schedule="cosine", max_drop=0.99, epochs=30,
                       batch_size=256, lr=5e-4, warmup_steps=1000, ema_decay=0.999, train_images=None,
                       test_images=None, ratios=34, seeds=(0, 1, 2)),
    ),
}


def get_profile(name: str) -> Profile:
    """The profile called ``name``; a clear error naming the choices otherwise."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}") from None


def pick_device(preference: str = "auto") -> torch.device:
    """``"auto"``: CUDA if present, then Apple's MPS, then the CPU. Otherwise the named device,
    checked to exist (``"cuda"``, ``"cuda:1"``, ``"mps"``, ``"cpu"``)."""
    if preference == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(preference)
    except RuntimeError as err:
        raise ValueError(f"unknown device {preference!r}; use auto, cpu, cuda[:i] or mps") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but torch sees no CUDA GPU; use device='auto' or 'cpu'")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device {preference!r} does not exist: torch sees {torch.cuda.device_count()} GPU(s)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps' was asked for but is not available; use device='auto' or 'cpu'")
    return dev
