"""Atomic file writes (a reader never sees a half-written file, even after a kill), folder locks
(one training at a time in a run folder), the one error for a file copkit wrote that is damaged or
foreign (:class:`DamagedFileError`), the SHA-256 of a file (:func:`file_sha256`), and the
fault-injection points the tests kill processes at (:func:`fault_point`), and whether a progress
bar may write to the terminal (:func:`bars_off`)."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import signal
import sys
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_json", "DamagedFileError",
           "remedy_for", "file_sha256", "folder_lock", "fault_point", "bars_off"]


class DamagedFileError(ValueError):
    """A file copkit reads back (a checkpoint, a shipped model, an orders file, a run's
    ``config.json``) is truncated, corrupt, or not one copkit wrote.

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
        return (f"Delete {path} and make it again: `make orders` (`python -m copkit rank --profile "
                "...`), or run the chapter that needs it, which makes a missing one.")
    if path.name.startswith("shard-") and path.suffix == ".npz":
        return (f"Delete {path} and run `python -m copkit rank` again: it computes the missing "
                "shard.")
    if path.suffix == ".npz":
        return f"Delete {path} and run `python -m copkit rank` (the stage that makes it) again."
    if path.suffix == ".safetensors":
        return (f"Delete {path} (and {path.with_suffix('.json').name} beside it) and re-run the "
                "chapter or `python -m copkit` command that made it.")
    return f"Delete {path} and re-run the command that made it."


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``.

    The folder is created if needed. Either the old file or the complete new one is on disk at any
    moment, never a prefix of the new one. The temporary file (``.<name>.<pid>.<random>.tmp``) of
    a writer that was killed is removed by the next write of the same file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_orphans(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp",
                               dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        fault_point("write", path.name)
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
    return atomic_write_text(path,
                             json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _remove_orphans(path: Path) -> None:
    """Delete the temporary files of earlier writes of ``path`` whose process is gone (killed
    between writing and renaming); a live writer's file is left alone."""
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        pid = tmp.name[len(path.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes (64 hex digits), read in 1 MiB chunks: what a shipped model's
    description records, and (its first 16 digits) what names a weights or VAE file in a run's
    hash."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_held = threading.local()  # the folders this thread holds locked: folder -> depth


@contextmanager
def folder_lock(folder: str | os.PathLike, what: str = "training") -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` (created if needed) for the ``with`` block, so that one
    process at a time trains into a run folder.

    A second process (or thread) that asks for a folder in use prints one line to stderr saying
    what it waits for, then waits until the folder is free; the same thread may take a lock it
    holds again. The lock is ``flock`` on the folder itself (no lock file is left behind), and the
    kernel releases it when its process ends, killed or not, so a lock never outlives its holder.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = str(folder.resolve())
    depth: dict[str, int] = _held.__dict__.setdefault("depth", {})
    if depth.get(key):
        depth[key] += 1
        try:
            yield folder
        finally:
            depth[key] -= 1
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting: another {what} is using {folder}; this one goes on when that one ends "
                  "(Ctrl-C to stop waiting)", file=sys.stderr, flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        depth[key] = 1
        try:
            yield folder
        finally:
            depth.pop(key, None)
    finally:
        os.close(fd)  # releases the lock


def fault_point(kind: str, key: str | int) -> None:
    """Fault injection for the tests (``tests/test_faults.py``): when ``$COPKIT_FAULT`` is
    ``"<kind>:<key>"`` this process kills itself with SIGKILL here, as a power cut or the OOM
    killer would; with ``"<kind>:<key>:stop"`` it stops itself with SIGSTOP (to be resumed with
    SIGCONT). Points: ``step:<k>`` after training step k (before its checkpoint), ``shard:<k>``
    after the k-th new shard of collapse orders, ``write:<file name>`` inside an atomic write,
    after the temporary file is complete and before it replaces the file. Unset: does nothing."""
    fault = os.environ.get("COPKIT_FAULT")
    if not fault:
        return
    target, _, action = fault.partition(f"{kind}:{key}")
    if target or action not in ("", ":stop"):
        return
    os.kill(os.getpid(), signal.SIGSTOP if action == ":stop" else signal.SIGKILL)


def bars_off(progress: bool = True) -> bool:
    """Whether a progress bar stays off (tqdm's ``disable``): when its caller asks for none
    (``progress`` false), or when ``$TQDM_DISABLE`` is set to anything but ``""``, ``0`` or
    ``false``. ``tools/run_chapters.py`` sets it for the notebooks it executes, so that no
    progress-bar line is saved in an executed chapter; a reader running a chapter in JupyterLab
    still sees the bars.

    >>> bars_off(False)
    True
    """
    flag = os.environ.get("TQDM_DISABLE", "").strip().lower()
    return not progress or flag not in ("", "0", "false")
