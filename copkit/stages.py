"""The stages of the method as configured runs: what ``python -m copkit <stage> --config FILE``
does.

Each stage is a frozen dataclass read strictly from a YAML or TOML file (:mod:`copkit.config`) and a
function that runs it by calling the same library functions the chapters call
(:func:`copkit.train.fit` with a model's ``RECIPE``, ``compute_orders``, ``generate``, ``sweep``),
so the book and the command line cannot drift. Every stage runs under ``torchrun`` as well as alone
(:mod:`copkit.dist`); training stages resume from their run folder's checkpoint and write their
metrics as JSON lines there (``<data_dir>/runs/<model>-<hash8>/metrics.jsonl``).

- ``train-comae``: CoMAE on the configured images and tokenizer;
- ``rank``: the collapse order of every image, from a CoMAE run, into one .npz file;
- ``train-cmar``: MAR (random orders) or CMAR (collapse orders), from scratch or fine-tuned;
- ``sample-cmar``: class-conditional samples from a MAR / CMAR run (.npz and a PNG grid);
- ``train-cvit``: ViT / RViT / CViT / the pruning baseline, from scratch or from timm weights;
- ``eval-cvit``: top-1 / top-5 over mask ratios, AuC and the knee, as JSON.

A stage's file may also be made from a profile: ``python -m copkit config <stage> --profile cpu``
prints the configuration the book's chapter uses at that profile, ready to edit
(:func:`chapter_config`; ``--variant lambda_c=0``, ``--variant kind=random``,
``--variant kind=vit``). Its model and training sections come from the model's
``from_profile(sizes, seed, **variant)``, the same call the chapters make; it starts from the same
shipped base model (``init: pretrained:vit``) and the same collapse orders
(``orders: pretrained:comae``), and describes its data as the chapter does, so a training stage made
from a profile trains the very run the chapter trains, in the same run folder (:func:`run_config`,
which ``config`` prints).
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

from . import cmar, comae, cvit, dist, pretrained
from .checkpoint import load_weights, run_weights
from .cmar import MAR, MARConfig, generate, generation_orders
from .comae import CoMAE, CoMAEConfig
from .config import ConfigError, build
from .curves import auc, knee, sweep, sweep_ratios
from .cvit import RECIPE, CViTConfig, CViTData, build_model, timm_skeleton
from .data import load_fashion_mnist
from .imagefolder import ImageFolderImages
from .io import DamagedFileError, atomic_write_bytes, atomic_write_json, file_sha256
from .orders import compute_orders, dataset_orders, load_orders, orders_digest
from .profiles import get_profile
from .recipe import Recipe, TrainConfig
from .tokenizer import TokenSource, make_tokenizer
from .tokens import PATCH
from .train import fit

__all__ = ["DataConfig", "TokenizerConfig", "TrainComae", "Rank", "TrainCmar", "SampleCmar",
           "TrainCvit", "EvalCvit", "STAGES", "PRETRAINED", "load_images", "run_config",
           "run_stage", "chapter_config"]

#: how a stage names a shipped base model (``init: pretrained:vit``) or the collapse orders of
#: Fashion-MNIST by a shipped CoMAE (``orders: pretrained:comae``), of its ``pretrain`` config
PRETRAINED = "pretrained:"
#: the images of Fashion-MNIST's splits
_FASHION_MNIST = {"train": 60_000, "test": 10_000, "all": 70_000}


# ------------------------------------------------------------------------------------ sections
@dataclass(frozen=True)
class DataConfig:
    """Which images: Fashion-MNIST (in memory) or a folder tree such as ImageNet (read from
    disk)."""

    source: str = "fashion-mnist"  #: "fashion-mnist" or "imagefolder"
    #: fashion-mnist: the IDX folder (None: search); imagefolder: the folder of splits
    root: str | None = None
    #: fashion-mnist: train, test or all; imagefolder: the sub-folder of root (train, val)
    split: str = "train"
    image_size: int = 256  #: imagefolder: side of the center crop
    limit: int | None = None  #: only the first images (after ``start``)
    workers: int = 8  #: imagefolder: decoding threads
    #: fashion-mnist: skip the first images (the chapters hold out the last 5,000 training images:
    #: start 55000 reads them)
    start: int = 0

    def __post_init__(self) -> None:
        if self.source not in ("fashion-mnist", "imagefolder"):
            raise ValueError("source must be 'fashion-mnist' or 'imagefolder', got "
                             f"{self.source!r}")
        if self.start < 0 or (self.start and self.source != "fashion-mnist"):
            raise ValueError(f"start must be >= 0, and 0 for an image folder; got {self.start}")

    def describe(self) -> dict:
        """What names the data in a run's hash."""
        return {"source": self.source, "split": self.split, "limit": self.limit,
                **({"start": self.start} if self.start else {}),
                **({"image_size": self.image_size, "root": str(self.root)}
                   if self.source == "imagefolder" else {})}

    def fashion_mnist_train(self) -> int | None:
        """How many images this names when it is the chapters' data, Fashion-MNIST's training
        split from its first image (the first ``limit``); None for any other data."""
        if self.source != "fashion-mnist" or self.split != "train" or self.start:
            return None
        return (_FASHION_MNIST["train"] if self.limit is None
                else min(self.limit, _FASHION_MNIST["train"]))


@dataclass(frozen=True)
class TokenizerConfig:
    """How images become tokens (:mod:`copkit.tokenizer`)."""

    kind: str = "pixels"  #: "pixels" (p x p patches) or "kl16" (MAR's VAE)
    patch: int = PATCH  #: pixels: the patch side
    vae: str | None = None  #: kl16: the VAE weights (.safetensors)
    scale: float = 0.2325  #: kl16: MAR's latent scale


def load_images(data: DataConfig) -> tuple[Any, Tensor, int]:
    """(images, labels, channels): a tensor for Fashion-MNIST,
    a :class:`~copkit.imagefolder.ImageFolderImages` for a folder (both indexed by a tensor of
    indices)."""
    if data.source == "fashion-mnist":
        x, y = load_fashion_mnist(data.split, root=data.root,
                                  limit=None if data.limit is None else data.start + data.limit)
        return x[data.start:], y[data.start:], 1

    if data.root is None:
        raise ConfigError("data.root: the image folder is required for source 'imagefolder'")
    images = ImageFolderImages(Path(data.root) / data.split, data.image_size, data.limit,
                               data.workers)
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
        raise ConfigError(f"{where}: grid {tuple(model_cfg.grid)} and token_dim "
                          f"{model_cfg.token_dim} do not match the data and tokenizer, which give "
                          f"grid {grid} and token_dim {token_dim}; set {where}.grid = {list(grid)} "
                          f"and {where}.token_dim = {token_dim}")


def _read_run(run: str | Path) -> dict:
    """A finished run folder's ``config.json`` (``config_hash`` and ``config``), checked."""
    path = Path(run) / "config.json"
    if not path.is_file():
        raise ConfigError(f"{run} is not a finished run folder (no config.json); give the folder a "
                          "train stage printed")
    if not (Path(run) / "checkpoint.safetensors").is_file():
        raise ConfigError(f"{run} has no checkpoint.safetensors")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as err:  # JSONDecodeError is a ValueError
        raise DamagedFileError(path, "is not readable JSON, it is truncated or corrupt "
                                     f"({type(err).__name__}: {err})") \
            from err
    if (not (isinstance(meta, dict) and isinstance(meta.get("config_hash"), str)
             and isinstance(meta.get("config"), dict))):
        raise DamagedFileError(path, "holds no config_hash and config: not the config.json of a "
                                     "copkit run")
    return meta


def _run_model(run: str | Path, section: str, cls: type, make, weights: str,
               device: torch.device | str):
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
    """``train-comae``: ``val_images`` validation images, from ``val_data`` or else the last of
    ``data`` (held out of training)."""

    model: CoMAEConfig
    train: TrainConfig
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    val_images: int = 256
    #: where the validation images come from (their first ``val_images``); None: the end of ``data``
    val_data: DataConfig | None = None
    data_dir: str = "data"  #: the run goes to <data_dir>/runs/comae-<hash8>
    device: str = "auto"


def _comae_data(cfg: TrainComae) -> dict:
    """The description of a CoMAE's training data: Chapter 2's for Fashion-MNIST's training images
    in pixel tokens (:func:`copkit.comae.fashion_mnist_data`), the whole configuration otherwise."""
    n = cfg.data.fashion_mnist_train()
    if n is not None and cfg.tokenizer.kind == "pixels":
        train = n - (cfg.val_images if cfg.val_data is None else 0)
        return {"dataset": "fashion-mnist", "split": "train", "train_images": train,
                "patch": cfg.tokenizer.patch}
    return {**cfg.data.describe(), "tokenizer": _tokenizer_id(cfg.tokenizer),
            "val_images": cfg.val_images,
            **({"val_data": cfg.val_data.describe()} if cfg.val_data is not None else {})}


def train_comae(cfg: TrainComae) -> Path:
    dev = _device(cfg.device)
    run = run_config(cfg)
    images, _, channels = load_images(cfg.data)
    _check_count(cfg.data, images)
    tok = _tokenizer(cfg.tokenizer, channels, dev)
    _check_tokens(cfg.model, _grid(cfg.data, tok, images), tok.token_dim, "model")
    if cfg.val_data is None:
        if not 0 < cfg.val_images < len(images):
            raise ConfigError(f"val_images: must be between 1 and {len(images) - 1} (the data has "
                              f"{len(images)} images)")
        n = len(images) - cfg.val_images
        val_images = images[n:]
    else:
        n, val_images = len(images), load_images(cfg.val_data)[0][:cfg.val_images]
        if not 0 < cfg.val_images <= len(val_images):
            raise ConfigError(f"val_images: must be between 1 and the {len(val_images)} images of "
                              "val_data")
    if isinstance(images, Tensor) and cfg.tokenizer.kind == "pixels":
        train_tokens, val_tokens = tok.encode(images[:n]), tok.encode(val_images)
    else:
        train_tokens = _Prefix(TokenSource(images, tok, dev), n)
        val_tokens = TokenSource(val_images, tok, dev)[0:len(val_images)]
    folder = fit(comae.RECIPE, cfg.model, cfg.train, comae.CoMAEData(train_tokens, val_tokens),
                 run["data"], cfg.data_dir, device=dev, desc="CoMAE").folder
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
    return {"kind": cfg.kind, "scale": cfg.scale,
            "vae_sha256": file_sha256(cfg.vae)[:16] if cfg.vae else None}


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
    #: images whose N masks go through f together (None: comae.masks_chunk)
    chunk: int | None = None
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
    out = compute_orders(model, TokenSource(images, tok, dev), cfg.out, digest, split,
                         shard_size=cfg.shard_size, device=dev, damping=cfg.damping,
                         chunk=cfg.chunk)
    _say(f"collapse orders of {len(images)} images: {out}")
    return Path(cfg.out)


def _orders_for(path: str | None, n: int) -> tuple[Tensor | None, str | None]:
    if path is None:
        return None, None
    # the split is not read here: an image folder's names
    orders, _, digest = load_orders(path, splits=None)
    if len(orders) != n:
        raise ConfigError(f"orders: {path} holds {len(orders)} orders but the data has {n} images; "
                          "rank the same data")
    return torch.from_numpy(orders.astype(np.int64)), digest


# ---------------------------------------------------------------------------- fine-tunes and orders
def _shipped(ref: str | None, kind: str | None = None, where: str = "init") -> str | None:
    """NAME of a ``pretrained:NAME`` reference (checked to be a base model of ``kind``), else
    None."""
    if ref is None or not ref.startswith(PRETRAINED):
        return None
    name = ref[len(PRETRAINED):]
    try:
        found = pretrained.kind_of(name)
    except ValueError as err:
        raise ConfigError(f"{where}: {err}") from None
    if kind is not None and found != kind:
        raise ConfigError(f"{where}: {ref} is a {found}, not a {kind}")
    return name


def _init_hash(init: str | None, pretrain: str, kind: str) -> str | None:
    """The hash of the run a fine-tune starts from: a shipped base model's (computed from the
    pretraining config, as its file is named) or a run folder's."""
    if init is None:
        return None
    name = _shipped(init, kind)
    return pretrained.run_hash(name, pretrain) if name else _read_run(init)["config_hash"]


def _orders_hash(orders: str | None, pretrain: str) -> str | None:
    """The hash of the CoMAE that made the collapse orders: a shipped CoMAE's, or an orders
    file's."""
    if orders is None:
        return None
    name = _shipped(orders, "comae", "orders")
    return pretrained.run_hash(name, pretrain) if name else orders_digest(orders)


def _load_orders(orders: str | None, pretrain: str, data: DataConfig, data_dir: str, n: int,
                 device: torch.device) -> Tensor | None:
    """The collapse orders of the ``n`` training images: the rank stage's file, or for
    ``pretrained:NAME`` those of Fashion-MNIST by the shipped CoMAE
    (:func:`copkit.orders.dataset_orders`, made when missing), as the chapters read them."""
    name = _shipped(orders, "comae", "orders")
    if name is None:
        return _orders_for(orders, n)[0]
    if data.fashion_mnist_train() is None:
        raise ConfigError(f"orders: {orders} orders Fashion-MNIST's training images; this data is "
                          "not (give the rank stage's file of it)")
    return dataset_orders(pretrain, data_dir, device, n_train=n, n_test=0, comae=name)[0]


#: what a fine-tune may change of the network it starts from (the rest is the architecture)
_TRAINING_FIELDS = {MARConfig: {"diffusion_batch_mul", "mask_ratio_min", "label_drop", "dropout",
                                "clip_x0"},
                    CViTConfig: {"train_drop", "schedule", "max_drop", "flip", "shift",
                                 "label_smoothing"}}


def _check_architecture(model_cfg: Any, start: Any, where: str) -> None:
    """``model_cfg`` must have the architecture of ``start``, the configuration of the network a
    fine-tune starts from (``where``): every field but those a fine-tune may change."""
    cls = type(model_cfg)
    differ = [f"model.{f.name} = {getattr(model_cfg, f.name)!r} here, {getattr(start, f.name)!r} "
              f"in {where}" for f in fields(cls) if f.name not in _TRAINING_FIELDS[cls]
              and getattr(model_cfg, f.name) != getattr(start, f.name)]
    if differ:
        raise ConfigError("init: the model must have the architecture of the network it starts "
                          "from: " + "; ".join(differ))


def _init_weights(init: str, pretrain: str, data_dir: str, recipe: Recipe, kind: str,
                  model_cfg: Any, device: torch.device) -> dict[str, Tensor]:
    """The weights a fine-tune starts from (a shipped base model's of ``kind``, or a run's EMA
    weights), after checking that ``model_cfg`` has the architecture of the network they belong
    to."""
    name = _shipped(init, kind)
    if name:
        model, _ = pretrained.base(pretrain, name, data_dir, device)
        meta = pretrained.info(name, pretrain, Path(data_dir) / "pretrained")
        state = model.state_dict()
    else:
        meta = _read_run(init)
        state = run_weights(init, recipe.module)[0]
    _check_architecture(model_cfg,
                        build(type(model_cfg), meta["config"][recipe.name],
                              f"{init}.{recipe.name}"), init)
    return state


def _check_count(data: DataConfig, images: Any) -> None:
    """The chapters' data is named by its count (:meth:`DataConfig.fashion_mnist_train`): the
    files must hold it."""
    n = data.fashion_mnist_train()
    if n is not None and len(images) != n:
        raise ConfigError(f"data: Fashion-MNIST's training split holds {len(images)} images here, "
                          f"not {n}: its files are not the whole data set")


@dataclass(frozen=True)
class TrainCmar:
    """``train-cmar``: ``kind`` "random" is MAR, "descending" CMAR, "ascending" Table 4's
    ablation, "fixed" and "centre-out" CMAR on one order for every image (Chapter 4's controls,
    :data:`copkit.cmar.ONE_ORDER_KINDS`)."""

    model: MARConfig
    train: TrainConfig
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    kind: str = "random"
    #: the collapse orders of the training images: the rank stage's file, or ``pretrained:comae``
    #: (Fashion-MNIST's, by the shipped CoMAE); needed by the collapse kinds, named by any
    orders: str | None = None
    random_fraction: float = 0.1  #: CMAR's share of random orders
    #: fine-tune from: ``pretrained:mar`` (the shipped base MAR) or a MAR run folder (a train-cmar
    #: run, or MAR's released checkpoint through ``copkit convert-mar``); None: from scratch
    init: str | None = None
    #: the pretraining config whose shipped models ``pretrained:`` names (full, smoke or a file),
    #: in ``<data_dir>/pretrained/``
    pretrain: str = "full"
    data_dir: str = "data"
    device: str = "auto"


def _cmar_data(cfg: TrainCmar) -> dict:
    """The description of MAR's training data: Chapter 4's for Fashion-MNIST's training images in
    pixel tokens (:func:`copkit.cmar.fashion_mnist_data`), the whole configuration otherwise."""
    n, digest = cfg.data.fashion_mnist_train(), _orders_hash(cfg.orders, cfg.pretrain)
    if n is not None and cfg.tokenizer.kind == "pixels":
        return cmar.fashion_mnist_data(n, digest, cfg.tokenizer.patch)
    return {**cfg.data.describe(), "tokenizer": _tokenizer_id(cfg.tokenizer),
            "orders_comae": digest}


def train_cmar(cfg: TrainCmar) -> Path:
    dev = _device(cfg.device)
    run = run_config(cfg)
    images, labels, channels = load_images(cfg.data)
    _check_count(cfg.data, images)
    tok = _tokenizer(cfg.tokenizer, channels, dev)
    _check_tokens(cfg.model, _grid(cfg.data, tok, images), tok.token_dim, "model")
    if int(labels.max()) >= cfg.model.n_classes:
        raise ConfigError(f"model.n_classes: the data has {int(labels.max()) + 1} classes, the "
                          f"model {cfg.model.n_classes}")
    needs_orders = cfg.kind not in ("random", "centre-out")
    if needs_orders and cfg.orders is None:
        raise ConfigError(f"orders: kind {cfg.kind!r} needs the collapse orders of the training "
                          "images (rank stage)")
    collapse = None if not needs_orders else _load_orders(cfg.orders, cfg.pretrain, cfg.data,
                                                              cfg.data_dir,
                                                               len(images), dev)
    init = None if cfg.init is None else (
        run["init"],
        _init_weights(cfg.init, cfg.pretrain, cfg.data_dir, cmar.RECIPE, "mar", cfg.model, dev))
    mar_data = cmar.MARData(images, labels, cfg.kind, collapse, cfg.random_fraction, tok.encode,
                            tok.stride)
    folder = fit(cmar.RECIPE, cfg.model, cfg.train, mar_data, run["data"], cfg.data_dir, init=init,
                 device=dev, desc=f"MAR ({cfg.kind})").folder
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
    #: random, class-mean, class-image or fixed (all but random need orders + data)
    order: str = "random"
    orders: str | None = None
    #: the images the orders belong to (their labels)
    data: DataConfig = field(default_factory=DataConfig)
    steps: int = 64  #: MAR's num_iter
    cfg_scale: float = 3.0  #: classifier-free guidance (1: none)
    temperature: float = 1.0
    diffusion_steps: int = 100
    batch_size: int = 256
    seed: int = 0
    device: str = "auto"


def sample_cmar(cfg: SampleCmar) -> Path:
    dev = _device(cfg.device)
    model, model_cfg, _ = _run_model(cfg.mar_run, "mar", MARConfig, MAR, "mar", dev)
    channels = (model_cfg.token_dim // cfg.tokenizer.patch ** 2 if cfg.tokenizer.kind == "pixels"
                else 3)
    tok = _tokenizer(cfg.tokenizer, channels, dev)
    if tok.token_dim != model_cfg.token_dim:
        raise ConfigError(f"tokenizer: gives {tok.token_dim}-dim tokens, the MAR was trained on "
                          f"{model_cfg.token_dim}")
    classes = cfg.classes if cfg.classes is not None else tuple(range(model_cfg.n_classes))
    labels = torch.tensor(classes, dtype=torch.long).repeat_interleave(cfg.per_class)
    try:
        part = dist.shard(len(labels))
    except ValueError as err:
        raise ConfigError(f"per_class x classes = {len(labels)} samples: {err}") from None
    collapse = collapse_labels = None
    if cfg.order != "random":
        images, collapse_labels, _ = load_images(cfg.data)
        collapse, _ = _orders_for(cfg.orders, len(collapse_labels))
    orders = lambda y, g: generation_orders(  # noqa: E731
        cfg.order, y, g, model_cfg.n_tokens, collapse, collapse_labels)
    mine = generate(model, part.cut(labels), orders, cfg.seed + dist.rank(), cfg.steps,
                    cfg.diffusion_steps, cfg.cfg_scale, cfg.temperature, cfg.batch_size,
                    progress=dist.is_main(), decode=lambda t: tok.decode(t, model_cfg.grid))
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
    """``train-cvit``: ``model.train_drop`` picks ViT (none), RViT (random), CViT (collapse) or the
    pruner (learned)."""

    model: CViTConfig
    train: TrainConfig
    data: DataConfig = field(default_factory=DataConfig)
    #: the collapse orders of the training images (CViT): the rank stage's file, or
    #: ``pretrained:comae`` (Fashion-MNIST's, by the shipped CoMAE)
    orders: str | None = None
    #: local pretrained weights for model.timm_model (None: the hub, online)
    weights: str | None = None
    #: fine-tune from: ``pretrained:vit`` (the shipped base ViT) or a train-cvit run folder;
    #: None: from scratch (or from ``model.timm_model``'s weights)
    init: str | None = None
    #: the pretraining config whose shipped models ``pretrained:`` names (full, smoke or a file),
    #: in ``<data_dir>/pretrained/``
    pretrain: str = "full"
    data_dir: str = "data"
    device: str = "auto"


def _cvit_data(cfg: TrainCvit) -> dict:
    """The description of a classifier's training data: Chapter 5's for Fashion-MNIST's training
    images (:func:`copkit.cvit.fashion_mnist_data`), the whole configuration otherwise."""
    n, digest = cfg.data.fashion_mnist_train(), _orders_hash(cfg.orders, cfg.pretrain)
    if n is not None and cfg.weights is None:
        return cvit.fashion_mnist_data(n, digest if cfg.model.train_drop == "collapse" else None,
                                       cfg.model.patch)
    return {**cfg.data.describe(), "orders_comae": digest,
            "weights_sha256": file_sha256(cfg.weights)[:16] if cfg.weights else None}


def train_cvit(cfg: TrainCvit) -> Path:
    dev = _device(cfg.device)
    run = run_config(cfg)
    images, labels, channels = load_images(cfg.data)
    _check_count(cfg.data, images)
    if channels != cfg.model.in_chans:
        raise ConfigError(f"model.in_chans: the images have {channels} channels, the config says "
                          f"{cfg.model.in_chans}")
    if cfg.model.train_drop == "collapse" and cfg.orders is None:
        raise ConfigError("orders: CViT (model.train_drop collapse) needs the collapse orders of "
                          "the training images")
    orders = _load_orders(cfg.orders, cfg.pretrain, cfg.data, cfg.data_dir, len(images), dev) \
        if cfg.model.train_drop == "collapse" else None
    init = None if cfg.init is None else (
        run["init"],
        _init_weights(cfg.init, cfg.pretrain, cfg.data_dir, RECIPE, "vit", cfg.model, dev))
    folder = fit(RECIPE, cfg.model, cfg.train, CViTData(images, labels, orders, cfg.weights),
                 run["data"], cfg.data_dir, init=init, device=dev,
                 desc=f"ViT ({cfg.model.train_drop})").folder
    _say(f"classifier run: {folder}")
    return folder


def run_config(cfg: TrainComae | TrainCmar | TrainCvit) -> dict:
    """The run configuration a training stage trains, whose hash names its run folder
    (``<data_dir>/runs/<model>-<hash8>``): made from the configuration alone, before any image
    is loaded or weight read (``python -m copkit config`` prints its folder). For a stage made
    from a profile (:func:`chapter_config`) it is the chapter's own: the same model and training,
    data description, collapse orders' CoMAE and base model."""
    if isinstance(cfg, TrainComae):
        return comae.RECIPE.run_config(cfg.model, cfg.train, None, _comae_data(cfg))
    if isinstance(cfg, TrainCmar):  # MAR's recipe hashes the order kind and CMAR's random share
        choices = cmar.MARData(None, None, cfg.kind, random_fraction=cfg.random_fraction)
        return cmar.RECIPE.run_config(cfg.model, cfg.train, choices, _cmar_data(cfg),
                                      _init_hash(cfg.init, cfg.pretrain, "mar"))
    if isinstance(cfg, TrainCvit):
        return RECIPE.run_config(cfg.model, cfg.train, None, _cvit_data(cfg),
                                 _init_hash(cfg.init, cfg.pretrain, "vit"))
    raise TypeError(f"{type(cfg).__name__} is not a training stage's configuration")


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
    # the checkpoint fills every weight
    make = lambda c: timm_skeleton(c) if c.timm_model else build_model(c)  # noqa: E731
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


#: the variants of each training stage: the model module's ``from_profile`` keywords, and for
#: train-cmar the order ``kind`` of the fine-tune
_VARIANTS = {"train-comae": ("lambda_c", "experiment"), "train-cmar": ("phase", "kind"),
             "train-cvit": ("kind",)}
#: the images Chapters 2 and 4 train on: Fashion-MNIST's training split but its last 5,000
_HELD_OUT = 55_000


def chapter_config(stage: str, profile: str | Path, seed: int = 0, data_dir: str = "data",
                   **variant: Any) -> Any:
    """The configuration of ``stage`` that the book's chapter runs at ``profile`` (seed ``seed``),
    with its runs in ``data_dir``: what ``python -m copkit config <stage> --profile <profile>``
    prints.

    A training stage's model and training sections are the model module's
    ``from_profile(sizes, seed, **variant)``, exactly what the chapter trains with, and the rest
    is the chapter's too: its images, the shipped base model it fine-tunes (``init``) and the
    collapse orders of the shipped CoMAE (``orders``), of the profile's pretraining config; so the
    stage trains the chapter's run, in the same run folder (:func:`run_config`).

    ``train-comae`` takes ``lambda_c`` (None: the saved CoMAE's, the paper's 0.01) and
    ``experiment`` (:data:`copkit.comae.EXPERIMENTS`; the mirror and planted experiments train on
    images Chapter 2 makes, which the stage cannot: only their model and training are the
    chapter's). ``train-cmar`` takes ``phase`` (:data:`copkit.cmar.PHASES`; by default
    ``finetune``, Chapter 4's fine-tune of the shipped base MAR) and ``kind`` (the fine-tune's
    orders: ``descending``, CMAR, by default; ``random``, its control; ``ascending``, Table 4's
    ablation). ``train-cvit`` takes ``kind`` (:data:`copkit.cvit.MODEL_KINDS`), each fine-tuned from
    the shipped base ViT.
    """
    unknown = set(variant) - set(_VARIANTS.get(stage, ()))
    if unknown:
        known = ", ".join(_VARIANTS.get(stage, ())) or "none"
        raise ConfigError(f"{stage} has no variant {', '.join(sorted(unknown))}; its variants: "
                          f"{known}")
    p = get_profile(profile)
    fm = DataConfig()
    if stage == "train-comae":
        model_cfg, train_cfg = comae.from_profile(p.comae, seed, **variant)
        # the chapter's training images; it validates on held-out ones
        n = (p.comae.train_images or 60000) - 5000
        return TrainComae(model=model_cfg, train=train_cfg, data=replace(fm, limit=n),
                          val_images=p.comae.val_images, val_data=replace(fm, start=_HELD_OUT),
                          data_dir=data_dir)
    if stage == "rank":
        return Rank(comae_run=f"{data_dir}/runs/comae-<hash8>", out=f"{data_dir}/orders.npz",
                    data=replace(fm, split="all"))
    if stage == "train-cmar":
        kind = variant.pop("kind", None)
        phase = variant.setdefault("phase", "finetune")
        model_cfg, train_cfg = cmar.from_profile(p.cmar, seed, **variant)
        kind = kind or ("random" if phase == "mar" else "descending")
        kinds = cmar.ORDER_KINDS + cmar.ONE_ORDER_KINDS
        if kind not in kinds:
            raise ConfigError(f"train-cmar: kind must be one of {', '.join(kinds)}; got {kind!r}")
        # Chapter 4 names the orders' CoMAE for all its fine-tunes, the random-order control too
        orders = None if phase == "mar" and kind == "random" else f"{PRETRAINED}comae"
        return TrainCmar(model=model_cfg, train=train_cfg,
                         data=replace(fm, limit=p.cmar.train_images or _HELD_OUT), kind=kind,
                         orders=orders, init=f"{PRETRAINED}mar" if phase == "finetune" else None,
                         pretrain=p.pretrain, data_dir=data_dir)
    if stage == "sample-cmar":
        return SampleCmar(mar_run=f"{data_dir}/runs/mar-<hash8>", out="samples.npz", per_class=10,
                          steps=p.cmar.gen_steps, cfg_scale=p.cmar.cfg_scale,
                          diffusion_steps=p.cmar.diffusion_steps)
    if stage == "train-cvit":
        model_cfg, train_cfg = cvit.from_profile(p.cvit, seed, **variant)
        orders = f"{PRETRAINED}comae" if model_cfg.train_drop == "collapse" else None
        return TrainCvit(model=model_cfg, train=train_cfg,
                         data=replace(fm, limit=p.cvit.train_images or 60000), orders=orders,
                         init=f"{PRETRAINED}vit", pretrain=p.pretrain, data_dir=data_dir)
    if stage == "eval-cvit":
        return EvalCvit(cvit_run=f"{data_dir}/runs/cvit-<hash8>", out="cvit-eval.json",
                        data=DataConfig(split="test", limit=p.cvit.test_images),
                        ratios=p.cvit.ratios)
    raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
