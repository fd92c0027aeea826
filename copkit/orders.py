"""Collapse orders for a whole data set, computed in resumable shards (Sec. 3.2 applied at scale).

Each shard of images goes through CoMAE's ``masks()`` and :func:`copkit.rank.collapse_order` and is
written atomically to ``<out>.parts/shard-00000.npz`` (and so on) together with the hash of the
CoMAE that made it; a killed run resumes at the first missing shard. :func:`merge_shards` checks
that every shard comes from the same CoMAE and that the shards cover every image exactly once, then
writes ``<out>`` (uint8 orders (n, N), the split of each image, the CoMAE hash) atomically.
"""

from __future__ import annotations

import io
import math
import zipfile
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from . import dist, pretrained
from .data import load_fashion_mnist
from .io import DamagedFileError, atomic_write_bytes, bars_off, fault_point
from .rank import collapse_order
from .tokens import patchify

__all__ = ["SPLITS", "COMPILE_FROM", "compute_orders", "merge_shards", "load_orders",
           "orders_digest", "dataset_orders"]


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    """An ``.npz`` archive, compressed: orders that are nearly one order for every image (as the
    shipped CoMAE's are) shrink about tenfold, and the book ships them within its 60 MB."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


#: the arrays of an orders file and of each of its shards
_ORDERS_KEYS = ("orders", "split", "comae_hash")
_SHARD_KEYS = ("orders", "start", "stop", "comae_hash")


def _read(path: Path, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file copkit wrote; :class:`copkit.io.DamagedFileError` naming the
    file and what to do when it is truncated, corrupt, not an ``.npz`` or lacks one of ``keys``."""
    path = Path(path)
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise DamagedFileError(path, "holds a single array, not the .npz archive of "
                                         f"{', '.join(keys)}")
        with loaded as z:
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise DamagedFileError(path, f"lacks {', '.join(missing)} (holds "
                                             f"{', '.join(z.files) or 'nothing'}): "
                                       "not a file of collapse orders")
            out = {k: z[k] for k in keys}
    except (FileNotFoundError, DamagedFileError):
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        raise DamagedFileError(path, "cannot be read, it is truncated or corrupt "
                                     f"({type(err).__name__}: {err})") from err
    return out


#: :func:`compute_orders` compiles the selector when one process ranks at least this many images
COMPILE_FROM = 8192


def compute_orders(model, tokens, out: str | Path, comae_hash: str,
                   split: Sequence[str] | np.ndarray, shard_size: int = 4096,
                   device: torch.device | str = "cpu", damping: float = 0.85,
                   chunk: int | None = None,
                   stop_after_shards: int | None = None, progress: bool = True,
                   compiled: bool | None = None) -> Path | None:
    r"""Compute and store the collapse order of every image.

    ``tokens`` is a tensor (n, N, d) or any source sliced into such batches
    (:class:`copkit.tokenizer.TokenSource` over images read from disk). Shards already on disk
    (from the same CoMAE) are kept. Under torchrun, process :math:`r` of :math:`K` computes the
    shards :math:`s` with :math:`s \bmod K = r`, and rank 0 merges them once every process is done:
    the file is the same as one process writes (a shared file system is needed across machines).

    With ``stop_after_shards`` the run stops after writing that many new shards, as if killed,
    and returns None; otherwise the shards are merged into ``out`` and its path returned.

    ``compiled`` runs the selector through ``torch.compile`` (:meth:`copkit.comae.CoMAE.masks`);
    None compiles when this process ranks at least :data:`COMPILE_FROM` images, where the
    compiler's start-up (under a minute) is small beside the ranking.
    """
    out = Path(out)
    parts = out.with_name(out.name + ".parts")
    parts.mkdir(parents=True, exist_ok=True)
    n = len(tokens)
    shards = math.ceil(n / shard_size)
    mine = [s for s in range(shards) if s % dist.world_size() == dist.rank()]
    if compiled is None:
        compiled = sum(min(n, (s + 1) * shard_size) - s * shard_size for s in mine) >= COMPILE_FROM
    written = 0
    bar = tqdm(mine, desc="collapse orders", unit="shard",
               disable=bars_off(progress and dist.is_main()), mininterval=5.0, ncols=100)
    for s in bar:
        path = parts / f"shard-{s:05d}.npz"
        if path.exists() and str(_read(path, _SHARD_KEYS)["comae_hash"]) == comae_hash:
            continue
        if stop_after_shards is not None and written >= stop_after_shards:
            bar.close()
            return None
        a, b = s * shard_size, min(n, (s + 1) * shard_size)
        batch = tokens[a:b].to(device)
        if batch.shape[1] > 256:
            raise ValueError("orders are stored as uint8: at most 256 tokens, got "
                             f"{batch.shape[1]}")
        # (only a real CoMAE is asked to compile: the tests rank with stand-ins)
        masks = model.masks(batch, chunk=chunk, **({"compiled": True} if compiled else {}))
        order = collapse_order(masks, damping=damping).cpu().numpy().astype(np.uint8)
        atomic_write_bytes(path, _npz_bytes(orders=order, start=np.int64(a), stop=np.int64(b),
                                            comae_hash=np.array(comae_hash)))
        written += 1
        fault_point("shard", written)  # tests kill a ranking here ($COPKIT_FAULT=shard:<k>)
    bar.close()
    dist.barrier()
    if dist.is_main():
        merge_shards(parts, out, comae_hash, n, np.asarray(split))
    dist.barrier()
    return out


def merge_shards(parts: str | Path, out: str | Path, comae_hash: str, n: int,
                 split: np.ndarray) -> Path:
    """Merge shard files into one orders file; refuse shards of another CoMAE, gaps and overlaps."""
    files = sorted(Path(parts).glob("shard-*.npz"))
    if not files:
        raise FileNotFoundError(f"no shards in {parts}")
    covered = np.zeros(n, dtype=np.int64)
    orders = None
    for f in files:
        z = _read(f, _SHARD_KEYS)
        if str(z["comae_hash"]) != comae_hash:
            raise ValueError(f"{f} was made by CoMAE {str(z['comae_hash'])[:8]}, not "
                             f"{comae_hash[:8]}: delete {parts} and compute the orders again")
        a, b = int(z["start"]), int(z["stop"])
        if orders is None:
            orders = np.zeros((n, z["orders"].shape[1]), dtype=np.uint8)
        orders[a:b] = z["orders"]
        covered[a:b] += 1
    if (covered != 1).any():
        missing, twice = int((covered == 0).sum()), int((covered > 1).sum())
        raise ValueError(f"shards in {parts} leave {missing} images without an order and cover "
                         f"{twice} twice")
    if len(split) != n:
        raise ValueError(f"split has {len(split)} entries for {n} images")
    return atomic_write_bytes(Path(out),
                              _npz_bytes(orders=orders, split=np.asarray(split).astype(str),
                                                    comae_hash=np.array(comae_hash)))


#: The split names an orders file may hold, Fashion-MNIST's (and "all") and an image folder's val.
SPLITS = ("train", "test", "all", "val")


def load_orders(path: str | Path, comae_hash: str | None = None,
                splits: Sequence[str] | None = SPLITS) -> tuple[np.ndarray, np.ndarray, str]:
    """(orders uint8 (n, N), split (n,), comae_hash) from an orders file; with ``comae_hash`` the
    file must have been made by that CoMAE.

    Every row must be a permutation of 0..N-1 and every split one of ``splits`` (None: any name,
    for an image folder's own sub-folder names). A truncated, corrupt or foreign file, or one that
    breaks these rules, raises :class:`copkit.io.DamagedFileError` naming it and how to make it
    again.
    """
    path = Path(path)
    z = _read(path, _ORDERS_KEYS)
    orders, split = z["orders"], z["split"]
    if (orders.dtype != np.uint8 or orders.ndim != 2 or split.shape != (len(orders),)
        or z["comae_hash"].ndim != 0):
        raise DamagedFileError(path, f"orders {orders.dtype} {orders.shape}, split {split.shape}, "
                                     f"comae_hash {z['comae_hash'].shape}: not the uint8 (n, N) "
                                     "orders, (n,) split and one hash of an orders file")
    n_tokens = orders.shape[1]
    if (len(orders)
        and not (np.sort(orders, axis=1) == np.arange(n_tokens, dtype=orders.dtype)).all()):
        bad = int(np.flatnonzero((np.sort(orders, axis=1) != np.arange(n_tokens)).any(1))[0])
        raise DamagedFileError(path, f"row {bad} of its orders is not a permutation of "
                                     f"0..{n_tokens - 1} ({orders[bad].tolist()})")
    if splits is not None and not set(np.unique(split).tolist()) <= set(splits):
        unknown = sorted(set(np.unique(split).tolist()) - set(splits))
        raise DamagedFileError(path, f"its split names {unknown} are not among the known splits "
                                     f"{list(splits)}")
    made_by = str(z["comae_hash"])
    if comae_hash is not None and made_by != comae_hash:
        raise ValueError(f"{path} was made by CoMAE {made_by[:8]}, expected {comae_hash[:8]}")
    return orders, split, made_by


def orders_digest(path: str | Path) -> str:
    """The hash of the CoMAE that made an orders file, read without reading its orders."""
    return str(_read(Path(path), ("comae_hash",))["comae_hash"])


def dataset_orders(profile, data_dir: str | Path, device: torch.device | str = "cpu",
                   n_train: int | None = None, n_test: int | None = None, subset_limit: int = 7000,
                   progress: bool = True, comae: str = "comae") -> tuple[Tensor, Tensor, str]:
    """Collapse orders of Fashion-MNIST by the shipped CoMAE of a profile's base models
    (:func:`copkit.pretrained.base` ``(profile, comae, data_dir)``: ``make pretrain``; ``profile``
    may be the pretraining config itself), loaded or made.

    Returns ``(train_orders, test_orders, comae_hash)``: long tensors (n, 49), best patch first,
    for the first ``n_train`` training and ``n_test`` test images (None: all of them), in the
    order of :func:`copkit.data.load_fashion_mnist`.

    The full file ``orders-<hash8>.npz`` is shipped beside the CoMAE in ``<data_dir>/pretrained/``
    (``make orders`` makes it) and used whenever it exists; one in ``<data_dir>/`` (an earlier
    cache) is used too. Otherwise a request for more than ``subset_limit`` images ranks the whole
    data set into ``pretrained/`` (resumably: a killed run continues), since the next chapter will
    want it too, and a smaller request (the smoke profile) ranks only those images into
    ``<data_dir>/orders-<hash8>-<n_train>-<n_test>.npz``. A file from another CoMAE is never used:
    the hash names the CoMAE that made it.
    """
    data_dir = Path(data_dir)
    model, digest = pretrained.base(profile, comae, data_dir, device)
    name = f"orders-{digest[:8]}.npz"
    full = next((p for p in (data_dir / "pretrained" / name, data_dir / name) if p.exists()),
                data_dir / "pretrained" / name)
    x_train, _ = load_fashion_mnist("train")
    x_test, _ = load_fashion_mnist("test")
    a = len(x_train) if n_train is None else min(n_train, len(x_train))
    b = len(x_test) if n_test is None else min(n_test, len(x_test))
    if full.exists():
        orders, split, _ = load_orders(full, digest, splits=("train", "test"))
        train, test = orders[split == "train"], orders[split == "test"]
    else:
        whole = a + b > subset_limit
        ta, tb = (len(x_train), len(x_test)) if whole else (a, b)
        out = full if whole else data_dir / f"orders-{digest[:8]}-{a}-{b}.npz"
        if not out.exists():
            tokens = patchify(torch.cat([x_train[:ta], x_test[:tb]]), 4)
            split = np.array(["train"] * ta + ["test"] * tb)
            compute_orders(model, tokens, out, digest, split, shard_size=2048, device=device,
                           progress=progress)
        orders, split, _ = load_orders(out, digest, splits=("train", "test"))
        train, test = orders[split == "train"], orders[split == "test"]
    return (torch.from_numpy(train[:a].astype(np.int64)),
            torch.from_numpy(test[:b].astype(np.int64)), digest)
