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

__all__ = ["EntropySizes", "ComaeSizes", "RankSizes", "Profile", "PROFILES", "get_profile", "pick_device"]


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
class Profile:
    """Every size a chapter needs, by chapter."""

    name: str
    description: str
    entropy: EntropySizes
    comae: ComaeSizes
    rank: RankSizes

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
