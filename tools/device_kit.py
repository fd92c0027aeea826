"""`make device-kit`: pack what the book needs on a GPU machine that cannot reach a package index.

A GPU machine lent through this workplace's device tool runs an image with Python 3.12, PyTorch
and most scientific packages (tools/device_image_packages.txt), but it reaches no network: pip
cannot install there and Debian's Fashion-MNIST package is not on it. This writes into .device/
(ignored by git, carried to the machine beside the working tree):

- ``wheels/``: every distribution the chapters need (copkit's dependencies and its ``book`` extra,
  less jupyter-book and sphinx-mathjax-offline, which build the site here) that the image lacks, at
  the version this project's .venv has, for CPython 3.12 on manylinux x86-64. timm and kneed are
  carried even where the image has a copy, so that the models and the knee finder are the code the
  tests ran.
- ``fashion-mnist/``: the four IDX files, found as ``make data`` finds them.
- ``MANIFEST.json``: what was packed, the versions and the sizes.

``scripts/device_book.sh``, run there, installs the wheels into /tmp/site and runs
``scripts/gpu_book.sh`` with the image's python3. Everything that travels (working tree and kit)
must fit the device's 64 MiB: the sizes are printed and an oversized kit is an error.

    .venv/bin/python tools/device_kit.py          # -> .device/
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
IMAGE_LIST = ROOT / "tools" / "device_image_packages.txt"
# The device machine: CPython 3.12 on x86-64 Linux (glibc 2.39).
TARGET_ENV = {**default_environment(), "python_version": "3.12", "python_full_version": "3.12.3",
              "implementation_name": "cpython", "platform_python_implementation": "CPython",
              "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
              "os_name": "posix"}
PLATFORMS = ([f"manylinux_2_{n}_x86_64" for n in range(39, 16, -1)]
             + ["manylinux2014_x86_64", "manylinux1_x86_64"])
ALWAYS_CARRY = {"timm", "kneed"}  # the exact code the tests ran, whatever the image's version
NOT_THERE = {"jupyter-book", "sphinx-mathjax-offline"}  # build the site, which happens back here
LIMIT_MIB = 64                    # what travels to the device machine, working tree included


def image_packages(path: Path = IMAGE_LIST) -> set[str]:
    """The canonical names listed in ``path`` (one per line; ``#`` starts a comment)."""
    names = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return {canonicalize_name(n) for n in names if n}


def requirements_of(dist: str, extras: tuple[str, ...] = (),
                    env: dict | None = None) -> list[Requirement]:
    """The requirements installed distribution ``dist`` declares that apply on ``env`` (the device's
    Python by default) with ``extras`` asked for."""
    env = TARGET_ENV if env is None else env
    out = []
    for text in md.distribution(dist).requires or []:
        req = Requirement(text)
        if (req.marker is None
            or any(req.marker.evaluate({**env, "extra": e}) for e in ("", *extras))):
            out.append(req)
    return out


def closure(roots: list[Requirement], env: dict | None = None) -> dict[str, str | None]:
    """Every distribution ``roots`` need on ``env``, transitively: canonical name -> the version
    this interpreter has installed (None where it has none, e.g. a dependency only newer Pythons
    need)."""
    found: dict[str, str | None] = {}
    todo = list(roots)
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in found:
            continue
        try:
            found[name] = md.version(req.name)
        except md.PackageNotFoundError:
            found[name] = None
            continue
        todo.extend(requirements_of(req.name, tuple(req.extras), env))
    return found


def book_roots() -> list[Requirement]:
    """copkit's own requirements and its ``book`` extra, less what only builds the site."""
    return [r for r in requirements_of("copkit", ("book",))
            if canonicalize_name(r.name) not in NOT_THERE]


def to_carry(needed: dict[str, str | None], image: set[str]) -> dict[str, str | None]:
    """What the image lacks, plus :data:`ALWAYS_CARRY`."""
    return {n: v for n, v in sorted(needed.items()) if n not in image or n in ALWAYS_CARRY}


def download(carry: dict[str, str | None], dest: Path) -> None:
    """CPython 3.12 manylinux x86-64 wheels of ``carry`` (no sdists, no dependencies) into
    ``dest``."""
    specs = [f"{n}=={v}" if v else n for n, v in carry.items()]
    cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "-q",
           "--no-deps", "--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp",
           *[a for p in PLATFORMS for a in ("--platform", p)], "-d", str(dest), *specs]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode:
        sys.exit("pip download failed (it needs PyPI; run this where pip can reach "
                 f"it):\n{res.stderr}")


def travelling_bytes() -> int:
    """Bytes of the files the device tool sends besides a carried path: tracked files and untracked
    ones git does not ignore."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=ROOT, capture_output=True, check=True).stdout
    return sum((ROOT / p).stat().st_size for p in out.decode().split("\0") if p
               and (ROOT / p).is_file())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / ".device"),
                        help="the kit's folder (default .device/)")
    args = parser.parse_args()
    out = Path(args.out)

    from copkit.data import fashion_mnist_files, find_fashion_mnist

    needed = closure(book_roots())
    carry = to_carry(needed, image_packages())
    # Build the kit beside the old one and swap, so an interrupted run leaves the old kit whole.
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".device-", dir=out.parent))
    try:
        (tmp / "wheels").mkdir()
        print(f"downloading {len(carry)} wheels for CPython 3.12 (the image has the other "
              f"{len(needed) - len(carry)} of the {len(needed)} distributions the chapters need) "
              "...", flush=True)
        download(carry, tmp / "wheels")
        src = find_fashion_mnist()
        (tmp / "fashion-mnist").mkdir()
        for f in fashion_mnist_files(src):
            shutil.copyfile(f, tmp / "fashion-mnist" / f.name)
        wheels = sorted(p.name for p in (tmp / "wheels").glob("*.whl"))
        kit = sum(p.stat().st_size for p in tmp.rglob("*") if p.is_file())
        manifest = {"made": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "python": "3.12",
                    "carried": carry, "wheels": wheels, "fashion_mnist_from": str(src),
                    "kit_bytes": kit}
        (tmp / "MANIFEST.json").write_text(json.dumps(manifest, indent=1) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    tree = travelling_bytes()  # once the half-built kit (not yet ignored) is gone
    mib = 2 ** 20
    print(f"{out}: {len(wheels)} wheels, Fashion-MNIST; kit {kit / mib:.1f} MiB + working tree "
          f"{tree / mib:.1f} MiB = {(kit + tree) / mib:.1f} MiB of the device's {LIMIT_MIB} MiB")
    if kit + tree > LIMIT_MIB * mib:
        print("too large to travel: remove untracked files from the working tree", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
