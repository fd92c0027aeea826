"""The book's base models: trained once to convergence (``make pretrain``, ``python -m copkit
pretrain``), shipped in ``data/pretrained/``, and loaded by the chapters, which fine-tune and
evaluate from them, as the paper starts from the released MAR-B and an ImageNet-21k ViT-B.

- :func:`read_config`: the one config file (``copkit/configs/pretrain.yaml``; a smaller
  ``pretrain-smoke.yaml`` for the tests), one section per model;
- :func:`plan`: what :func:`copkit.train.fit` needs to train one of them (recipe, configurations,
  data, the data's description);
- :func:`pretrain`: trains them (resumably, in ``<data_dir>/runs/``), measures each on the test
  images and writes ``<name>-<hash8>.safetensors`` with a ``.json`` (config, hash, commit, steps,
  epochs, seconds, machine, final metrics) and the learning curve ``.metrics.jsonl`` beside it;
- :func:`load` returns a shipped model in eval mode, :func:`generate` samples the shipped MAR,
  :func:`summary` is what ``book/results/pretrained.json`` holds.

The names: ``classifier`` (:class:`copkit.metrics.FeatureNet`, the FID features and class-agreement
classifier), ``vit`` (timm's ViT, :mod:`copkit.cvit`), ``mar`` (:class:`copkit.cmar.MAR` in random
order), the CoMAEs named in the config (:mod:`copkit.comae`), and MAR candidates ``mar_<anything>``
(the pilots of ``copkit/configs/mar-pilots.yaml``, scored by the book's shipped classifier and
ViT, which such a config shares). A MAR's shipped numbers are means over the sampling seeds
:data:`SEEDS`, each beside a real-image floor measured the same way.
Images go in and come out as :mod:`copkit.data` gives them: (B, 1, 28, 28) in [-1, 1] (28:
``copkit.tokens.SIDE``).
"""

from __future__ import annotations

import functools
import json
import math
import os
import platform
import shutil
import subprocess
from dataclasses import dataclass, fields, replace
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import torch
import yaml
from torch import Tensor, nn

from copkit import cmar, comae, cvit
from copkit import metrics as feature_net
from copkit.checkpoint import extend as checkpoint_extend
from copkit.checkpoint import load_state, load_tensors, read_metrics, save_tensors
from copkit.config import ConfigError, build, config_hash, jsonable
from copkit.data import load_fashion_mnist, photo_crops
from copkit.io import (
    DamagedFileError,
    atomic_write_json,
    atomic_write_text,
    file_sha256,
    folder_lock,
)
from copkit.profiles import BaseSizes
from copkit.recipe import Recipe, TrainConfig
from copkit.tokens import PATCH, SIDE, patchify, random_orders
from copkit.train import fit

__all__ = ["CONFIG", "SMOKE_CONFIG", "KINDS", "SEEDS", "PR_K", "JUDGES", "REPOSITORY",
           "shipped_folder", "config_path", "read_config", "kind_of", "base", "curve", "Plan",
           "plan", "pretrain", "extend", "path_of", "load", "replicates",
           "info", "generate", "summary", "total_seconds", "park", "run_hash", "run_folder_of"]

#: The book's pretraining config (``"full"``): every base model, sized for a 2-core CPU.
CONFIG = Path(__file__).parent / "configs" / "pretrain.yaml"
#: The same sections at smoke size (``"smoke"``): what ``make test`` trains from scratch.
SMOKE_CONFIG = Path(__file__).parent / "configs" / "pretrain-smoke.yaml"
#: the kind of network each name is; CoMAE sections may take any name starting with ``comae``, and
#: MAR candidates (the pilots of ``copkit/configs/mar-pilots.yaml``) any name starting with ``mar_``
KINDS = {"classifier": "featurenet", "vit": "vit", "mar": "mar"}
_SECTION_KEYS = {"model", "train", "sampling", "data"}
#: ``seed`` (default 0) makes a replicate: the same section trained from another initialisation
#: and data order (e.g. the replicate CoMAEs ``comae_s1``, ``comae_s2``)
_TRAIN_KEYS = {f.name for f in fields(TrainConfig)} - {"steps"} | {"epochs"}
HOW = "make pretrain (python -m copkit pretrain)"


#: the repository copkit is in (its data/pretrained holds the shipped models), when it is a checkout
REPOSITORY = Path(__file__).resolve().parent.parent


def shipped_folder(folder: str | Path | None = None) -> Path:
    """Where the shipped models are: ``folder`` when given; else ``$COPKIT_PRETRAINED``; else
    ``data/pretrained`` of the repository copkit is imported from (whatever the working folder);
    else, for an installed copkit, ``data/pretrained`` of the working folder."""
    if folder is not None:
        return Path(folder)
    if os.environ.get("COPKIT_PRETRAINED"):
        return Path(os.environ["COPKIT_PRETRAINED"])
    repo = REPOSITORY / "data" / "pretrained"
    return repo if repo.is_dir() else Path("data/pretrained")


def _make_command(name: str, config: str | Path | dict | None, folder: Path) -> str:
    """The command that makes the shipped ``name`` of ``config`` in ``folder``."""
    path = config_path(config)
    which = ("" if path in (None, CONFIG) else " --config smoke" if path == SMOKE_CONFIG
             else f" --config {path}")
    # a folder <data_dir>/pretrained (the chapters' convention, e.g. .scratch/data at smoke) names
    # its runs' folder too
    out = "" if folder.resolve() == shipped_folder().resolve() else \
        f"{f' --data-dir {folder.parent}' if folder.name == 'pretrained' else ''} --out {folder}"
    return f"python -m copkit pretrain --only {name}{which}{out}"


def _remedy(path: Path, name: str, config: str | Path | dict | None) -> str:
    """What to do about a damaged shipped file: restore it from git when it is committed, else make
    it again (asked only once a file is found damaged: it runs git)."""
    try:
        tracked = subprocess.run(["git", "ls-files", "--error-unmatch", path.name], cwd=path.parent,
                                 capture_output=True, check=False).returncode == 0
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=path.parent,
                             capture_output=True, text=True,
                             check=False).stdout.strip() if tracked else ""
    except OSError:
        tracked, top = False, ""
    if tracked and top:
        return ("It is a shipped file: restore it with `git checkout -- "
                f"{path.resolve().relative_to(Path(top).resolve())}` (in {top}).")
    return (f"Delete {path.name} and make it again with {HOW}: "
            f"`{_make_command(name, config, path.parent)}`.")


def kind_of(name: str) -> str:
    """The kind of network base model ``name`` is (:data:`KINDS`; a name starting with "comae" is a
    CoMAE, one starting with ``mar_`` a MAR candidate); ValueError for any other name."""
    if name in KINDS:
        return KINDS[name]
    if name.startswith("comae"):
        return "comae"
    if name.startswith("mar_") and len(name) > 4:
        return "mar"
    raise ValueError(f"unknown base model {name!r}: the names are {', '.join(KINDS)}, comae* and "
                     "mar_<anything> (a MAR candidate)")


def replicates(name: str, config: str | Path | dict | None = None) -> list[str]:
    """The sections of a pretraining config that train base model ``name`` again from other seeds:
    the same kind, ``model``, ``data`` and ``train`` but ``train.seed``. ``name`` comes first,
    then the others by seed (``["comae", "comae_s1", "comae_s2"]``); a claim that varies with the
    training is measured over these, one value per training.

    >>> replicates("vit")
    ['vit']
    """
    config = read_config(config)
    if name not in config or name in ("name", "data"):
        raise KeyError(f"{name!r} is not a section of the pretraining config")

    def same_but_seed(section: dict) -> tuple:
        train = {k: v for k, v in section["train"].items() if k != "seed"}
        return (section["model"], train, section.get("data"), section.get("sampling"))

    ref = config[name]
    others = [k for k, s in config.items() if k not in ("name", "data", name)
              and kind_of(k) == kind_of(name) and same_but_seed(s) == same_but_seed(ref)]
    seed_of = {k: config[k]["train"].get("seed", 0) for k in [name, *others]}
    clash = [k for k in others if seed_of[k] == seed_of[name]]
    if clash:
        raise ConfigError(f"sections {name!r} and {clash[0]!r} train the same model from the same "
                          "seed; give the replicate another train.seed")
    return [name, *sorted(others, key=seed_of.get)]


def config_path(config: str | Path | dict | None = None) -> Path | None:
    """The file of a pretraining config: ``"full"`` or None (:data:`CONFIG`), ``"smoke"``
    (:data:`SMOKE_CONFIG`), or a path; None for a config already read (a dict)."""
    if isinstance(config, dict):
        return None
    if isinstance(config, Path):
        return config
    return {None: CONFIG, "full": CONFIG,
            "smoke": SMOKE_CONFIG}.get(config, Path(config) if config else None)


def read_config(path: str | Path | dict | None = None) -> dict:
    """The pretraining config (``path``: :func:`config_path`), checked strictly: a section per
    model with ``model`` (the network's configuration fields), ``train``
    (:class:`copkit.recipe.TrainConfig` fields, ``epochs`` instead of steps) and, for some kinds,
    ``sampling`` and ``data``."""
    if isinstance(path, dict):  # already read
        return path
    path = Path(config_path(path))
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("data"), dict):
        raise ConfigError(f"{path}: not a pretraining config (a mapping with 'data' and one "
                          "section per model)")
    try:
        _check_counts(raw["data"], "data",
                      {"train_images": True, "val_images": False, "test_images": True})
        for name, section in raw.items():
            if name in ("name", "data"):
                continue
            try:
                kind = kind_of(name)
            except ValueError as err:
                raise ConfigError(str(err)) from None
            if not isinstance(section,
                              dict) or not {"model", "train"} <= set(section) <= _SECTION_KEYS \
                    or not all(isinstance(section[k], dict) for k in section):
                raise ConfigError(f"section {name!r} needs the mappings 'model' and 'train' (and "
                                  f"at most {sorted(_SECTION_KEYS)})")
            unknown = set(section["train"]) - _TRAIN_KEYS
            if unknown or "epochs" not in section["train"]:
                raise ConfigError(f"{name}.train needs 'epochs' and takes {sorted(_TRAIN_KEYS)}; "
                                  f"unknown: {sorted(unknown)}")
            _check_section(name, kind, section)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    return raw


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_counts(section: dict, where: str, keys: dict[str, bool]) -> None:
    """``keys``: name -> whether null is allowed; each an int >= 1 (a missing nullable key is
    null)."""
    unknown = set(section) - set(keys)
    if unknown:
        raise ConfigError(f"{where}.{sorted(unknown)[0]}: unknown key; known keys: "
                          f"{', '.join(keys)}")
    for key, nullable in keys.items():
        value = section.get(key)
        if value is None and nullable:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{where}.{key}: must be an int >= "
                              f"1{' or null' if nullable else ''}, got {value!r}")


def _check_section(name: str, kind: str, section: dict) -> None:
    """One model's section, with ranges as well as types: ``epochs`` a number > 0, the other
    ``train`` keys :class:`copkit.recipe.TrainConfig`'s (``lr`` finite > 0, ``batch_size`` >= 1),
    the ``model`` keys the network configuration's, ``sampling`` the sampler's."""
    train = section["train"]
    seed = train.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"{name}.train.seed: must be an integer >= 0 (a replicate's seed), got "
                          f"{seed!r}")
    if not _number(train["epochs"]) or train["epochs"] <= 0:
        raise ConfigError(f"{name}.train.epochs: must be a number > 0 (passes over the training "
                          f"images), got {train['epochs']!r}")
    if not _number(train.get("lr", 1.0)) or train.get("lr", 1.0) <= 0:
        raise ConfigError(f"{name}.train.lr: must be a finite number > 0, got {train['lr']!r}")
    build(TrainConfig, {**{k: v for k, v in train.items() if k not in ("epochs", "seed")},
                        "steps": 1}, f"{name}.train")
    try:  # the model's configuration, as plan() makes it
        _KINDS[kind].configs(_sizes(section, images=1), seed=0)
    except ConfigError as err:
        raise ConfigError(f"{name}.{err}") from None
    sampling = section.get("sampling")
    if sampling is not None:
        _check_counts({k: v for k, v in sampling.items() if k not in ("cfg_scale", "temperature")},
                      f"{name}.sampling",
                      {"samples": False, "gen_steps": False, "diffusion_steps": False})
        if not _number(sampling.get("cfg_scale")) or sampling["cfg_scale"] < 0:
            raise ConfigError(f"{name}.sampling.cfg_scale: must be a finite number >= 0, got "
                              f"{sampling.get('cfg_scale')!r}")
        if not _number(sampling.get("temperature", 1.0)) or sampling.get("temperature", 1.0) <= 0:
            raise ConfigError(f"{name}.sampling.temperature: must be a finite number > 0, got "
                              f"{sampling['temperature']!r}")


@dataclass(frozen=True, eq=False)
class Plan:
    """One base model's training, as :func:`copkit.train.fit` takes it, and what measures it."""

    name: str
    recipe: Recipe
    model_cfg: Any
    train_cfg: TrainConfig
    data: Any
    tag: dict
    epochs: float
    #: test images and labels (held-out photo crops and zeros, for the photo CoMAE)
    test: tuple[Tensor, Tensor]
    section: dict


@dataclass(frozen=True, eq=False)
class _Images:
    """A base model's images, (images, labels) each, and their description (part of the run's
    hash)."""

    train: tuple[Tensor, Tensor]
    val: tuple[Tensor, Tensor]
    test: tuple[Tensor, Tensor]
    tag: dict


def _images(config: dict, section: dict, seed: int) -> _Images:
    """The images of a section: its ``data`` source's (scikit-image photo crops, unlabelled), or
    Fashion-MNIST's split of the config's ``data`` section (validation: the last ``val_images``
    training images)."""
    source = section.get("data", {"source": "fashion-mnist"})
    if source.get("source") == "photos":
        names = tuple(source["photos"])
        per = source["crops"] // len(names)
        crops = torch.cat([photo_crops(p, per, SIDE, scale=0.25, seed=seed) for p in names])
        held = torch.cat([photo_crops(p, 200, SIDE, scale=0.25, seed=seed + 1000) for p in names])
        unlabelled = lambda x: (x, torch.zeros(len(x), dtype=torch.long))  # noqa: E731
        tag = {"dataset": "scikit-image photo crops", "photos": list(names), "crops": len(crops),
               "size": SIDE, "scale": 0.25, "held_out": "crops of seed + 1000"}
        return _Images(unlabelled(crops), unlabelled(held[:512]), unlabelled(held[512:]), tag)
    tx, ty, vx, vy, test_x, test_y = _split(config)
    tag = {"dataset": "fashion-mnist", "split": "train", "train_images": len(tx),
           "val_images": len(vx), "val": "the last val_images of the training split"}
    return _Images((tx, ty), (vx, vy), (test_x, test_y), tag)


def _split(config: dict) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    d = config["data"]
    return _split_of(d["train_images"], d["val_images"], d.get("test_images"))


@functools.lru_cache(maxsize=2)
def _split_of(n: int | None, val: int,
              test: int | None) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    x, y = load_fashion_mnist("train")
    n = n or len(x) - val
    if n + val > len(x):
        raise ValueError(f"train_images {n} + val_images {val} exceed the 60,000 training images")
    tx, ty = load_fashion_mnist("test", limit=test)
    return x[:n], y[:n], x[len(x) - val:], y[len(y) - val:], tx, ty


def _sizes(section: dict, images: int) -> BaseSizes:
    """A section as the model modules' ``from_profile`` take it, for ``images`` training images."""
    train = {k: v for k, v in section["train"].items() if k not in ("epochs", "seed")}
    return BaseSizes(section["model"], train, section["train"]["epochs"], images)


def _top1(net: nn.Module, x: Tensor, y: Tensor, batch: int = 1000) -> float:
    device = next(net.parameters()).device
    with torch.no_grad():
        hits = sum(int((net(x[s:s + batch].to(device)).argmax(1).cpu() == y[s:s + batch]).sum())
                   for s in range(0, len(x), batch))
    return hits / len(x)


def _mar_val_loss(model: cmar.MAR, x: Tensor, y: Tensor, draws: int = 2) -> dict:
    """MAR's training loss on held-out images, with fixed draws (masks, noise, timesteps), so the
    curve moves only with the weights."""
    step = cmar.mar_step_fn(model, x, y, len(x), seed=12345)
    device = next(model.parameters()).device
    with torch.no_grad():
        losses = [float(step(t, torch.Generator(device=device).manual_seed(t))[0])
                  for t in range(draws)]
    return {"val_loss": sum(losses) / draws}


def _classifier_metrics(p: Plan, model: nn.Module, evals: list[dict], config: dict, folder: Path,
                        device: torch.device | str) -> dict:
    return {"test_top1": _top1(model, *p.test), "val_top1": evals[-1]["val_top1"]}


def _comae_metrics(p: Plan, model: nn.Module, evals: list[dict], config: dict, folder: Path,
                   device: torch.device | str) -> dict:
    curve = [r["val_L_r"] for r in evals]
    fifth = [r["val_L_r"] for r in evals if r["step"] >= 0.8 * p.train_cfg.steps]
    # the relative change of the held-out L_r over the last fifth of training (< 2%: converged)
    # None: one evaluation there
    change = abs(fifth[-1] - fifth[0]) / fifth[0] if len(fifth) > 1 else None
    images = p.test[0][:1000]
    test = comae.evaluate(model, patchify(images, PATCH).to(device))
    mirrored = patchify(comae.mirror_image(images[:500]), PATCH).to(device)
    return {"val_L_r": curve[-1], "val_L_r_change_last_fifth": change, "test_L_r": test["val_L_r"],
            "test_H_mask": test["val_H_mask"],
            # not trained on mirrored images: does the CoMAE find an exact copy when one is there?
            "mirror_hit_rate": comae.mirror_hits(model, mirrored, model.cfg.grid[1])}


#: the sampling seeds of a MAR's shipped numbers (each number is a mean over them, with its spread)
SEEDS = (0, 1, 2)
#: the k of precision and recall (Kynkaeaenniemi et al. 2019)
PR_K = 3
#: the shipped models that score a MAR's samples (the classifier is needed, the ViT, a second
#: feature space, is used when the config has one)
JUDGES = ("classifier", "vit")


def _mar_metrics(p: Plan, model: nn.Module, evals: list[dict], config: dict, folder: Path,
                 device: torch.device | str) -> dict:
    """A MAR's final numbers, each a mean over the sampling seeds :data:`SEEDS` with its sd and
    per-seed values (``<name>``, ``<name>_sd``, ``<name>_seeds``), beside a real-image floor
    measured the same way:

    - ``<score>_cfg`` / ``<score>_nocfg``: ``samples`` images per seed (labels cycling 0-9) of the
      config's sampler with its CFG scale and without guidance, against the test images: FID on
      the shipped classifier's features, precision and recall at k = :data:`PR_K` on the same
      features, and class agreement (the classifier's prediction is the label asked for);
    - ``fid_vit_*``: the same FID on the shipped ViT's penultimate features, a second feature
      space as a cross-check (when the config has a ``vit``);
    - ``*_floor``: as many disjoint draws of ``samples`` real images as seeds, held out of training
      and of the reference (the validation images; ``floor_images`` says when there were too few
      and training images stood in), scored the same way: what a perfect generator would get.
    """
    s = p.section["sampling"]
    n = s["samples"]
    judges = _judges(config, folder, device)
    classifier = judges["classifier"]
    reference = p.test[0].to(device)
    spaces = {"": feature_net.GenerativeScores(classifier, reference, k=PR_K)}
    if "vit" in judges:
        spaces["vit_"] = feature_net.GenerativeScores(judges["vit"], reference, k=PR_K)

    def scored(images: Tensor, labels: Tensor) -> dict:
        row = {"class_agreement": _top1(classifier, images, labels)}
        for space, scores in spaces.items():
            got = scores(images)
            row[f"fid_{space}".rstrip("_")] = got["fid"]
            if not space:
                row["precision"], row["recall"] = got["precision"], got["recall"]
        return row

    labels = torch.arange(n) % 10
    real, source = _floor_draws(config, p, n, len(SEEDS))
    runs = {"cfg": lambda seed: scored(generate_with(model, labels, s["cfg_scale"], seed, s),
                                       labels),
            "nocfg": lambda seed: scored(generate_with(model, labels, 1.0, seed, s), labels),
            "floor": lambda seed: scored(*real[SEEDS.index(seed)])}
    out = {"val_loss": evals[-1]["val_loss"], "seeds": list(SEEDS), "samples": n,
           "pr_k": PR_K, "floor_images": source}
    for key, run in runs.items():
        for score, spread in feature_net.over_seeds(run, SEEDS).items():
            out.update(feature_net.spread_fields(f"{score}_{key}", spread))
    return out


def _floor_draws(config: dict, p: Plan, n: int,
                 draws: int) -> tuple[list[tuple[Tensor, Tensor]], str]:
    """``draws`` disjoint sets of ``n`` real (images, labels) for the floor: held-out validation
    images when there are enough, else training images; and which they are."""
    images = _images(config, p.section, p.train_cfg.seed)
    (x, y), source = images.val, "held-out"
    if len(x) < n * draws:
        (x, y), source = images.train, "training"
    if len(x) < n * draws:
        raise ValueError(f"{p.name}: the floor needs {draws} disjoint draws of {n} real images, "
                         f"but there are only {len(x)}; lower sampling.samples")
    return [(x[i * n:(i + 1) * n], y[i * n:(i + 1) * n]) for i in range(draws)], source


def _judge_folder(name: str, config: dict, folder: Path) -> Path | None:
    """Where the shipped ``name`` of ``config`` that scores a MAR is: ``folder``, else the book's
    shipped folder (:func:`shipped_folder`: a pilots config shipped into a folder of its own is
    scored by the book's classifier and ViT, the same files, since a file is named by the hash of
    its training run); None when in neither."""
    for where in (Path(folder), shipped_folder()):
        if path_of(name, config, where).exists():
            return where
    return None


def _judges(config: dict, folder: Path, device: torch.device | str | None = None,
            source: str | Path | None = None) -> dict:
    """The shipped judges of :data:`JUDGES` that ``config`` has (the classifier is required), loaded
    on ``device``; with ``device`` None only checked to be there. A missing one raises an error
    naming it and the command that makes it (``source``: the config's file, for that command)."""
    if "classifier" not in config:
        raise ConfigError("a MAR's final numbers need the config's 'classifier' section (the FID "
                          "features and the class-agreement classifier); copy it from "
                          f"{CONFIG.name}")
    out = {}
    for name in (j for j in JUDGES if j in config):
        where = _judge_folder(name, config, folder)
        if where is None:
            raise FileNotFoundError(
                f"a MAR's final numbers need the shipped {name} of this config "
                f"({path_of(name, config, folder).name}), neither in {folder} nor in "
                f"{shipped_folder()}: make it first with "
                f"`{_make_command(name, source or config, Path(folder))}`")
        out[name] = None if device is None else load(name, device, config, where)
    return out


def _top1_eval(images: _Images) -> Callable:
    return lambda net, data: {"val_top1": _top1(net, *images.val)}


def _mar_eval(images: _Images) -> Callable:
    x, y = images.val[0][:1000], images.val[1][:1000]
    return lambda net, data: _mar_val_loss(net, x, y)


@dataclass(frozen=True)
class _Kind:
    """One kind of base model: the module that makes it (its ``RECIPE``, and its ``from_profile``
    given the section as :class:`copkit.profiles.BaseSizes` with ``variant``), its data holder of
    the images, its validation evaluation (None: the recipe's own) and its final metrics."""

    module: ModuleType
    variant: dict
    data: Callable[[_Images], Any]
    evaluate: Callable[[_Images], Callable] | None
    final: Callable[..., dict]

    def configs(self, sizes: BaseSizes, seed: int) -> tuple[Any, TrainConfig]:
        return self.module.from_profile(sizes, seed, **self.variant)


_KINDS = {
    "featurenet": _Kind(feature_net, {}, lambda im: feature_net.FeatureNetData(*im.train),
                        _top1_eval, _classifier_metrics),
    "vit": _Kind(cvit, {"kind": "vit"}, lambda im: cvit.CViTData(*im.train), _top1_eval,
                 _classifier_metrics),
    "mar": _Kind(cmar, {"phase": "mar"}, lambda im: cmar.MARData(*im.train), _mar_eval,
                 _mar_metrics),
    "comae": _Kind(comae, {},
                   lambda im: comae.CoMAEData(patchify(im.train[0], PATCH),
                                              patchify(im.val[0][:512], PATCH)), None,
                   _comae_metrics),
}


def plan(name: str, config: dict | str | Path | None = None, seed: int = 0) -> Plan:
    """What training base model ``name`` of ``config`` (a path or a read config; default
    :data:`CONFIG`) needs: the recipe (with a validation evaluation of the EMA weights), the model
    and training configurations (the model module's ``from_profile`` of the section), the data
    and its description (part of the run's hash). A section's ``train.seed`` replaces ``seed``.
    """
    config = config if isinstance(config, dict) else read_config(config)
    if name not in config:
        raise ValueError(f"{name!r} is not in the pretraining config; it has "
                         f"{[k for k in config if k not in ('name', 'data')]}")
    section, kind = config[name], _KINDS[kind_of(name)]
    seed = section["train"].get("seed", seed)
    images = _images(config, section, seed)
    sizes = _sizes(section, len(images.train[0]))
    model_cfg, train_cfg = kind.configs(sizes, seed)
    recipe = (kind.module.RECIPE if kind.evaluate is None
              else replace(kind.module.RECIPE, evaluate=kind.evaluate(images)))
    return Plan(name, recipe, model_cfg, train_cfg, kind.data(images), images.tag, sizes.epochs,
                images.test, section)


def _run_hash(p: Plan) -> str:
    return config_hash(p.recipe.run_config(p.model_cfg, p.train_cfg, p.data, p.tag))


_DIGESTS: dict[tuple[str, str], str] = {}


def run_hash(name: str, config: dict | str | Path | None = None, p: Plan | None = None) -> str:
    """The hash of the training run that ``config`` defines for ``name`` (what names its shipped
    file and its run folder), from its plan ``p`` if given. Remembered per name and config, since
    building a plan loads its data (and, for the photo CoMAE, crops it)."""
    key = (name, json.dumps(read_config(config), sort_keys=True))
    if key not in _DIGESTS:
        _DIGESTS[key] = _run_hash(p or plan(name, config))
    return _DIGESTS[key]


def path_of(name: str, config: dict | str | Path | None = None,
            folder: str | Path | None = None) -> Path:
    """Where the shipped weights of ``name`` for ``config`` are:
    ``<folder>/<name>-<hash8>.safetensors``, the hash being that of the training run the config
    defines."""
    folder = shipped_folder(folder)
    return Path(folder) / f"{name}-{run_hash(name, config)[:8]}.safetensors"


def total_seconds(records: list[dict]) -> float:
    """Training seconds summed over a run's sessions: ``seconds`` restarts at 0 after each resume,
    so each session's last logged value is added up (time after a session's last log is lost)."""
    total, last = 0.0, 0.0
    for r in records:
        if "seconds" not in r:
            continue
        if r["seconds"] < last:
            total += last
        last = r["seconds"]
    return total + last


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _machine() -> dict:
    return {"platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def generate_with(model: cmar.MAR, labels: Tensor, cfg_scale: float, seed: int, sampling: dict,
                  progress: bool = False) -> Tensor:
    """Images of a MAR for ``labels`` in random orders with the sampler settings ``sampling``
    (``gen_steps``, ``diffusion_steps``, ``temperature``)."""
    g = torch.Generator().manual_seed(seed)
    orders = cmar.generation_orders("random", labels, g)
    return cmar.generate(model, labels, orders, seed, steps=sampling["gen_steps"],
                         diffusion_steps=sampling["diffusion_steps"], cfg_scale=cfg_scale,
                         temperature=sampling.get("temperature", 1.0), progress=progress)


def run_folder_of(name: str, config: dict | str | Path | None, data_dir: str | Path) -> Path:
    """The training run folder of base model ``name``: ``<data_dir>/runs/<kind>-<hash8>``."""
    return (Path(data_dir) / "runs"
            / f"{_KINDS[kind_of(name)].module.RECIPE.name}-{run_hash(name, config)[:8]}")


def park(names: list[str] | None = None, config: str | Path | None = None,
         data_dir: str | Path = "data", folder: str | Path | None = None) -> list[Path]:
    """Copy the run folders of base models not yet shipped (checkpoint, metrics, config) into
    ``<folder>/unfinished/``, which is committed, so that a fresh clone's :func:`pretrain` resumes
    them instead of starting over. Returns the copies."""
    folder = shipped_folder(folder)
    cfg = read_config(config)
    out = []
    for name in names or [k for k in cfg if k not in ("name", "data")]:
        run = run_folder_of(name, cfg, data_dir)
        if (run / "checkpoint.safetensors").exists() and not path_of(name, cfg, folder).exists():
            target = Path(folder) / "unfinished" / run.name
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(run, target)
            out.append(target)
    return out


def extend(name: str, run: str | Path, config: str | Path | dict | None = None,
           data_dir: str | Path = "data") -> tuple[Path, int]:
    """Let base model ``name`` go on from the run folder ``run`` (a shorter training of the same
    configuration whose learning rate is held: :func:`copkit.checkpoint.extend`): its run folder
    under ``<data_dir>/runs/`` starts from ``run``'s checkpoint, and the next :func:`pretrain` of
    ``name`` trains the remaining steps. Returns (the new run folder, the step it goes on from)."""
    config = read_config(config)
    p = plan(name, config)
    target = run_folder_of(name, config, data_dir)
    if (target / "checkpoint.safetensors").exists():
        raise FileExistsError(f"{target} already has a checkpoint: pretrain resumes it, nothing to "
                              "extend")
    run_config = p.recipe.run_config(p.model_cfg, p.train_cfg, p.data, p.tag)
    return target, checkpoint_extend(run, target, run_config)


def pretrain(names: list[str] | None = None, config: str | Path | None = None,
             data_dir: str | Path = "data", folder: str | Path | None = None,
             device: torch.device | str = "cpu", progress: bool = True) -> dict[str, Path]:
    """Train the base models ``names`` (default: every one in ``config``, in its order, but the
    judges of :data:`JUDGES` first, since a MAR's numbers use them) into ``<data_dir>/runs/``
    (resuming any interrupted run), and write each one's weights, description and learning curve
    to ``folder``. Returns the weight files by name. A model already shipped for this config is not
    trained again. Each model is trained and written with its run folder locked
    (:func:`copkit.io.folder_lock`): a second pretrain of the same model waits for the first, then
    finds it shipped."""
    folder = shipped_folder(folder)
    cfg_path = config_path(config)
    config = read_config(config)
    names = names or [k for k in config if k not in ("name", "data")]
    # the judges first: a MAR's final numbers are scored by them
    names = sorted(names, key=lambda n: n not in JUDGES)
    out = {}
    for name in names:
        p = plan(name, config)
        digest = run_hash(name, config, p)
        target = Path(folder) / f"{name}-{digest[:8]}.safetensors"
        if target.exists() and target.with_suffix(".json").exists():
            out[name] = target
            continue
        if kind_of(name) == "mar":  # before hours of training, not after
            _judges(config, Path(folder), source=cfg_path)
        run = Path(data_dir) / "runs" / f"{p.recipe.name}-{digest[:8]}"
        # a second pretrain waits, then finds it shipped
        with folder_lock(run, f"pretrain of {name}"):
            if not (target.exists() and target.with_suffix(".json").exists()):
                _ship(p, config, cfg_path, digest, target, data_dir, device, progress)
        out[name] = target
    return out


def _ship(p: Plan, config: dict, cfg_path: Path | None, digest: str, target: Path,
          data_dir: str | Path, device: torch.device | str, progress: bool) -> None:
    """Train base model ``p.name`` (resuming its run, or a parked one) and write its weights
    ``target``, their description (``.json``, with their SHA-256) and the learning curve beside
    them."""
    name, folder = p.name, target.parent
    run = Path(data_dir) / "runs" / f"{p.recipe.name}-{digest[:8]}"
    parked = folder / "unfinished" / run.name
    if parked.exists() and not (run / "checkpoint.safetensors").exists():
        # a run interrupted elsewhere (park) resumes
        shutil.copytree(parked, run, dirs_exist_ok=True)
    fitted = fit(p.recipe, p.model_cfg, p.train_cfg, p.data, p.tag, data_dir, device=device,
                 desc=f"pretrain {name}", progress=progress, evaluate_ema=True)
    records = read_metrics(fitted.folder / "metrics.jsonl")
    final = _KINDS[kind_of(name)].final(p, fitted.model, [r for r in records if r.get("eval")],
                                        config, folder,
                                      device)
    meta = {"name": name, "kind": kind_of(name), "file": target.name, "config_hash": digest,
            "config": jsonable(fitted.config),
            "pretrain_config": cfg_path.name if cfg_path else config.get("name"),
            "commit": _commit(), "steps": p.train_cfg.steps, "epochs": p.epochs,
            "train_seconds": total_seconds(records), "machine": _machine(), "metrics": final,
            "command": f"python -m copkit pretrain --only {name}" + (
                "" if cfg_path == CONFIG else " --config smoke" if cfg_path == SMOKE_CONFIG
                else f" --config {cfg_path.name if cfg_path else config.get('name')}")}
    curve = target.with_name(f"{target.stem}.metrics.jsonl")
    atomic_write_text(curve, "".join(json.dumps(r) + "\n" for r in records))
    save_tensors(target, fitted.model.state_dict(), meta)
    described = {}  # the description, with the weights' SHA-256 after their name (load checks it)
    for key, value in meta.items():
        described[key] = value
        if key == "file":
            described["sha256"] = file_sha256(target)
    atomic_write_json(target.with_suffix(".json"), described)
    shutil.rmtree(parked, ignore_errors=True)


def base(profile: Any, name: str, data_dir: str | Path,
         device: torch.device | str = "cpu") -> tuple[nn.Module, str]:
    """A chapter's (or a stage's) base model: the shipped ``name`` of the profile's pretraining
    config (``profile.pretrain``; or ``profile`` is that config itself, "full", "smoke" or a file)
    from ``<data_dir>/pretrained/``, in eval mode, and the hash of its training run (what a
    fine-tune from it is named by: ``fit(..., init=(hash, state dict))``)."""
    folder = Path(data_dir) / "pretrained"
    config = getattr(profile, "pretrain", profile)
    model = load(name, device, config, folder)
    return model, info(name, config, folder)["config_hash"]


def curve(name: str, config: str | Path | dict | None = None,
          folder: str | Path | None = None) -> list[dict]:
    """The learning curve shipped beside ``name``: the records of its training run's metrics.jsonl
    (training rows with ``loss``; evaluation rows marked ``eval`` with the held-out numbers)."""
    folder = shipped_folder(folder)
    path = path_of(name, config, folder)
    return read_metrics(path.with_name(f"{path.stem}.metrics.jsonl"))


def _build(p: Plan) -> nn.Module:
    return p.recipe.build(p.model_cfg, p.data)


def _description(name: str, config: str | Path | dict | None,
                 folder: str | Path | None) -> tuple[Path, dict]:
    """(weights path, the ``.json`` beside it), the ``.json`` checked: readable, and recording the
    hash the config makes (the one its file is named by); else an error naming it and the remedy."""
    path = path_of(name, config, folder)
    described = path.with_suffix(".json")
    if not described.exists():
        raise FileNotFoundError(f"no shipped {name} at {described}: make it with {HOW}: "
                                f"`{_make_command(name, config, path.parent)}`")
    try:
        meta = json.loads(described.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as err:  # JSONDecodeError is a ValueError
        raise DamagedFileError(described, f"is not readable JSON ({type(err).__name__}: {err})",
                               _remedy(described, name, config)) from None
    digest = run_hash(name, config)
    if (not isinstance(meta, dict) or meta.get("config_hash") != digest
        or meta.get("file") != path.name):
        got = meta.get("config_hash") if isinstance(meta, dict) else None
        raise DamagedFileError(described, f"does not describe {path.name}: it records config_hash "
                                          f"{str(got)[:8]}, the config makes {digest[:8]}",
                               _remedy(described, name, config))
    return path, meta


def info(name: str, config: str | Path | dict | None = None,
         folder: str | Path | None = None) -> dict:
    """The description of a shipped model (its ``.json``): config, hash, the weights' sha256, steps,
    seconds, metrics; checked to describe the file the config names."""
    return _description(name, config, folder)[1]


def load(name: str, device: torch.device | str = "cpu", config: str | Path | dict | None = None,
         folder: str | Path | None = None) -> nn.Module:
    """The shipped base model ``name`` in eval mode on ``device``, from ``folder`` (default:
    :func:`shipped_folder`, found whatever the working folder). A missing file, a damaged one, one
    made by another config (its recorded hash differs), a ``.json`` that is damaged or describes
    another file, or weights whose SHA-256 is not the one their ``.json`` records raise an error
    naming the file and the remedy: ``git checkout -- <file>`` for a committed file, the
    ``pretrain`` command otherwise. (A ``.json`` written before the SHA-256 was recorded is not
    checked for it.)"""
    p = plan(name, config)
    digest = run_hash(name, config, p)
    path = shipped_folder(folder) / f"{name}-{digest[:8]}.safetensors"
    if not path.exists():
        raise FileNotFoundError(f"no shipped {name} at {path} (for this pretraining config): make "
                                f"it with {HOW}: `{_make_command(name, config, path.parent)}`")
    remedy = _remedy(path, name, config)
    tensors, meta = load_tensors(path, remedy=remedy)
    if meta.get("config_hash") != digest:
        raise DamagedFileError(path, "it was made by another configuration (hash "
                                     f"{str(meta.get('config_hash'))[:8]}, expected {digest[:8]})",
                               remedy)
    _, described = _description(name, config, path.parent)
    if "sha256" in described and file_sha256(path) != described["sha256"]:
        raise DamagedFileError(path, f"its SHA-256 is not the one {path.with_suffix('.json').name} "
                                     f"records ({described['sha256'][:12]}...): its bytes changed",
                               remedy)
    torch.manual_seed(0)
    model = _build(p)
    load_state(model, tensors, path, remedy)
    return model.to(device).eval()


def _labels(labels: Any, n_classes: int) -> Tensor:
    """``labels`` (a 1-d integer tensor, array or list) as a long tensor, checked."""
    try:
        y = torch.as_tensor(labels)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"labels: must be class indices (ints 0-{n_classes - 1}), got "
                         f"{labels!r}") from err
    if y.dtype == torch.bool or y.is_floating_point() or y.is_complex():
        raise ValueError(f"labels: must be ints 0-{n_classes - 1}, got {y.dtype} values "
                         f"{y.flatten()[:8].tolist()}")
    if y.dim() != 1 or len(y) == 0:
        raise ValueError(f"labels: must be a non-empty 1-d list of ints 0-{n_classes - 1}, got "
                         f"shape {tuple(y.shape)}")
    if bool(((y < 0) | (y >= n_classes)).any()):
        raise ValueError(f"labels: must be ints 0-{n_classes - 1}, got "
                         f"{sorted(set(y[(y < 0) | (y >= n_classes)].tolist()))}")
    return y.long()


def generate(name: str, labels: Tensor | list[int], cfg_scale: float, seed: int,
             device: torch.device | str = "cpu", config: str | Path | dict | None = None,
             folder: str | Path | None = None, sampling: dict | None = None) -> Tensor:
    """Images (B, 1, 28, 28) in [-1, 1] of the shipped generator ``name`` ("mar") for ``labels``
    (B,: ints 0-9, a tensor or a list), with classifier-free guidance ``cfg_scale`` (finite, >= 0;
    1: none), random orders and the sampler of the config's ``sampling`` section unless
    ``sampling`` is given.

    Deterministic in ``seed``, image by image: each image's order and noise come from a generator
    of its own, seeded by (``seed``, its label, how many images of that label precede it)
    (:func:`copkit.cmar.image_generators`), so the same seed and label give the same image
    whatever else is in the batch. (``generate_with``, which the chapters and the shipped
    metrics use, draws a batch from one shared generator.)"""
    if kind_of(name) != "mar":
        raise ValueError(f"{name!r} is not a generator; generate() takes 'mar'")
    if isinstance(cfg_scale, bool) or not _number(cfg_scale) or cfg_scale < 0:
        raise ValueError("cfg_scale: must be a finite number >= 0 (1: no guidance), got "
                         f"{cfg_scale!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed: must be an int, got {seed!r}")
    cfg = read_config(config) if not isinstance(config, dict) else config
    n_classes = cfg[name]["model"].get("n_classes", 10)
    y = _labels(labels, n_classes)
    model = load(name, device, cfg, folder)
    s = sampling or cfg[name]["sampling"]
    dev = next(model.parameters()).device
    generators = cmar.image_generators(seed, y, dev)
    orders = torch.cat([random_orders(1, model.cfg.n_tokens, generator=g) for g in generators])
    return cmar.generate(model, y, orders, seed, steps=s["gen_steps"],
                         diffusion_steps=s["diffusion_steps"], cfg_scale=cfg_scale,
                         temperature=s.get("temperature", 1.0), progress=False,
                         generators=generators)


def summary(config: str | Path | dict | None = None, folder: str | Path | None = None) -> dict:
    """What ``book/results/pretrained.json`` holds: for every model of the config, its file, hash,
    steps, epochs, training seconds, final metrics and the command that makes it from ``config``
    today (the same run hash; the file records the one it was trained with, which may name a
    config since folded into ``pretrain.yaml``)."""
    folder = shipped_folder(folder)
    cfg = read_config(config) if not isinstance(config, dict) else config
    models = {}
    for name in (k for k in cfg if k not in ("name", "data")):
        meta = info(name, cfg, folder)
        models[name] = {k: meta[k]
                        for k in ("file", "config_hash", "steps", "epochs", "train_seconds",
                                  "metrics")}
        models[name]["command"] = _make_command(name, config, folder)
        models[name]["hash"] = models[name].pop("config_hash")
    return {"models": models}
