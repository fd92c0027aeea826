"""The sizes of the book's three profiles, in one place, and device selection.

- ``smoke``: the whole book in minutes on a CPU; CI runs it. Numbers are not findings.
- ``cpu``:   what a reader runs on a laptop and what the site shows.
- ``gpu``:   full size on one GPU.

The sizes live in ``copkit/configs/<profile>.yaml``, read into the dataclasses below (strictly: an
unknown or ill-typed key is an error). The base models the chapters start from have sizes of their
own, a section each of the pretraining config (:class:`BaseSizes`, :mod:`copkit.pretrained`); each
model module's ``from_profile(sizes, seed, **variant)`` takes either kind of sizes. A chapter takes
the profile's name (or the path of a profile file of one's own) as a papermill parameter and reads
its sizes from here, so a size is never repeated in a chapter; the command line
(``python -m copkit <stage> --profile ...``) reads the same. :func:`chapter_setup` is every
chapter's first call: its profile, device, seeds and folders, and the book's plotting style.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

from .config import ConfigError, build, load
from .recipe import TrainConfig

__all__ = ["EntropySizes", "ComaeSizes", "RankSizes", "CmarSizes", "CvitSizes", "BaseSizes",
           "Profile", "PROFILES", "get_profile", "load_profile", "pick_device", "Chapter",
           "chapter_setup"]


# ------------------------------------------------------------------------------------ ranges
#: counts that may be 0 (every other int size is a count >= 1; a seed is any int >= 0)
_ZERO_OK = {"warmup_steps", "g_warmup_steps", "eval_every", "seeds", "planted_seeds"}
#: float sizes that must be > 0, and those in a unit interval ((low, high, high included))
_POSITIVE = {"lr", "finetune_lr", "sigma", "mlp_ratio", "sampler_temperatures"}
_UNIT = {"ema_decay": (0.0, 1.0, False), "mask_ratio_min": (0.0, 1.0, True),
         "max_drop": (0.0, 1.0, False)}
#: lists that must hold at least one value (the others may be empty: the single value is used)
_NON_EMPTY = {"seeds", "lambdas", "planted_seeds", "cfg_scales"}
_PRECISIONS = ("fp32", "bf16")


def _allowed(name: str, value: object) -> str | None:
    """What ``name`` allows, when ``value`` (one value, or one entry of a list) is outside it; else
    None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        low = 0 if name in _ZERO_OK else 1
        return None if value >= low else f"an int >= {low}"
    if isinstance(value, float):
        if name in _UNIT:
            lo, hi, closed = _UNIT[name]
            ok = math.isfinite(value) and lo <= value and (value <= hi if closed else value < hi)
            return None if ok else f"a number in [{lo:g}, {hi:g}{']' if closed else ')'}"
        if name in _POSITIVE:
            return None if math.isfinite(value) and value > 0 else "a finite number > 0"
        return None if math.isfinite(value) and value >= 0 else "a finite number >= 0"
    if name == "precision" and value not in _PRECISIONS:
        return f"one of {', '.join(_PRECISIONS)}"
    return None


def _check_ranges(sizes: object) -> None:
    """A size outside its range raises ``ValueError("<key>: must be ..., got ...")`` (the
    configuration reader adds the section and the file), so a negative batch or ``fit_images: -5``
    stops here instead of meaning something else deep in a chapter."""
    for f in fields(sizes):
        value = getattr(sizes, f.name)
        if f.name in _NON_EMPTY and isinstance(value, tuple) and not value:
            raise ValueError(f"{f.name}: must list at least one value, got []")
        for v in value if isinstance(value, tuple) else (value,):
            allowed = _allowed(f.name, v)
            if allowed:
                null = " or null" if f.type and "None" in str(f.type) else ""
                raise ValueError(f"{f.name}: must be {allowed}{null}, got {value!r}")


@dataclass(frozen=True)
class EntropySizes:
    """Chapter 1 (exact Gaussian patch entropies)."""

    #: Fashion-MNIST training images the token model is fitted to (None: all 60,000)
    fit_images: int | None
    per_class_images: int | None  #: images per class for the class-wise models (None: all 6,000)
    random_orders: int  #: random orders behind the mean and band of the random prefix curve
    photo_crops: int  #: random crops of the photo that its token model is fitted to

    def __post_init__(self) -> None:
        _check_ranges(self)


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
    #: :math:`K`, the targets per image and step (49: the paper's Eq. 6 over all targets)
    targets_per_image: int
    sigma: float  #: :math:`\sigma` of Eq. 4
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
    #: steps at the start in which only g learns (copkit.comae.CoMAEConfig.g_warmup_steps)
    g_warmup_steps: int = 100
    #: seeds of the planted-truth runs at each L_c weight (cheap: a 4 x 4 grid)
    planted_seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    #: the planted truth again at the paper's weight, trained this long (it needs more steps)
    planted_long_steps: int = 1600
    #: more weights of L_c, trained from the first seed only: the sensitivity sweep of Chapter 2's
    #: diagnostics (mirror hit rate and image-specific share at each weight)
    sweep_lambdas: tuple[float, ...] = (0.1, 1.0)
    #: "bf16": training under bfloat16 autocast (copkit.recipe.TrainConfig.precision)
    precision: str = "fp32"
    compile: bool = False  #: compile the transformer blocks (copkit.recipe.TrainConfig.compile)

    def __post_init__(self) -> None:
        _check_ranges(self)


@dataclass(frozen=True)
class RankSizes:
    """Chapter 3 (PageRank, collapse orders, the optimality proof)."""

    images: int  #: test images whose CoMAE graphs the chapter ranks
    random_graphs: int  #: random graphs beside the CoMAE ones in the proof checks
    random_orders: int  #: random orders behind the random prefix-curve band
    submodularity_triples: int  #: (S, T, j) triples for the submodularity check
    kendall_pairs: int  #: image pairs per group (same class / different class)
    #: training and test images each read from the shipped orders file (None: all 60,000 + 10,000)
    dataset_images: int | None = None

    def __post_init__(self) -> None:
        _check_ranges(self)


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
    cfg_scale: float  #: the headline classifier-free guidance scale
    cfg_scales: tuple[float, ...]  #: the Table 3 sweep
    samples: int  #: generated images per model, setting and seed for the headline tables
    sweep_samples: int  #: per model, scale and seed for the CFG and order sweeps
    seeds: tuple[int, ...]
    uncertainty_images: int  #: images behind the teaser's uncertainty curves
    uncertainty_draws: int  #: samples of the hidden tokens per step and image
    #: the sampler settings Chapter 4 chooses from, by FID of the base MAR against held-out training
    #: images (empty: the single value above)
    sampler_gen_steps: tuple[int, ...] = ()
    sampler_diffusion_steps: tuple[int, ...] = ()
    sampler_temperatures: tuple[float, ...] = ()
    #: "bf16": training under bfloat16 autocast (copkit.recipe.TrainConfig.precision)
    precision: str = "fp32"
    compile: bool = False  #: compile the transformer blocks (copkit.recipe.TrainConfig.compile)

    def __post_init__(self) -> None:
        _check_ranges(self)


@dataclass(frozen=True)
class CvitSizes:
    """Chapter 5 (CViT: classification from the top of the collapse order). Every model of Table 5
    (ViT, RViT, CViT, the pruning baseline) is trained at these sizes from scratch, per seed."""

    width: int
    depth: int
    heads: int
    mlp_ratio: float
    #  training drop-ratio distribution (copkit.cvit.sample_drop_ratio): "cosine" is the paper's
    # reading
    schedule: str
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
    #: "bf16": training under bfloat16 autocast (copkit.recipe.TrainConfig.precision)
    precision: str = "fp32"
    compile: bool = False  #: compile the transformer blocks (copkit.recipe.TrainConfig.compile)

    def __post_init__(self) -> None:
        _check_ranges(self)


@dataclass(frozen=True)
class BaseSizes:
    """One base model's section of the pretraining config (``copkit/configs/pretrain.yaml``, read by
    :func:`copkit.pretrained.read_config`), as the model modules' ``from_profile`` take it.

    ``model`` holds fields of the network's configuration, ``train`` fields of
    :class:`copkit.recipe.TrainConfig` but ``steps`` and ``seed``; the training passes ``epochs``
    times over ``images`` training images (:attr:`steps`)."""

    model: Mapping[str, Any]
    train: Mapping[str, Any]
    epochs: float
    images: int

    @property
    def steps(self) -> int:
        """``epochs * images // batch_size`` training steps, at least 1."""
        return max(1, int(self.epochs * self.images) // self.train["batch_size"])

    def configs(self, model_class: type, seed: int, **fixed: Any) -> tuple[Any, TrainConfig]:
        """(model configuration, TrainConfig) for one ``seed``: ``model`` read strictly into
        ``model_class`` (:func:`copkit.config.build`), with the fields ``fixed`` that the model's
        module sets for its base model (the section may not name them), and ``train`` with
        :attr:`steps` and ``seed``. A :class:`copkit.config.ConfigError` names the key
        (``model.widht: unknown key; ...``)."""
        clash = sorted(set(self.model) & set(fixed))
        if clash:
            raise ConfigError(f"model.{clash[0]}: set by pretraining ({fixed[clash[0]]!r}), not a "
                              "key of the config")
        return (build(model_class, {**self.model, **fixed}, "model"),
                build(TrainConfig, {**self.train, "steps": self.steps, "seed": seed}, "train"))


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
    #: the base models the chapters start from: the pretraining config (copkit.pretrained:
    #: "full", "smoke" or a file) whose shipped models are in ``<data_dir>/pretrained/``
    pretrain: str = "full"

    def as_dict(self) -> dict:
        return asdict(self)


_FILES = Path(__file__).parent / "configs"


def load_profile(path: str | Path) -> Profile:
    """A profile from a YAML or TOML file (the book's own are ``copkit/configs/<name>.yaml``):
    every key checked by :func:`copkit.config.build`, so a misspelt size is an error, not a
    default."""
    return load(Profile, path)


#: The book's profiles, read from ``copkit/configs/{smoke,cpu,gpu}.yaml``.
PROFILES: dict[str,
               Profile] = {name: load_profile(_FILES / f"{name}.yaml")
                           for name in ("smoke", "cpu", "gpu")}


def get_profile(name: str | Path) -> Profile:
    """The profile called ``name`` (smoke, cpu, gpu), or the one in the YAML/TOML file ``name``
    (copy ``copkit/configs/cpu.yaml`` and edit it); a clear error naming the choices otherwise."""
    if str(name) in PROFILES:
        return PROFILES[str(name)]
    if str(name).endswith((".yaml", ".yml", ".toml")):
        return load_profile(name)
    raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)} or give a "
                     f"profile file (.yaml or .toml, like {_FILES / 'cpu.yaml'})")


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
        raise ValueError("device 'cuda' was asked for but torch sees no CUDA GPU; use "
                         "device='auto' or 'cpu'")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device {preference!r} does not exist: torch sees "
                         f"{torch.cuda.device_count()} GPU(s)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps' was asked for but is not available; use device='auto' or "
                         "'cpu'")
    return dev


@dataclass(frozen=True)
class Chapter:
    """What a chapter works with, from its papermill parameters (:func:`chapter_setup`)."""

    #: the sizes of the profile the chapter runs at
    profile: Profile
    #: the device it computes on (:func:`pick_device`)
    device: torch.device
    #: the offset added to every seed of the profile
    seed: int
    #: where its results file goes
    results_dir: Path
    #: where trained runs and the shipped base models are (None for a chapter that needs none)
    data_dir: Path | None
    #: ``time.perf_counter()`` when the chapter started, for its run time
    started: float = field(default_factory=time.perf_counter)

    def seeds(self, offsets: Iterable[int]) -> list[int]:
        """The seeds of a section of the profile (``offsets``, e.g. ``profile.cvit.seeds``),
        shifted by the chapter's ``seed``.

        >>> chapter_setup("smoke", "cpu", seed=10).seeds([0, 1, 2])
        [10, 11, 12]
        """
        return [self.seed + int(s) for s in offsets]

    def seconds(self) -> float:
        """Seconds since the chapter started."""
        return time.perf_counter() - self.started


def chapter_setup(profile: str | Path, device: str = "auto", seed: int = 0,
                  data_dir: str | Path | None = None,
                  results_dir: str | Path = "../book/results") -> Chapter:
    """Every chapter's set-up, from its papermill parameters, in one call: the profile's sizes
    (:func:`get_profile`), the device (:func:`pick_device`), the seed offset, the folders as paths,
    and the book's plotting style (:func:`copkit.viz.use_book_style`). It also silences tqdm's
    "IProgress not found" warning, which ``tqdm.auto`` (imported by timm) raises in a kernel
    without ipywidgets: the book's bars are plain text (:func:`copkit.io.bars_off`).

    >>> book = chapter_setup("smoke", "cpu", seed=0, data_dir="../data")
    >>> book.profile.name, book.device.type, book.data_dir.name
    ('smoke', 'cpu', 'data')
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    from .viz import use_book_style  # matplotlib only where a chapter draws

    use_book_style()
    warnings.filterwarnings("ignore", message="IProgress not found")
    return Chapter(profile=get_profile(profile), device=pick_device(device), seed=seed,
                   results_dir=Path(results_dir),
                   data_dir=None if data_dir is None else Path(data_dir))
