"""The stages of the method as configured runs: what ``python -m copkit <stage> --config FILE`` does.

Each stage is a frozen dataclass read strictly from a YAML or TOML file (:mod:`copkit.config`) and a
function that runs it by calling the same library functions the chapters call (:func:`copkit.train.fit`
with a model's ``RECIPE``, ``compute_orders``, ``generate``, ``sweep``), so the book and the command
line cannot drift. Every stage runs under ``torchrun`` as well as alone (:mod:`copkit.dist`);
training stages resume from their run folder's checkpoint and write their metrics as JSON lines
there (``<data_dir>/runs/<model>-<hash8>/metrics.jsonl``).

- ``train-comae``: CoMAE on the configured images and tokenizer;
- ``rank``: the collapse order of every image, from a CoMAE run, into one .npz file;
- ``train-cmar``: MAR (random orders) or CMAR (collapse orders), from scratch or fine-tuned;
- ``sample-cmar``: class-conditional samples from a MAR / CMAR run (.npz and a PNG grid);
- ``train-cvit``: ViT / RViT / CViT / the pruning baseline, from scratch or from timm weights;
- ``eval-cvit``: top-1 / top-5 over mask ratios, AuC and the knee, as JSON.

A stage's file may also be made from a profile: ``python -m copkit config <stage> --profile cpu``
prints the configuration the book's chapter uses at that profile, ready to edit; its model and
training sections come from the model's ``from_profile(sizes, seed, **variant)``, the same call the
chapters make (``--variant lambda_c=0``, ``--variant phase=finetune``, ``--variant kind=vit``: see
:func:`from_profile`).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchvision.utils import make_grid, save_image

from . import cmar, comae, cvit, dist
from .cmar import MAR, MARConfig, generate, generation_orders
from .comae import CoMAE, CoMAEConfig
from .config import ConfigError, build
from .curves import auc, knee, sweep, sweep_ratios
from .cvit import RECIPE, CViTConfig, CViTData, build_model, timm_skeleton
from .data import load_fashion_mnist
from .imagefolder import ImageFolderImages
from .io import DamagedFileError, atomic_write_bytes, atomic_write_json, file_sha256
from .orders import compute_orders, load_orders
from .profiles import get_profile
from .tokenizer import TokenSource, make_tokenizer
from .tokens import PATCH
from .checkpoint import load_weights, run_weights
from .recipe import TrainConfig
from .train import fit

__all__ = ["DataConfig", "TokenizerConfig", "TrainComae", "Rank", "TrainCmar", "SampleCmar", "TrainCvit",
           "EvalCvit", "STAGES", "load_images", "run_stage", "from_profile"]


# ------------------------------------------------------------------------------------ sections
@dataclass(frozen=True)
class DataConfig:
    """Which images: Fashion-MNIST (in memory) or a folder tree such as ImageNet (read from disk)."""

    source: str = "fashion-mnist"  #: "fashion-mnist" or "imagefolder"
    root: str | None = None  #: fashion-mnist: the IDX folder (None: search); imagefolder: the folder of splits
    split: str = "train"  #: fashion-mnist: train, test or all; imagefolder: the sub-folder of root (train, val)
    image_size: int = 256  #: imagefolder: side of the center crop
    limit: int | None = None  #: only the first images
    workers: int = 8  #: imagefolder: decoding threads

    def __post_init__(self) -> None:
        if self.source not in ("fashion-mnist", "imagefolder"):
            raise ValueError(f"source must be 'fashion-mnist' or 'imagefolder', got {self.source!r}")

    def describe(self) -> dict:
        """What names the data in a run's hash."""
        return {"source": self.source, "split": self.split, "limit": self.limit,
                **({"image_size": self.image_size, "root": str(self.root)} if self.source == "imagefolder" else {})}


@dataclass(frozen=True)
class TokenizerConfig:
    """How images become tokens (:mod:`copkit.tokenizer`)."""

    kind: str = "pixels"  #: "pixels" (p x p patches) or "kl16" (MAR's VAE)
    patch: int = PATCH  #: pixels: the patch side
    vae: str | None = None  #: kl16: the VAE weights (.safetensors)
    scale: float = 0.2325  #: kl16: MAR's latent scale


def load_images(data: DataConfig) -> tuple[Any, Tensor, int]:
    """(images, labels, channels): a tensor for Fashion-MNIST, a :class:`~copkit.imagefolder.ImageFolderImages`
    for a folder (both indexed by a tensor of indices)."""
    if data.source == "fashion-mnist":
        x, y = load_fashion_mnist(data.split, root=data.root, limit=data.limit)
        return x, y, 1

    if data.root is None:
        raise ConfigError("data.root: the image folder is required for source 'imagefolder'")
    images = ImageFolderImages(Path(data.root) / data.split, data.image_size, data.limit, data.workers)
    return images, images.labels, 3


def _tokenizer(cfg: TokenizerConfig, channels: int, device: torch.device):
    return make_tokenizer(cfg.kind, cfg.patch, channels, cfg.vae, cfg.scale, device)


def _grid(data: DataConfig, tok, images) -> tuple[int, int]:
    side = images[0:1].shape[-1] if data.source == "fashion-mnist" else data.image_size
    if side % tok.stride:
        raise ConfigError(f"images of side {side} do not split into tokens of stride {tok.stride}")
    return side // tok.stride, side // tok.stride


def _check_tokens(model_cfg, grid: tuple[int, int], token_dim: int, where: str) -> None:
    if tuple(model_cfg.grid) != grid or model_cfg.token_dim != token_dim:
        raise ConfigError(f"{where}: grid {tuple(model_cfg.grid)} and token_dim {model_cfg.token_dim} do not match the "
                          f"data and tokenizer, which give grid {grid} and token_dim {token_dim}; set "
                          f"{where}.grid = {list(grid)} and {where}.token_dim = {token_dim}")


def _read_run(run: str | Path) -> dict:
    """A finished run folder's ``config.json`` (``config_hash`` and ``config``), checked."""
    path = Path(run) / "config.json"
    if not path.is_file():
        raise ConfigError(f"{run} is not a finished run folder (no config.json); give the folder a train stage printed")
    if not (Path(run) / "checkpoint.safetensors").is_file():
        raise ConfigError(f"{run} has no checkpoint.safetensors")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as err:  # JSONDecodeError is a ValueError
        raise DamagedFileError(path, f"is not readable JSON, it is truncated or corrupt ({type(err).__name__}: {err})") \
            from err
    if not (isinstance(meta, dict) and isinstance(meta.get("config_hash"), str) and isinstance(meta.get("config"), dict)):
        raise DamagedFileError(path, "holds no config_hash and config: not the config.json of a copkit run")
    return meta


def _run_model(run: str | Path, section: str, cls: type, make, weights: str, device: torch.device | str):
    """A trained run's model: its configuration (``config.json``'s ``section``, read strictly into
    ``cls``), the network ``make(config)`` with the run's EMA weights of ``weights``, in eval mode
    on ``device``. Returns (model, config, the run's config hash)."""
    meta = _read_run(run)
    cfg = build(cls, meta["config"][section], f"{Path(run).name}.{section}")
    model = make(cfg)
    load_weights(run, weights, model, ema=True)
    return model.to(device).eval(), cfg, meta["config_hash"]


def _device(name: str) -> torch.device:
    dev = dist.local_device(name)
    dist.setup(dev)
    return dev


# ------------------------------------------------------------------------------------ stages
@dataclass(frozen=True)
class TrainComae:
    """``train-comae``: the last ``val_images`` images are held out for validation."""

    model: CoMAEConfig
    train: TrainConfig
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    val_images: int = 256
    data_dir: str = "data"  #: the run goes to <data_dir>/runs/comae-<hash8>
    device: str = "auto"


def train_comae(cfg: TrainComae) -> Path:
    dev = _device(cfg.device)
    images, _, channels = load_images(cfg.data)
    tok = _tokenizer(cfg.tokenizer, channels, dev)
    _check_tokens(cfg.model, _grid(cfg.data, tok, images), tok.token_dim, "model")
    n = len(images)
    if not 0 < cfg.val_images < n:
        raise ConfigError(f"val_images: must be between 1 and {n - 1} (the data has {n} images)")
    if isinstance(images, Tensor) and cfg.tokenizer.kind == "pixels":
        tokens = tok.encode(images)
        train_tokens, val_tokens = tokens[:n - cfg.val_images], tokens[n - cfg.val_images:]
    else:
        src = TokenSource(images, tok, dev)
        train_tokens = _Prefix(src, n - cfg.val_images)
        val_tokens = src[n - cfg.val_images:n]
    data = {**cfg.data.describe(), "tokenizer": _tokenizer_id(cfg.tokenizer), "val_images": cfg.val_images}
    folder = fit(comae.RECIPE, cfg.model, cfg.train, comae.CoMAEData(train_tokens, val_tokens), data, cfg.data_dir,
                 device=dev, desc="CoMAE").folder
    _say(f"CoMAE run: {folder} (checkpoint.safetensors, metrics.jsonl)")
    return folder


class _Prefix:
    """The first ``n`` items of an indexable source."""

    def __init__(self, source, n: int) -> None:
        self.source, self.n = source, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, idx):
        return self.source[idx]

    def to(self, device):
        if hasattr(self.source, "to"):
            self.source.to(device)
        return self


def _tokenizer_id(cfg: TokenizerConfig) -> dict:
    if cfg.kind == "pixels":
        return {"kind": "pixels", "patch": cfg.patch}
    return {"kind": cfg.kind, "scale": cfg.scale, "vae_sha256": file_sha256(cfg.vae)[:16] if cfg.vae else None}


def _say(text: str) -> None:
    if dist.is_main():
        print(text, flush=True)


@dataclass(frozen=True)
class Rank:
    """``rank``: the collapse orders of every image of ``data`` from the CoMAE of ``comae_run``."""

    comae_run: str  #: a run folder written by train-comae
    out: str  #: the orders file (.npz)
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    shard_size: int = 4096
    chunk: int = 64  #: images whose N masks go through f together
    damping: float = 0.85
    device: str = "auto"


def load_comae_run(run: str | Path, device: torch.device | str = "cpu"):
    """(CoMAE with the run's EMA weights, the run's config hash)."""
    model, _, digest = _run_model(run, "comae", CoMAEConfig, CoMAE, "comae", device)
    return model, digest


def rank(cfg: Rank) -> Path:
    dev = _device(cfg.device)
    model, digest = load_comae_run(cfg.comae_run, dev)
    images, _, channels = load_images(cfg.data)
    tok = _tokenizer(cfg.tokenizer, channels, dev)
    _check_tokens(model.cfg, _grid(cfg.data, tok, images), tok.token_dim, "comae_run's model")
    split = np.array([cfg.data.split] * len(images))
    out = compute_orders(model, TokenSource(images, tok, dev), cfg.out, digest, split, shard_size=cfg.shard_size,
                         device=dev, damping=cfg.damping, chunk=cfg.chunk)
    _say(f"collapse orders of {len(images)} images: {out}")
    return Path(cfg.out)


def _orders_for(path: str | None, n: int) -> tuple[Tensor | None, str | None]:
    if path is None:
        return None, None
    orders, _, digest = load_orders(path, splits=None)  # the split is not read here: an image folder's names
    if len(orders) != n:
        raise ConfigError(f"orders: {path} holds {len(orders)} orders but the data has {n} images; rank the same data")
    return torch.from_numpy(orders.astype(np.int64)), digest


@dataclass(frozen=True)
class TrainCmar:
    """``train-cmar``: ``kind`` "random" is MAR, "descending" CMAR, "ascending" Table 4's ablation."""

    model: MARConfig
    train: TrainConfig
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    kind: str = "random"
    orders: str | None = None  #: the rank stage's file for the same data (collapse kinds)
    random_fraction: float = 0.1  #: CMAR's share of random orders
    init_run: str | None = None  #: fine-tune from this MAR run folder
    data_dir: str = "data"
    device: str = "auto"


#: what a fine-tune may change of the MAR it starts from (the rest is the architecture)
_TRAINING_FIELDS = {"diffusion_batch_mul", "mask_ratio_min", "label_drop", "dropout", "clip_x0"}


def _check_architecture(model: MARConfig, init: MARConfig, run: str) -> None:
    differ = [f"model.{f.name} = {getattr(model, f.name)!r} here, {getattr(init, f.name)!r} in {run}"
              for f in fields(MARConfig) if f.name not in _TRAINING_FIELDS and getattr(model, f.name) != getattr(init, f.name)]
    if differ:
        raise ConfigError("init_run: the model must have the architecture of the run it starts from: " + "; ".join(differ))


def train_cmar(cfg: TrainCmar) -> Path:
    dev = _device(cfg.device)
    images, labels, channels = load_images(cfg.data)
    tok = _tokenizer(cfg.tokenizer, channels, dev)
    _check_tokens(cfg.model, _grid(cfg.data, tok, images), tok.token_dim, "model")
    if int(labels.max()) >= cfg.model.n_classes:
        raise ConfigError(f"model.n_classes: the data has {int(labels.max()) + 1} classes, the model {cfg.model.n_classes}")
    collapse, comae_hash = _orders_for(cfg.orders, len(images))
    if cfg.kind != "random" and collapse is None:
        raise ConfigError(f"orders: kind {cfg.kind!r} needs the collapse orders of the training images (rank stage)")
    init = None
    if cfg.init_run:
        meta = _read_run(cfg.init_run)
        _check_architecture(cfg.model, build(MARConfig, meta["config"]["mar"], f"{Path(cfg.init_run).name}.mar"),
                            cfg.init_run)
        init = (meta["config_hash"], run_weights(cfg.init_run, cmar.RECIPE.module)[0])
    data = {**cfg.data.describe(), "tokenizer": _tokenizer_id(cfg.tokenizer), "orders_comae": comae_hash}
    mar_data = cmar.MARData(images, labels, cfg.kind, collapse, cfg.random_fraction, tok.encode, tok.stride)
    folder = fit(cmar.RECIPE, cfg.model, cfg.train, mar_data, data, cfg.data_dir, init=init, device=dev,
                 desc=f"MAR ({cfg.kind})").folder
    _say(f"MAR run: {folder}")
    return folder


@dataclass(frozen=True)
class SampleCmar:
    """``sample-cmar``: ``per_class`` images of every class (or of ``classes``)."""

    mar_run: str
    out: str  #: .npz with uint8 images and labels; a PNG grid is written beside it
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    per_class: int = 10
    classes: tuple[int, ...] | None = None
    order: str = "random"  #: random, class-mean or class-image (the latter two need orders + data)
    orders: str | None = None
    data: DataConfig = field(default_factory=DataConfig)  #: the images the orders belong to (their labels)
    steps: int = 64  #: MAR's num_iter
    cfg_scale: float = 3.0  #: classifier-free guidance (1: none)
    temperature: float = 1.0
    diffusion_steps: int = 100
    batch_size: int = 256
    seed: int = 0
    device: str = "auto"


def sample_cmar(cfg: SampleCmar) -> Path:
    dev = _device(cfg.device)
    model, mcfg, _ = _run_model(cfg.mar_run, "mar", MARConfig, MAR, "mar", dev)
    channels = mcfg.token_dim // cfg.tokenizer.patch ** 2 if cfg.tokenizer.kind == "pixels" else 3
    tok = _tokenizer(cfg.tokenizer, channels, dev)
    if tok.token_dim != mcfg.token_dim:
        raise ConfigError(f"tokenizer: gives {tok.token_dim}-dim tokens, the MAR was trained on {mcfg.token_dim}")
    classes = cfg.classes if cfg.classes is not None else tuple(range(mcfg.n_classes))
    labels = torch.tensor(classes, dtype=torch.long).repeat_interleave(cfg.per_class)
    try:
        part = dist.shard(len(labels))
    except ValueError as err:
        raise ConfigError(f"per_class x classes = {len(labels)} samples: {err}") from None
    collapse = collapse_labels = None
    if cfg.order != "random":
        images, collapse_labels, _ = load_images(cfg.data)
        collapse, _ = _orders_for(cfg.orders, len(collapse_labels))
    orders = lambda y, g: generation_orders(cfg.order, y, g, mcfg.n_tokens, collapse, collapse_labels)  # noqa: E731
    mine = generate(model, part.cut(labels), orders, cfg.seed + dist.rank(), cfg.steps, cfg.diffusion_steps,
                    cfg.cfg_scale, cfg.temperature, cfg.batch_size, progress=dist.is_main(),
                    decode=lambda t: tok.decode(t, mcfg.grid))
    pixels = ((mine + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    gathered = [pixels]
    if dist.world_size() > 1:  # process r generated its share with seed + r; rank 0 writes them all
        send = pixels.to(dev) if dev.type == "cuda" else pixels  # nccl gathers on the GPU
        gathered = [torch.empty_like(send) for _ in range(dist.world_size())]
        torch.distributed.all_gather(gathered, send)
    if dist.is_main():
        out = Path(cfg.out)
        allpix = torch.cat([g.cpu() for g in gathered])
        buf = io.BytesIO()
        np.savez(buf, images=allpix.numpy(), labels=labels.numpy())
        atomic_write_bytes(out, buf.getvalue())
        _grid_png(allpix[: 8 * 8], out.with_suffix(".png"))
        print(f"{len(allpix)} samples: {out} (grid: {out.with_suffix('.png')})")
    dist.barrier()
    return Path(cfg.out)


def _grid_png(pixels: Tensor, path: Path) -> None:
    save_image(make_grid(pixels.float() / 255.0, nrow=8), str(path))


@dataclass(frozen=True)
class TrainCvit:
    """``train-cvit``: ``model.train_drop`` picks ViT (none), RViT (random), CViT (collapse) or the pruner (learned)."""

    model: CViTConfig
    train: TrainConfig
    data: DataConfig = field(default_factory=DataConfig)
    orders: str | None = None  #: the rank stage's file for the same data (CViT)
    weights: str | None = None  #: local pretrained weights for model.timm_model (None: the hub, online)
    data_dir: str = "data"
    device: str = "auto"


def train_cvit(cfg: TrainCvit) -> Path:
    dev = _device(cfg.device)
    images, labels, channels = load_images(cfg.data)
    if channels != cfg.model.in_chans:
        raise ConfigError(f"model.in_chans: the images have {channels} channels, the config says {cfg.model.in_chans}")
    orders, comae_hash = _orders_for(cfg.orders, len(images))
    data = {**cfg.data.describe(), "orders_comae": comae_hash,
            "weights_sha256": file_sha256(cfg.weights)[:16] if cfg.weights else None}
    cvit_data = CViTData(images, labels, orders if cfg.model.train_drop == "collapse" else None, cfg.weights)
    folder = fit(RECIPE, cfg.model, cfg.train, cvit_data, data, cfg.data_dir, device=dev,
                 desc=f"ViT ({cfg.model.train_drop})").folder
    _say(f"classifier run: {folder}")
    return folder


@dataclass(frozen=True)
class EvalCvit:
    """``eval-cvit``: accuracy over mask ratios of a train-cvit run, AuC and the Kneedle knee."""

    cvit_run: str
    out: str  #: a JSON file
    data: DataConfig = field(default_factory=lambda: DataConfig(split="test"))
    orders: str | None = None  #: collapse orders of these images (for order "collapse")
    order: str = "collapse"  #: collapse, random or learned (the pruner)
    ratios: int = 34  #: evenly spaced mask ratios from 0 to 0.99 (plus 0.3, 0.5, 0.78)
    batch_size: int = 256
    device: str = "auto"


def eval_cvit(cfg: EvalCvit) -> Path:
    dev = _device(cfg.device)
    make = lambda c: timm_skeleton(c) if c.timm_model else build_model(c)  # noqa: E731 - the checkpoint fills every weight
    model, _, _ = _run_model(cfg.cvit_run, "cvit", CViTConfig, make, "model", dev)
    images, labels, _ = load_images(cfg.data)
    orders, _ = _orders_for(cfg.orders, len(images))
    ratios = sweep_ratios(cfg.ratios)
    res = sweep(model, (images, labels, orders), ratios, cfg.order, cfg.batch_size, progress=True)
    k = knee(res["ratios"], res["top1"])
    result = {**res, "auc": auc(res["ratios"], res["top1"]), "knee_ratio": k[0], "knee_top1": k[1],
              "run": str(cfg.cvit_run), "order": cfg.order}

    if dist.is_main():
        atomic_write_json(cfg.out, result)
        print(f"AuC {result['auc']:.2f}, knee at {k[0]:.2f} masked ({k[1]:.1f}% top-1): {cfg.out}")
    return Path(cfg.out)


#: stage name -> (configuration class, runner)
STAGES: dict[str, tuple[type, Any]] = {
    "train-comae": (TrainComae, train_comae),
    "rank": (Rank, rank),
    "train-cmar": (TrainCmar, train_cmar),
    "sample-cmar": (SampleCmar, sample_cmar),
    "train-cvit": (TrainCvit, train_cvit),
    "eval-cvit": (EvalCvit, eval_cvit),
}


def run_stage(name: str, config: Any) -> Path:
    """Run stage ``name`` with its configuration object."""
    cls, runner = STAGES[name]
    if not isinstance(config, cls):
        raise TypeError(f"stage {name} takes a {cls.__name__}, got {type(config).__name__}")
    return runner(config)


#: the variants of each training stage, as ``from_profile`` keywords: the model module's
#: ``from_profile`` takes them
_VARIANTS = {"train-comae": ("lambda_c", "experiment"), "train-cmar": ("phase",), "train-cvit": ("kind",)}


def from_profile(stage: str, profile: str | Path, seed: int = 0, data_dir: str = "data", **variant: Any) -> Any:
    """The configuration of ``stage`` that the book's chapter uses at ``profile`` (seed ``seed``).

    A training stage's model and training sections are the model module's
    ``from_profile(sizes, seed, **variant)``, exactly what the chapters train with:
    ``train-comae`` takes ``lambda_c`` (None: the saved CoMAE's, the paper's 0.01) and
    ``experiment`` (:data:`copkit.comae.EXPERIMENTS`), ``train-cmar`` ``phase``
    (:data:`copkit.cmar.PHASES`; the collapse phases train CMAR on descending orders, the fine-tune
    from a MAR run), ``train-cvit`` ``kind`` (:data:`copkit.cvit.MODEL_KINDS`).
    """
    unknown = set(variant) - set(_VARIANTS.get(stage, ()))
    if unknown:
        known = ", ".join(_VARIANTS.get(stage, ())) or "none"
        raise ConfigError(f"{stage} has no variant {', '.join(sorted(unknown))}; its variants: {known}")
    p = get_profile(profile)
    fm = DataConfig()
    if stage == "train-comae":
        mcfg, tc = comae.from_profile(p.comae, seed, **variant)
        n = (p.comae.train_images or 60000) - 5000  # the chapter's training images; it validates on later ones
        return TrainComae(model=mcfg, train=tc, data=replace(fm, limit=n + p.comae.val_images),
                          val_images=p.comae.val_images, data_dir=data_dir)
    if stage == "rank":
        return Rank(comae_run=f"{data_dir}/runs/comae-<hash8>", out=f"{data_dir}/orders.npz", data=replace(fm, split="all"))
    if stage == "train-cmar":
        mcfg, tc = cmar.from_profile(p.cmar, seed, **variant)
        phase = variant.get("phase", "mar")
        collapse = {} if phase == "mar" else {"kind": "descending", "orders": f"{data_dir}/orders.npz"}
        init = {"init_run": f"{data_dir}/runs/mar-<hash8>"} if phase == "finetune" else {}
        return TrainCmar(model=mcfg, train=tc, data=replace(fm, limit=p.cmar.train_images), data_dir=data_dir,
                         **collapse, **init)
    if stage == "sample-cmar":
        return SampleCmar(mar_run=f"{data_dir}/runs/mar-<hash8>", out="samples.npz", per_class=10,
                          steps=p.cmar.gen_steps, cfg_scale=p.cmar.cfg_scale, diffusion_steps=p.cmar.diffusion_steps)
    if stage == "train-cvit":
        mcfg, tc = cvit.from_profile(p.cvit, seed, **variant)
        orders = f"{data_dir}/orders.npz" if mcfg.train_drop == "collapse" else None
        return TrainCvit(model=mcfg, train=tc, data=replace(fm, limit=p.cvit.train_images or 60000), orders=orders,
                         data_dir=data_dir)
    if stage == "eval-cvit":
        return EvalCvit(cvit_run=f"{data_dir}/runs/cvit-<hash8>", out="cvit-eval.json",
                        data=DataConfig(split="test", limit=p.cvit.test_images), ratios=p.cvit.ratios)
    raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
