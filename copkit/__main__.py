"""``python -m copkit <command>``: the library's command line.

Commands:
    data       find Fashion-MNIST (download it when online), check every file, say where it is
    profiles   print the sizes of the smoke / cpu / gpu profiles
    rank       collapse orders of all 70,000 Fashion-MNIST images from the profile's saved CoMAE
"""

from __future__ import annotations

import argparse
import json
import sys


def _data(args: argparse.Namespace) -> int:
    from .data import DataNotFoundError, IDXFormatError, find_fashion_mnist, load_fashion_mnist

    try:
        folder = find_fashion_mnist(args.root, download=not args.no_download)
        for split in ("train", "test"):
            x, y = load_fashion_mnist(split, root=folder)
            print(f"fashion-mnist {split}: {x.shape[0]} images {tuple(x.shape[1:])}, {int(y.max()) + 1} classes")
    except (DataNotFoundError, IDXFormatError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"fashion-mnist found in {folder}")
    return 0


def _profiles(args: argparse.Namespace) -> int:
    from .profiles import PROFILES

    print(json.dumps({k: p.as_dict() for k, p in PROFILES.items()}, indent=2))
    return 0


def _rank(args: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np
    import torch

    from .comae import load_profile_comae
    from .data import load_fashion_mnist
    from .orders import compute_orders
    from .profiles import get_profile, pick_device
    from .tokens import patchify

    dev = pick_device(args.device)
    data_dir = Path(args.data_dir)
    try:
        model, meta = load_profile_comae(get_profile(args.profile).comae, data_dir, args.seed, dev)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    digest = meta["config_hash"]
    x_train, _ = load_fashion_mnist("train")
    x_test, _ = load_fashion_mnist("test")
    tokens = patchify(torch.cat([x_train, x_test]), 4)
    split = np.array(["train"] * len(x_train) + ["test"] * len(x_test))
    if args.limit:
        tokens, split = tokens[:args.limit], split[:args.limit]
    out = data_dir / (f"orders-{digest[:8]}.npz" if not args.limit else f"orders-{digest[:8]}-first{args.limit}.npz")
    path = compute_orders(model, tokens, out, digest, split, shard_size=args.shard_size, device=dev)
    print(f"collapse orders of {len(split)} images written to {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m copkit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("data", help="find, check (and if needed download) Fashion-MNIST")
    p.add_argument("--root", default=None, help="a folder holding the four IDX files")
    p.add_argument("--no-download", action="store_true", help="never try to download")
    p.set_defaults(func=_data)
    p = sub.add_parser("profiles", help="print the profiles' sizes")
    p.set_defaults(func=_profiles)
    p = sub.add_parser("rank", help="collapse orders of Fashion-MNIST (train + test) from the saved CoMAE")
    p.add_argument("--profile", default="cpu", help="whose CoMAE (smoke, cpu, gpu)")
    p.add_argument("--seed", type=int, default=0, help="the seed offset chapter 2 ran with")
    p.add_argument("--data-dir", default="data", help="where the CoMAE is and the orders go")
    p.add_argument("--device", default="auto")
    p.add_argument("--shard-size", type=int, default=2048)
    p.add_argument("--limit", type=int, default=None, help="only the first images (for a quick check)")
    p.set_defaults(func=_rank)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
