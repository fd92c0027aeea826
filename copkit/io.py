"""Atomic file writes (a reader never sees a half-written file, even after a kill), and the one
error for a file copkit wrote that is damaged or foreign (:class:`DamagedFileError`)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_json", "DamagedFileError", "remedy_for"]


class DamagedFileError(ValueError):
    """A file copkit reads back (a checkpoint, an artifact, an orders file, a run's ``config.json``)
    is truncated, corrupt, or not one copkit wrote.

    The message names the file, what is wrong with it and what to do; ``path``, ``problem`` and
    ``remedy`` hold the three parts.
    """

    def __init__(self, path: str | os.PathLike, problem: str, remedy: str | None = None) -> None:
        self.path = Path(path)
        self.problem = problem
        self.remedy = remedy or remedy_for(self.path)
        super().__init__(f"{self.path}: {problem}. {self.remedy}")


def remedy_for(path: str | os.PathLike) -> str:
    """What to do about a damaged file, from what its name says it is."""
    path = Path(path)
    if path.name in ("checkpoint.safetensors", "config.json", "metrics.jsonl"):
        return (f"Delete the run folder {path.parent} and run the command that trained it again "
                "(the chapter, or `python -m copkit train-...`); training starts over.")
    if path.name.startswith("orders-") and path.suffix == ".npz":
        return (f"Delete {path} and make it again: `make orders` (`python -m copkit rank --profile ...`), "
                "or run the chapter that needs it, which makes a missing one.")
    if path.name.startswith("shard-") and path.suffix == ".npz":
        return f"Delete {path} and run `python -m copkit rank` again: it computes the missing shard."
    if path.suffix == ".npz":
        return f"Delete {path} and run `python -m copkit rank` (the stage that makes it) again."
    if path.suffix == ".safetensors":
        return (f"Delete {path} (and {path.with_suffix('.json').name} beside it) and re-run the chapter or "
                "`python -m copkit` command that made it.")
    return f"Delete {path} and re-run the command that made it."


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``.

    The folder is created if needed. Either the old file or the complete new one is on disk at any
    moment, never a prefix of the new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """:func:`atomic_write_bytes` for an object serialised as indented JSON (NaN refused)."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n")
