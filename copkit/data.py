"""The data the book runs on: Fashion-MNIST and scikit-image's photos.

Fashion-MNIST is read straight from its IDX files (optionally gzipped) with numpy. They are looked
for, in order, in ``$COPKIT_DATA``, ``data/fashion-mnist`` of the project, and
``/usr/share/datasets/fashion-mnist`` (Debian's package ``dataset-fashion-mnist``). When none has
them, ``python -m copkit data`` (the first step of ``make test`` and ``make book``) installs that
package if the machine has apt-get and the rights to use it, and otherwise torchvision downloads
them into ``data/fashion-mnist`` if the machine is online. Images come
back as float32 tensors in [-1, 1], shape (n, 1, 28, 28).

torch, torchvision and scikit-image are imported by the functions that use them, so that finding
and checking the files (``python -m copkit data``) needs numpy only and answers in a second.
"""

from __future__ import annotations

import gzip
import os
import shutil
import socket
import subprocess
import sys
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import numpy as np

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [
    "CLASSES",
    "SIDE",
    "PHOTOS",
    "DataNotFoundError",
    "IDXFormatError",
    "read_idx",
    "find_fashion_mnist",
    "fashion_mnist_files",
    "load_fashion_mnist",
    "fashion_mnist_arrays",
    "project_root",
    "photo",
    "photo_crops",
]

#: Fashion-MNIST's images are SIDE x SIDE pixels (:mod:`copkit.tokens` cuts them into patches).
SIDE = 28

#: The ten Fashion-MNIST class names, by label.
CLASSES: tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)

_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
_APT_PACKAGE = "dataset-fashion-mnist"
# The IDX type byte 0x08 is unsigned bytes, the only type Fashion-MNIST uses.
_UBYTE = 0x08


class DataNotFoundError(FileNotFoundError):
    """No copy of a data set could be found or downloaded; the message says how to get one."""


class IDXFormatError(ValueError):
    """An IDX file is truncated, of the wrong kind, or inconsistent with its partner file."""


# --------------------------------------------------------------------------------------- IDX files
def read_idx(path: str | os.PathLike, ndim: int) -> np.ndarray:
    """Read an IDX file of unsigned bytes with ``ndim`` dimensions (3 for images, 1 for labels).

    The file may be gzipped (name ending in ``.gz``). The magic number, the header's sizes and the
    number of data bytes are all checked; any mismatch raises :class:`IDXFormatError` naming the
    file and what is wrong.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (EOFError, gzip.BadGzipFile, OSError) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise IDXFormatError(
            f"{path}: cannot decompress ({err}); the file is truncated or not gzip. "
            "Delete it and get a fresh copy."
        ) from err
    want_magic = (_UBYTE << 8) | ndim
    kind = "image" if ndim == 3 else "label" if ndim == 1 else f"{ndim}-d"
    if len(raw) < 4:
        raise IDXFormatError(f"{path}: only {len(raw)} bytes, too short for an IDX header")
    magic = int.from_bytes(raw[:4], "big")
    if magic != want_magic:
        raise IDXFormatError(
            f"{path}: wrong magic number 0x{magic:08x}, expected 0x{want_magic:08x} "
            f"(an IDX {kind} file of unsigned bytes); is this the right file?"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IDXFormatError(f"{path}: truncated inside the header ({len(raw)} of {header} bytes)")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims))
    have = len(raw) - header
    if have != expected:
        what = "truncated" if have < expected else "longer than its header says"
        raise IDXFormatError(
            f"{path}: file is {what}: header says {' x '.join(map(str, dims))} = {expected} bytes "
            f"of data, found {have}. Delete it and get a fresh copy."
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


# --------------------------------------------------------------------------------------- finding
def project_root() -> Path:
    """The folder holding the book (``_toc.yml`` and ``copkit/``): found upward from the working
    directory, then from this package's own location; the working directory if neither has it."""
    starts = [Path.cwd(), Path(__file__).resolve().parent]
    for start in starts:
        for folder in [start, *start.parents]:
            if (folder / "_toc.yml").is_file() and (folder / "copkit").is_dir():
                return folder
    return Path.cwd()


def _file_in(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def fashion_mnist_files(folder: str | os.PathLike) -> list[Path]:
    """The four IDX files of Fashion-MNIST in ``folder`` (each gzipped or not), in the order train
    images, train labels, test images, test labels; FileNotFoundError naming a missing one."""
    out = []
    for stem in (s for pair in _FILES.values() for s in pair):
        found = _file_in(Path(folder), stem)
        if found is None:
            raise FileNotFoundError(f"{folder} holds no {stem} (or {stem}.gz)")
        out.append(found)
    return out


def _complete(folder: Path) -> Path | None:
    """``folder`` or one of its usual sub-folders if it holds all four files, else None."""
    for sub in (folder, folder / "fashion-mnist", folder / "FashionMNIST" / "raw"):
        if all(_file_in(sub, stem) for pair in _FILES.values() for stem in pair):
            return sub
    return None


def _candidates() -> list[Path]:
    out = []
    if os.environ.get("COPKIT_DATA"):
        out.append(Path(os.environ["COPKIT_DATA"]).expanduser())
    out.append(project_root() / "data" / "fashion-mnist")
    out.append(_SYSTEM_DIR)
    return out


def _not_found(looked: list[Path], reason: str) -> DataNotFoundError:
    where = "\n".join(f"    {p}" for p in looked)
    return DataNotFoundError(
        "Fashion-MNIST was not found. Looked in:\n"
        f"{where}\n"
        "Get it in one of three ways:\n"
        "  1. Debian/Ubuntu: sudo apt-get install dataset-fashion-mnist "
        f"(puts the files in {_SYSTEM_DIR});\n"
        "  2. copy train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
        "t10k-images-idx3-ubyte.gz\n     and t10k-labels-idx1-ubyte.gz into data/fashion-mnist/ of "
        "the book, or into a folder\n     named by the environment variable COPKIT_DATA;\n"
        "  3. on a machine that is online, run `python -m copkit data`: torchvision downloads "
        "them\n     into data/fashion-mnist/.\n"
        f"({reason})"
    )


def find_fashion_mnist(root: str | os.PathLike | None = None, download: bool | None = None,
                       install: bool = False) -> Path:
    """The folder holding the four Fashion-MNIST IDX files.

    With ``root`` only that folder (or its ``fashion-mnist`` / ``FashionMNIST/raw`` sub-folder) is
    used. Otherwise ``$COPKIT_DATA``, the project's ``data/fashion-mnist`` and
    ``/usr/share/datasets/fashion-mnist`` are tried in that order. When none holds the files:

    1. with ``install`` (what ``python -m copkit data``, and so ``make``, asks for), on a machine
       with ``apt-get`` where this process is root or ``sudo -n`` works without a password, the
       Debian package ``dataset-fashion-mnist`` is installed (``apt-get update``, then
       ``apt-get install -y``);
    2. then, when the machine is online, torchvision downloads the files into ``data/fashion-mnist``
       (skipped when ``download`` is False or ``$COPKIT_NO_DOWNLOAD`` is set).

    Each attempt prints one line saying what it tries. When all fail, raises
    :class:`DataNotFoundError` naming the three ways to get the data and why each attempt failed.
    """
    if root is not None:
        found = _complete(Path(root).expanduser())
        if found is None:
            raise _not_found([Path(root)], "the folder given as root does not hold all four files")
        return found
    looked = _candidates()
    for folder in looked:
        found = _complete(folder)
        if found is not None:
            return found
    reasons = []
    if install:
        why_not = _apt_install()
        found = _complete(_SYSTEM_DIR)
        if found is not None:
            return found
        reasons.append(f"apt-get: {why_not or f'the package installed nothing into {_SYSTEM_DIR}'}")
    if download is None:
        download = not os.environ.get("COPKIT_NO_DOWNLOAD")
    if not download:
        reasons.append("download switched off")
        raise _not_found(looked, "; ".join(reasons))
    target = project_root() / "data" / "fashion-mnist"
    if not _online():
        reasons.append(f"download: offline ({_mirror()[0]} cannot be reached)")
        raise _not_found(looked, "; ".join(reasons))
    _say(f"Fashion-MNIST: downloading it with torchvision into {target}")
    try:
        _download(target)
    except Exception as err:  # noqa: BLE001 - any failure means: offline or blocked
        reasons.append(f"download failed: {type(err).__name__}: {err}")
        raise _not_found(looked, "; ".join(reasons)) from None
    found = _complete(target)
    if found is None:
        reasons.append(f"download finished but {target} is incomplete")
        raise _not_found(looked, "; ".join(reasons))
    return found


# The seams the tests stub: which programs exist, who we are, running a command, the network.
def _which(program: str) -> str | None:
    return shutil.which(program)


def _euid() -> int:
    return os.geteuid() if hasattr(os, "geteuid") else -1


def _run(cmd: list[str], quiet: bool = False) -> int:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    out = subprocess.DEVNULL if quiet else None
    return subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                          check=False).returncode


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _apt_install() -> str | None:
    """Install ``dataset-fashion-mnist`` with apt-get as root or through password-less sudo.
    Returns None when apt-get succeeded, else why it was not tried or what failed."""
    if _which("apt-get") is None:
        return "no apt-get on this machine"
    if _euid() == 0:
        prefix: list[str] = []
    elif _which("sudo") is not None and _run(["sudo", "-n", "true"], quiet=True) == 0:
        prefix = ["sudo", "-n"]
    else:
        return "not root, and sudo asks for a password (or is missing)"
    how = "as root" if not prefix else "through sudo"
    _say(f"Fashion-MNIST: installing the Debian package {_APT_PACKAGE} {how} (apt-get update, "
         "apt-get install -y)")
    rc = _run([*prefix, "apt-get", "update", "-qq"])
    if rc != 0:
        return f"`apt-get update` failed with exit status {rc}"
    rc = _run([*prefix, "apt-get", "install", "-y", "-qq", _APT_PACKAGE])
    if rc != 0:
        return f"`apt-get install -y {_APT_PACKAGE}` failed with exit status {rc}"
    return None


def _mirror() -> tuple[str, int]:
    """Host and port of torchvision's first Fashion-MNIST mirror."""
    from torchvision.datasets import FashionMNIST

    url = urlparse(FashionMNIST.mirrors[0])
    return url.hostname or "", url.port or (443 if url.scheme == "https" else 80)


def _online(timeout: float = 5.0) -> bool:
    """Can torchvision's Fashion-MNIST mirror be reached (a TCP connection within ``timeout`` s)?"""
    try:
        socket.create_connection(_mirror(), timeout=timeout).close()
    except OSError:
        return False
    return True


def _download(target: Path) -> None:
    from torchvision.datasets import FashionMNIST

    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30)
    try:
        for train in (True, False):
            FashionMNIST(root=str(target), train=train, download=True)
    finally:
        socket.setdefaulttimeout(old)


@lru_cache(maxsize=4)
def _load_split(folder: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    img_stem, lab_stem = _FILES[split]
    img_path, lab_path = _file_in(Path(folder), img_stem), _file_in(Path(folder), lab_stem)
    images = read_idx(img_path, 3)
    labels = read_idx(lab_path, 1)
    if images.shape[0] != labels.shape[0]:
        raise IDXFormatError(
            f"{img_path} holds {images.shape[0]} images but {lab_path} holds {labels.shape[0]} "
            "labels"
        )
    if images.shape[1:] != (SIDE, SIDE):
        raise IDXFormatError(f"{img_path}: images are {images.shape[1:]}, Fashion-MNIST's are "
                             f"({SIDE}, {SIDE})")
    if labels.size and labels.max() >= len(CLASSES):
        raise IDXFormatError(f"{lab_path}: label {labels.max()} outside 0..{len(CLASSES) - 1}")
    images.flags.writeable = labels.flags.writeable = False  # cached: shared by every caller
    return images, labels


def load_fashion_mnist(
    split: str = "train",
    root: str | os.PathLike | None = None,
    limit: int | None = None,
    download: bool | None = None,
) -> tuple[Tensor, Tensor]:
    r"""Fashion-MNIST images in [-1, 1] and their labels.

    Args:
        split: ``"train"`` (60,000), ``"test"`` (10,000) or ``"all"`` (train then test, 70,000).
        root: a folder holding the files; default: search as in :func:`find_fashion_mnist`.
        limit: keep only the first ``limit`` images.

    Returns:
        The pair ``(images, labels)`` of images float32 (n, 1, 28, 28),
        :math:`\text{pixel} / 127.5 - 1`, and labels int64 (n,), see :data:`CLASSES`.
    """
    import torch

    images, labels = fashion_mnist_arrays(split, root, download)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    x = torch.from_numpy(images.astype(np.float32)).div_(127.5).sub_(1.0).unsqueeze(1)
    return x, torch.from_numpy(labels.astype(np.int64))


def fashion_mnist_arrays(split: str = "train", root: str | os.PathLike | None = None,
                         download: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The files' own values, with numpy only: images uint8 (n, 28, 28) and labels uint8 (n,),
    checked against each other and the data set's shape and classes (as
    :func:`load_fashion_mnist`, which scales them)."""
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    folder = str(find_fashion_mnist(root, download=download))
    parts = [_load_split(folder, s) for s in (("train", "test") if split == "all" else (split,))]
    if len(parts) == 1:
        return parts[0]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


# --------------------------------------------------------------------------------------- photos
#: The scikit-image photos :func:`photo` can load.
PHOTOS: tuple[str,
              ...] = ("astronaut", "camera", "chelsea", "coffee", "rocket", "immunohistochemistry")


def _photo_array(name: str, gray: bool) -> np.ndarray:
    import skimage.color
    import skimage.data
    import skimage.util

    if name not in PHOTOS:
        raise ValueError(f"unknown photo {name!r}; choose one of {', '.join(PHOTOS)}")
    img = skimage.util.img_as_float(getattr(skimage.data, name)())
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[..., :3]
    if gray and img.ndim == 3:
        img = skimage.color.rgb2gray(img)
    if not gray and img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    return img


def _to_tensor(img: np.ndarray) -> Tensor:
    import torch

    arr = img[None] if img.ndim == 2 else img.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32) * 2.0 - 1.0)


def photo(name: str, size: int, gray: bool = True) -> Tensor:
    """One of scikit-image's bundled photos, centre-cropped to a square and resized to size x size.

    Returns a float32 tensor (1 or 3, size, size) in [-1, 1]. ``name`` is one of :data:`PHOTOS`.
    """
    import skimage.transform

    img = _photo_array(name, gray)
    h, w = img.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    img = img[top: top + s, left: left + s]
    img = skimage.transform.resize(img, (size, size), anti_aliasing=True)
    return _to_tensor(np.clip(img, 0.0, 1.0))


def photo_crops(name: str, n: int, size: int, scale: float = 0.25, gray: bool = True,
                seed: int = 0) -> Tensor:
    """``n`` random size x size crops of a photo first resized by ``scale``: (n, C, size, size) in
    [-1, 1].

    A stand-in data set of natural image patches for fitting token statistics to a photo.
    """
    import skimage.transform
    import torch

    img = _photo_array(name, gray)
    h, w = img.shape[:2]
    new = (max(size, round(h * scale)), max(size, round(w * scale)))
    img = np.clip(skimage.transform.resize(img, new, anti_aliasing=True), 0.0, 1.0)
    rng = np.random.default_rng(seed)
    tops = rng.integers(0, new[0] - size + 1, n)
    lefts = rng.integers(0, new[1] - size + 1, n)
    crops = np.stack([img[t: t + size, left: left + size] for t, left in zip(tops, lefts)])
    x = crops[:, None] if crops.ndim == 3 else crops.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32) * 2.0 - 1.0)
