"""``python -m copkit <command>`` (or the ``copkit`` script): the library's command line.

The method's stages, each from a configuration file (YAML or TOML, read strictly) or from a
profile of the book; every stage runs alone or under torchrun
(``torchrun --nproc_per_node=8 -m copkit train-comae --config configs/paper/train-comae.toml``):

    train-comae   train CoMAE                              (--config FILE | --profile NAME)
    rank          collapse orders of a data set            (--config FILE | --profile NAME)
    train-cmar    train MAR or CMAR                        (--config FILE | --profile NAME)
    sample-cmar   sample from a trained MAR / CMAR         (--config FILE)
    train-cvit    train ViT / RViT / CViT / the pruner     (--config FILE | --profile NAME)
    eval-cvit     accuracy over mask ratios, AuC, knee     (--config FILE)

Helpers:

    config        print a stage's configuration as a profile makes it (a file to start from)
    pretrain      train the book's base models, ship them in data/pretrained/ ([--only NAME] [--config smoke|FILE])
    data          find Fashion-MNIST (install or download it if missing), check every file, say where it is
    profiles      print the sizes of the smoke / cpu / gpu profiles
    convert-vae   MAR's kl16.ckpt -> safetensors (a pickle read weights-only: tensors, no code)
    convert-mar   MAR's checkpoint-last.pth -> a run folder for train-cmar's init_run (weights only)

``config <stage> --profile NAME --variant KEY=VALUE`` picks one of the chapter's trainings
(``--variant kind=vit``: Chapter 5's ViT); the same option works with a stage's ``--profile``.

``rank --profile NAME`` ranks all 70,000 Fashion-MNIST images with the CoMAE Chapter 2 saved for
that profile into ``data/pretrained/orders-<hash8>.npz`` (shipped), the file the later chapters load.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.distributed
import yaml
from safetensors.torch import save_file

from . import dist, pretrained
from .config import ConfigError, dump_yaml, load
from .data import DataNotFoundError, IDXFormatError, find_fashion_mnist, load_fashion_mnist
from .io import DamagedFileError, atomic_write_json
from .mar_weights import convert_mar_checkpoint
from .orders import dataset_orders
from .profiles import PROFILES, get_profile, pick_device
from .stages import STAGES, from_profile, run_stage

__all__ = ["main"]


def _data(args: argparse.Namespace) -> int:
    try:
        folder = find_fashion_mnist(args.root, download=not args.no_download, install=not args.no_install)
        for split in ("train", "test"):
            x, y = load_fashion_mnist(split, root=folder)
            print(f"fashion-mnist {split}: {x.shape[0]} images {tuple(x.shape[1:])}, {int(y.max()) + 1} classes")
    except (DataNotFoundError, IDXFormatError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"fashion-mnist found in {folder}")
    return 0


def _profiles(args: argparse.Namespace) -> int:
    print(json.dumps({k: p.as_dict() for k, p in PROFILES.items()}, indent=2))
    return 0


def _variant(pairs: list[str]) -> dict:
    """``--variant KEY=VALUE`` options as keywords, each value read as YAML (0.01 is a number)."""
    out = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise ConfigError(f"--variant {pair!r}: write KEY=VALUE, e.g. --variant kind=vit")
        out[key] = yaml.safe_load(value)
    return out


def _config(args: argparse.Namespace) -> int:
    try:
        config = from_profile(args.stage, args.profile, args.seed, args.data_dir, **_variant(args.variant))
    except (ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    variant = "".join(f" --variant {v}" for v in args.variant)
    print(f"# python -m copkit {args.stage} --config <this file>; made from the {args.profile} profile{variant}", flush=True)
    print(dump_yaml(config), end="")
    return 0


def _profile_orders(args: argparse.Namespace) -> int:
    """``rank --profile``: the Fashion-MNIST orders file the chapters use (copkit.orders.dataset_orders)."""
    dev = dist.local_device(args.device)
    dist.setup(dev)
    try:
        train, test, digest = dataset_orders(get_profile(args.profile), args.data_dir, dev, subset_limit=0)
    except (FileNotFoundError, DamagedFileError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if dist.is_main():
        print(f"collapse orders of {len(train) + len(test)} images: "
              f"{Path(args.data_dir) / 'pretrained' / f'orders-{digest[:8]}.npz'}")
    return 0


def _stage(args: argparse.Namespace) -> int:
    cls, _ = STAGES[args.command]
    try:
        if args.config:
            config = load(cls, args.config)
        elif args.profile:
            if args.command == "rank":
                return _profile_orders(args)
            config = from_profile(args.command, args.profile, args.seed, args.data_dir, **_variant(args.variant))
            if "<hash8>" in repr(config):
                raise ConfigError(f"{args.command} needs run folders a profile cannot name; write a config: "
                                  f"python -m copkit config {args.command} --profile {args.profile} > my.yaml")
        else:
            raise ConfigError(f"{args.command}: give --config FILE (YAML or TOML) or --profile NAME")
        run_stage(args.command, config)
    except (ConfigError, FileNotFoundError, DamagedFileError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        if dist.world_size() > 1:
            torch.distributed.destroy_process_group()
    return 0


def _convert_vae(args: argparse.Namespace) -> int:
    src, dst = Path(args.src), Path(args.dst)
    if dst.suffix != ".safetensors":
        print("error: the output must end in .safetensors", file=sys.stderr)
        return 2
    # weights_only: the unpickler accepts tensors and plain containers only, never code.
    ckpt = torch.load(src, map_location="cpu", weights_only=True)
    state = ckpt.get("model", ckpt.get("state_dict", ckpt)) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        print(f"error: {src} holds no state dict of tensors (looked at 'model', 'state_dict' and the top level)",
              file=sys.stderr)
        return 2
    save_file({k: v.contiguous() for k, v in state.items()}, str(dst))
    print(f"{len(state)} tensors: {dst}")
    return 0


def _convert_mar(args: argparse.Namespace) -> int:
    try:
        out = convert_mar_checkpoint(args.src, args.out, args.heads)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"MAR run: {out} (use it as train-cmar's init_run or sample-cmar's mar_run)")
    return 0


_HELP = {
    "train-comae": "train CoMAE",
    "rank": "collapse orders of a data set",
    "train-cmar": "train MAR or CMAR",
    "sample-cmar": "sample from a trained MAR / CMAR",
    "train-cvit": "train ViT / RViT / CViT / the pruner",
    "eval-cvit": "accuracy over mask ratios, AuC, knee",
}


_VARIANT_HELP = ("with --profile: which of the chapter's trainings (repeatable): train-comae lambda_c=0.01, "
                 "experiment=main|mirror|planted; train-cmar phase=mar|finetune|scratch; "
                 "train-cvit kind=vit|rvit|cvit|pruned")


def _pretrain(args: argparse.Namespace) -> int:
    config = pretrained.config_path(args.config)
    try:
        names = pretrained.read_config(config)
        unknown = [n for n in args.only if n not in names or n in ("name", "data")]
        if unknown:
            print(f"error: {', '.join(unknown)} not in {config}; it trains "
                  f"{', '.join(k for k in names if k not in ('name', 'data'))}", file=sys.stderr)
            return 2
        if args.park:
            for path in pretrained.park(args.only or None, config, args.data_dir, args.out):
                print(f"parked {path}")
            return 0
        out = pretrained.pretrain(args.only or None, config, args.data_dir, args.out, pick_device(args.device))
        if args.results:
            atomic_write_json(args.results, pretrained.summary(config, args.out))
    except (DataNotFoundError, DamagedFileError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for name, path in out.items():
        meta = json.loads(path.with_suffix(".json").read_text())
        shown = ", ".join(f"{k} {v:.4g}" for k, v in meta["metrics"].items() if isinstance(v, float))
        print(f"{name}: {path} ({meta['steps']} steps, {meta['train_seconds'] / 60:.1f} min): {shown}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m copkit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (cls, _) in STAGES.items():
        p = sub.add_parser(name, help=_HELP[name], description=(cls.__doc__ or "").strip())
        p.add_argument("--config", help="the stage's configuration file (.yaml, .yml or .toml)")
        p.add_argument("--profile", help="or: the configuration a profile of the book makes (smoke, cpu, gpu, a file)")
        p.add_argument("--seed", type=int, default=0, help="with --profile: the seed")
        p.add_argument("--data-dir", default="data", help="with --profile: where runs and artifacts go")
        p.add_argument("--device", default="auto", help="with rank --profile: auto, cpu, cuda")
        p.add_argument("--variant", action="append", default=[], metavar="KEY=VALUE", help=_VARIANT_HELP)
        p.set_defaults(func=_stage)
    p = sub.add_parser("config", help="print a stage's configuration as a profile makes it")
    p.add_argument("stage", choices=list(STAGES))
    p.add_argument("--profile", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default="data")
    p.add_argument("--variant", action="append", default=[], metavar="KEY=VALUE", help=_VARIANT_HELP)
    p.set_defaults(func=_config)
    p = sub.add_parser("data", help="find, check (and if needed install or download) Fashion-MNIST",
                       description="Look for Fashion-MNIST in $COPKIT_DATA, data/fashion-mnist and "
                       "/usr/share/datasets/fashion-mnist; if it is in none, install the Debian package "
                       "dataset-fashion-mnist (with apt-get, as root or through password-less sudo), then "
                       "download it with torchvision (when online); check every file.")
    p.add_argument("--root", default=None, help="a folder holding the four IDX files")
    p.add_argument("--no-download", action="store_true", help="never try to download")
    p.add_argument("--no-install", action="store_true", help="never try to install the Debian package")
    p.set_defaults(func=_data)
    p = sub.add_parser("pretrain", help="train the base models and ship them in data/pretrained/",
                       description=(pretrained.__doc__ or "").strip().split("\n\n")[0])
    p.add_argument("--only", action="append", default=[], metavar="NAME", help="only this model (repeatable)")
    p.add_argument("--config", default="full", help="full (copkit/configs/pretrain.yaml), smoke, or a file")
    p.add_argument("--data-dir", default="data", help="where the training runs go (<data-dir>/runs/)")
    p.add_argument("--out", default=None, help="where the shipped weights go (default: data/pretrained of the "
                   "repository, or $COPKIT_PRETRAINED)")
    p.add_argument("--results", default=None, help="also write the summary of every shipped model of the config here "
                   "(JSON: book/results/pretrained.json); every one must be shipped")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--park", action="store_true", help="copy unfinished runs into <out>/unfinished/ (committed), "
                   "where a later pretrain on another machine resumes them; trains nothing")
    p.set_defaults(func=_pretrain)
    p = sub.add_parser("profiles", help="print the profiles' sizes")
    p.set_defaults(func=_profiles)
    p = sub.add_parser("convert-vae", help="MAR's kl16.ckpt -> .safetensors (tensors only)")
    p.add_argument("src")
    p.add_argument("dst")
    p.set_defaults(func=_convert_vae)
    p = sub.add_parser("convert-mar", help="MAR's checkpoint-last.pth -> a MAR run folder (weights only)")
    p.add_argument("src", help="MAR's checkpoint (e.g. pretrained_models/mar/mar_base/checkpoint-last.pth)")
    p.add_argument("out", help="the run folder to write (e.g. data/runs/mar-b-released)")
    p.add_argument("--heads", type=int, default=None, help="attention heads, when args.model is not MAR's name")
    p.set_defaults(func=_convert_mar)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
