"""``python -m copkit <command>``: the library's command line.

Commands:
    data       find Fashion-MNIST (download it when online), check every file, say where it is
    profiles   print the sizes of the smoke / cpu / gpu profiles
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
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
