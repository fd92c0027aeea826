"""The command line of copkit: python -m copkit <command> (or the copkit script).

The method's stages, each from a configuration file (YAML or TOML, read strictly) or from a
profile of the book; every stage runs alone or under torchrun
(torchrun --nproc_per_node=8 -m copkit train-comae --config configs/paper/train-comae.toml):

    train-comae   train CoMAE                              (--config FILE | --profile NAME)
    rank          collapse orders of a data set            (--config FILE | --profile NAME)
    train-cmar    train MAR or CMAR                        (--config FILE | --profile NAME)
    sample-cmar   sample from a trained MAR / CMAR         (--config FILE)
    train-cvit    train ViT / RViT / CViT / the pruner     (--config FILE | --profile NAME)
    eval-cvit     accuracy over mask ratios, AuC, knee     (--config FILE)

Helpers:

    config        print a stage's configuration as a profile makes it (a file to start from)
    pretrain      train the book's base models, ship them in data/pretrained/ ([--only NAME]
    [--config smoke|FILE]) data          find Fashion-MNIST (install or download it if missing),
    check every file, say where it is profiles      print the sizes of the smoke / cpu / gpu
    profiles convert-vae   MAR's kl16.ckpt -> safetensors (a pickle read weights-only: tensors, no
    code) convert-mar   MAR's checkpoint-last.pth -> a run folder for train-cmar's init (weights
    only)

"config <stage> --profile NAME --variant KEY=VALUE" picks one of the chapter's trainings
("--variant kind=vit": Chapter 5's ViT); the same option works with a stage's --profile.

"rank --profile NAME" ranks all 70,000 Fashion-MNIST images with the CoMAE Chapter 2 saved for
that profile into data/pretrained/orders-<hash8>.npz (shipped), the file the later chapters load.

An error prints one line, "error: ...", and exits with status 2; --debug (or COPKIT_DEBUG=1)
shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
from pathlib import Path

# torch, the models and the data are imported by the commands that use them, so that --help and
# a mistyped option answer at once.

__all__ = ["main"]


def _data(args: argparse.Namespace) -> int:
    from .data import fashion_mnist_arrays, find_fashion_mnist

    folder = find_fashion_mnist(args.root, download=not args.no_download,
                                install=not args.no_install)
    for split in ("train", "test"):
        x, y = fashion_mnist_arrays(split, root=folder)
        print(f"fashion-mnist {split}: {x.shape[0]} images (1, {x.shape[1]}, {x.shape[2]}), "
              f"{int(y.max()) + 1} classes")
    print(f"fashion-mnist found in {folder}")
    return 0


def _profiles(args: argparse.Namespace) -> int:
    from .profiles import PROFILES

    print(json.dumps({k: p.as_dict() for k, p in PROFILES.items()}, indent=2))
    return 0


def _variant(pairs: list[str]) -> dict:
    """``--variant KEY=VALUE`` options as keywords, each value read as YAML (0.01 is a number)."""
    import yaml

    from .config import ConfigError

    out = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise ConfigError(f"--variant {pair!r}: write KEY=VALUE, e.g. --variant kind=vit")
        out[key] = yaml.safe_load(value)
    return out


def _config(args: argparse.Namespace) -> int:
    from .config import config_hash, dump_yaml
    from .stages import chapter_config, run_config

    config = chapter_config(args.stage, args.profile, args.seed, args.data_dir,
                            **_variant(args.variant))
    variant = "".join(f" --variant {v}" for v in args.variant)
    print(f"# python -m copkit {args.stage} --config <this file>; made from the {args.profile} "
          f"profile{variant}", flush=True)
    if args.stage.startswith("train-"):
        try:
            run = run_config(config)
        except (OSError, ValueError) as err:  # the base models' hashes need Fashion-MNIST
            print(f"# (its run folder cannot be named here: {err})")
        else:
            digest = config_hash(run)
            print("# trains the chapter's run "
                  f"{Path(args.data_dir) / 'runs' / run['model']}-{digest[:8]} (run hash {digest})")
    print(dump_yaml(config), end="")
    return 0


def _profile_orders(args: argparse.Namespace) -> int:
    """``rank --profile``: the Fashion-MNIST orders file the chapters use
    (copkit.orders.dataset_orders)."""
    from . import dist
    from .orders import dataset_orders
    from .profiles import get_profile

    dev = dist.local_device(args.device)
    dist.setup(dev)
    train, test, digest = dataset_orders(get_profile(args.profile), args.data_dir, dev,
                                         subset_limit=0)
    if dist.is_main():
        print(f"collapse orders of {len(train) + len(test)} images: "
              f"{Path(args.data_dir) / 'pretrained' / f'orders-{digest[:8]}.npz'}")
    return 0


def _stage(args: argparse.Namespace) -> int:
    import dataclasses

    from . import dist
    from .config import ConfigError, load
    from .profiles import pick_device
    from .stages import STAGES, chapter_config, run_stage

    try:  # a device that does not exist is named now, before any data is read
        pick_device(args.device)
    except ValueError as err:
        raise ValueError(f"--device {args.device}: {err}") from None
    cls, _ = STAGES[args.command]
    try:
        if args.config:
            config = load(cls, args.config)
        elif args.profile:
            if args.command == "rank":
                return _profile_orders(args)
            config = chapter_config(args.command, args.profile, args.seed, args.data_dir,
                                    **_variant(args.variant))
            if "<hash8>" in repr(config):
                raise ConfigError(f"{args.command} needs run folders a profile cannot name; write "
                                  f"a config: python -m copkit config {args.command} --profile "
                                  f"{args.profile} > my.yaml")
        else:
            raise ConfigError(f"{args.command}: give --config FILE (YAML or TOML) or --profile "
                              "NAME")
        # train-cmar, train-cvit: what the fine-tune starts from
        if getattr(args, "init", None) is not None:
            config = dataclasses.replace(config,
                                         init=None if args.init.lower() in ("", "none")
                                         else args.init)
        run_stage(args.command, config)
    finally:
        if dist.world_size() > 1:
            import torch.distributed

            torch.distributed.destroy_process_group()
    return 0


def _convert_vae(args: argparse.Namespace) -> int:
    import torch
    from safetensors.torch import save_file

    src, dst = Path(args.src), Path(args.dst)
    if dst.suffix != ".safetensors":
        raise ValueError(f"the output {dst} must end in .safetensors")
    if not src.is_file():
        raise FileNotFoundError(f"{src} does not exist: give the path of MAR's VAE checkpoint "
                                "(kl16.ckpt)")
    # weights_only: the unpickler accepts tensors and plain containers only, never code.
    try:
        ckpt = torch.load(src, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as err:
        found = [line.split("Unsupported global: ")[1].split(" was not")[0]
                 for line in str(err).splitlines() if "Unsupported global: " in line]
        why = f"it refers to {found[0]}" if found else type(err).__name__
        raise ValueError(f"{src} cannot be read as tensors only ({why}): it is "
                         "not a PyTorch checkpoint of weights, or it holds code or objects, which "
                         "copkit never unpickles; give MAR's kl16.ckpt") from err
    state = ckpt.get("model", ckpt.get("state_dict", ckpt)) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{src} holds no state dict of tensors (looked at 'model', 'state_dict' "
                         "and the top level)")
    save_file({k: v.contiguous() for k, v in state.items()}, str(dst))
    print(f"{len(state)} tensors: {dst}")
    return 0


def _convert_mar(args: argparse.Namespace) -> int:
    from .mar_weights import convert_mar_checkpoint

    out = convert_mar_checkpoint(args.src, args.out, args.heads)
    print(f"MAR run: {out} (use it as train-cmar's init or sample-cmar's mar_run)")
    return 0


#: the stages (copkit.stages.STAGES, which imports torch): name -> (short help, description)
_STAGES = {
    "train-comae": ("train CoMAE", "Train CoMAE on the configured images and tokenizer; the last "
                                   "val_images images "
                    "are held out for validation. The run goes to <data_dir>/runs/comae-<hash8>/."),
    "rank": ("collapse orders of a data set", "The collapse order of every image of the data, from "
                                              "the CoMAE of a "
             "train-comae run, into one .npz file. With --profile NAME: all 70,000 Fashion-MNIST "
             "images from the shipped CoMAE of that profile, into "
             "data/pretrained/orders-<hash8>.npz."),
    "train-cmar": ("train MAR or CMAR", "Train MAR (kind random) or CMAR (kind descending; "
                                        "ascending is the "
                   "ablation of Table 4), from scratch or fine-tuned (init: the shipped base MAR, "
                   "pretrained:mar, or a MAR run). With --profile: Chapter 4's fine-tune of the "
                   "shipped base MAR."),
    "sample-cmar": ("sample from a trained MAR / CMAR", "Sample per_class images of every class "
                                                        "(or of classes) "
                    "from a MAR or CMAR run: an .npz of uint8 images and labels, and a PNG grid "
                    "beside it."),
    "train-cvit": ("train ViT / RViT / CViT / the pruner", "Train a classifier; model.train_drop "
                                                           "picks ViT (none), "
                   "RViT (random), CViT (collapse) or the pruning baseline (learned). With "
                   "--profile: Chapter 5's fine-tune of the shipped base ViT (init: "
                   "pretrained:vit)."),
    "eval-cvit": ("accuracy over mask ratios, AuC, knee", "Top-1 and top-5 accuracy of a "
                                                          "train-cvit run over mask "
                  "ratios, the area under the curve (AuC) and the Kneedle knee, as JSON."),
}


_VARIANT_HELP = ("with --profile: which of the chapter's trainings (repeatable): train-comae "
                 "lambda_c=0.01, experiment=main|mirror|planted; train-cmar "
                 "phase=finetune|mar|scratch, kind=descending|random|ascending; train-cvit "
                 "kind=vit|rvit|cvit|pruned")


def _pretrain(args: argparse.Namespace) -> int:
    from . import fmt, pretrained
    from .io import atomic_write_json
    from .profiles import pick_device

    config = pretrained.config_path(args.config)
    names = pretrained.read_config(config)
    unknown = [n for n in args.only if n not in names or n in ("name", "data")]
    if unknown:
        raise ValueError(f"--only: {', '.join(unknown)} not in {config}; it trains "
                         f"{', '.join(k for k in names if k not in ('name', 'data'))}")
    if args.park:
        for path in pretrained.park(args.only or None, config, args.data_dir, args.out):
            print(f"parked {path}")
        return 0
    if args.extend_from:
        if len(args.only) != 1:
            raise ValueError("--extend-from needs exactly one --only NAME: the model it goes on as")
        run, step = pretrained.extend(args.only[0], args.extend_from, config, args.data_dir)
        print(f"{run} goes on from step {step} of {args.extend_from}")
    out = pretrained.pretrain(args.only or None, config, args.data_dir, args.out,
                              pick_device(args.device))
    if args.results:
        atomic_write_json(args.results, pretrained.summary(config, args.out))
    for name, path in out.items():
        meta = json.loads(path.with_suffix(".json").read_text())
        shown = ", ".join(f"{k} {fmt.sig(v, 4)}" for k, v in meta["metrics"].items()
                          if isinstance(v, float))
        print(f"{name}: {path} ({fmt.count(meta['steps'])} steps, "
              f"{fmt.duration(meta['train_seconds'])}): {shown}")
    return 0


#: what a user can fix (a bad option, file or value): one line and status 2; anything else is a bug
_USER_ERRORS = (ValueError, OSError, pickle.UnpicklingError)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m copkit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true",
                        help="on an error, show the traceback (also: COPKIT_DEBUG=1)")
    debug = argparse.ArgumentParser(add_help=False)  # --debug after the command too
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (short, description) in _STAGES.items():
        p = sub.add_parser(name, help=short, description=description, parents=[debug])
        p.add_argument("--config", help="the stage's configuration file (.yaml, .yml or .toml)")
        p.add_argument("--profile",
                       help="or: the configuration a profile of the book makes (smoke, cpu, gpu, a "
                            "file)")
        p.add_argument("--seed", type=int, default=0, help="with --profile: the seed")
        p.add_argument("--data-dir", default="data",
                       help="with --profile: where runs and artifacts go")
        p.add_argument("--device", default="auto",
                       help="with rank --profile: auto, cpu, cuda[:i], mps")
        p.add_argument("--variant", action="append", default=[], metavar="KEY=VALUE",
                       help=_VARIANT_HELP)
        if name in ("train-cmar", "train-cvit"):
            p.add_argument("--init", metavar="FROM",
                           help="fine-tune from pretrained:NAME (a shipped base model, e.g. "
                           f"pretrained:{'mar' if name == 'train-cmar' else 'vit'}) or a run "
                           "folder; none: from " "scratch (replaces the configuration's init)")
        p.set_defaults(func=_stage)
    p = sub.add_parser("config", help="print a stage's configuration as a profile makes it",
                       parents=[debug],
                       description="Print the configuration of a stage that the book's chapter "
                                   "uses at a profile, " "as YAML: a file to edit and pass to the "
                                                         "stage's --config.")
    p.add_argument("stage", choices=list(_STAGES))
    p.add_argument("--profile", default="cpu", help="smoke, cpu, gpu or a profile file")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default="data")
    p.add_argument("--variant", action="append", default=[], metavar="KEY=VALUE",
                   help=_VARIANT_HELP)
    p.set_defaults(func=_config)
    p = sub.add_parser("data", help="find, check (and if needed install or download) Fashion-MNIST",
                       parents=[debug],
                       description="Look for Fashion-MNIST in $COPKIT_DATA, data/fashion-mnist and "
                                   "/usr/share/datasets/fashion-mnist; if it is in none, install "
                                   "the Debian package "
                       "dataset-fashion-mnist (with apt-get, as root or through password-less "
                       "sudo), then download it with torchvision (when online); check every file.")
    p.add_argument("--root", default=None, help="a folder holding the four IDX files")
    p.add_argument("--no-download", action="store_true", help="never try to download")
    p.add_argument("--no-install", action="store_true",
                   help="never try to install the Debian package")
    p.set_defaults(func=_data)
    p = sub.add_parser("pretrain", help="train the base models and ship them in data/pretrained/",
                       parents=[debug],
                       description="Train the book's base models once to convergence (the "
                                   "classifier, the ViT, " "MAR and the CoMAEs of "
                                                           "copkit/configs/pretrain.yaml) and ship "
                                                           "each one's weights, description "
                       "and learning curve in data/pretrained/. An interrupted training resumes; a "
                       "model already shipped is not trained again.")
    p.add_argument("--only", action="append", default=[], metavar="NAME",
                   help="only this model (repeatable)")
    p.add_argument("--config", default="full",
                   help="full (copkit/configs/pretrain.yaml), smoke, or a file")
    p.add_argument("--data-dir", default="data",
                   help="where the training runs go (<data-dir>/runs/)")
    p.add_argument("--out", default=None,
                   help="where the shipped weights go (default: data/pretrained of the repository, "
                        "or $COPKIT_PRETRAINED)")
    p.add_argument("--results", default=None,
                   help="also write the summary of every shipped model of the config here (JSON: "
                        "book/results/pretrained.json); every one must be shipped")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda[:i], mps")
    p.add_argument("--park", action="store_true",
                   help="copy unfinished runs into <out>/unfinished/ (committed), where a later "
                        "pretrain on another machine resumes them; trains nothing")
    p.add_argument("--extend-from", default=None, metavar="RUN",
                   help="with one --only NAME whose section asks for more steps than the run "
                        "folder RUN (otherwise the same configuration, learning rate held): go on "
                        "from RUN's checkpoint instead of starting over (copkit.checkpoint.extend)")
    p.set_defaults(func=_pretrain)
    p = sub.add_parser("profiles", help="print the profiles' sizes", parents=[debug])
    p.set_defaults(func=_profiles)
    p = sub.add_parser("convert-vae", help="MAR's kl16.ckpt -> .safetensors (tensors only)",
                       parents=[debug])
    p.add_argument("src", help="MAR's VAE checkpoint (kl16.ckpt)")
    p.add_argument("dst", help="the .safetensors file to write")
    p.set_defaults(func=_convert_vae)
    p = sub.add_parser("convert-mar",
                       help="MAR's checkpoint-last.pth -> a MAR run folder (weights only)",
                       parents=[debug])
    p.add_argument("src", help="MAR's checkpoint (e.g. "
                               "pretrained_models/mar/mar_base/checkpoint-last.pth)")
    p.add_argument("out", help="the run folder to write (e.g. data/runs/mar-b-released)")
    p.add_argument("--heads", type=int, default=None,
                   help="attention heads, when args.model is not MAR's name")
    p.set_defaults(func=_convert_mar)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; an error prints ``error: ...`` (one line) and returns 2, or, with
    ``--debug`` or ``COPKIT_DEBUG=1``, raises with its traceback."""
    args = _parser().parse_args(argv)
    debug = args.debug or os.environ.get("COPKIT_DEBUG", "") not in ("", "0")
    try:
        return args.func(args)
    except _USER_ERRORS as err:
        if debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # a bug: still one line, with the way to the traceback
        if debug:
            raise
        print(f"error: {type(err).__name__}: {err} (an internal error of copkit; run again "
              "with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
