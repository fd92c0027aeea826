"""Ship what the chapters trained, so that a fresh clone's `make book` loads it instead of training
it again (as UvA's notebooks load a checkpoint when it is there and train it when it is missing).

    python tools/ship_runs.py 02_comae 05_cvit     # the runs those chapters' results files list
    python tools/ship_runs.py --all --prune        # every chapter; drop shipped runs none lists

Each chapter's results file (``book/results/<chapter>.json``, the book's profile) lists what the
chapter used (``copkit.checkpoint.used``): as ``runs`` the training runs ``copkit.train.fit``
returned, as ``records`` the runs whose metrics alone it read (``copkit.checkpoint.run_record``),
as ``files`` its caches of computed numbers (``copkit.checkpoint.cache_file``). Each one not
shipped yet is copied from ``data/runs/`` to ``data/pretrained/runs/`` (``copkit.checkpoint.
ship_run``: the EMA weights alone, the metrics and the configuration; metrics and configuration for
a record; a cache as it is), which is committed; ``fit`` then loads a run whenever its run folder
holds no checkpoint, and the chapter reads a record or a cache from there. A run changes
hash, and so trains again, whenever a reader changes what it depends on (a parameter, the data,
the base model). Nothing is written when the shipped files would exceed ``--limit-mb`` (all of
``data/pretrained/``: the base models and the shipped runs together).

A chapter's first run trains every network it has no record of, so its results file lists them
all as ``runs``; run it once more before shipping: with its records and caches in ``data/runs/``
it fits only the networks it still draws (Chapter 4: two of its fifteen fine-tunes), and those
are what ship with their weights.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from copkit.checkpoint import WEIGHTS, ship_run  # noqa: E402

LIMIT_MB = 60.0  #: the most the committed data/pretrained/ may hold


KINDS = ("runs", "records", "files")  #: what a results file lists (copkit.checkpoint.used)


def listed(results_dir: Path, chapters: list[str]) -> dict[str, dict[str, list[str]]]:
    """``kind -> id -> the chapters that list it`` from the chapters' results files: ``runs``
    (networks), ``records`` (runs whose metrics alone a chapter reads) and ``files`` (caches)."""
    out: dict[str, dict[str, list[str]]] = {kind: {} for kind in KINDS}
    for chapter in chapters:
        path = results_dir / f"{chapter}.json"
        if not path.exists():
            raise SystemExit(f"{path}: no results file; run the chapter first "
                             f"(python tools/run_chapters.py {chapter} --profile cpu)")
        found = json.loads(path.read_text())
        if "runs" not in found:
            raise SystemExit(f"{path}: written before results files listed their runs; run "
                             f"{chapter} again")
        for kind in KINDS:
            for key in found.get(kind, []):
                out[kind].setdefault(key, []).append(chapter)
    # a run whose network one chapter needs ships its weights, even if another reads its record
    out["records"] = {k: v for k, v in out["records"].items() if k not in out["runs"]}
    return out


def folder_mb(folder: Path) -> float:
    if folder.is_file():
        return folder.stat().st_size / 2**20
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def _shipped(root: Path, kind: str, key: str) -> bool:
    """Whether ``key`` is shipped as ``kind`` needs it: a run with its weights, a record with
    its metrics, a file."""
    return ((root / key / WEIGHTS).exists() if kind == "runs"
            else (root / key / "metrics.jsonl").exists() if kind == "records"
            else (root / key).is_file())


def ship(results_dir: Path, data_dir: Path, chapters: list[str], prune: bool,
         limit_mb: float = LIMIT_MB) -> list[str]:
    """Ship what the chapters list; with ``prune`` remove shipped entries none of them lists.
    Returns what it did, a line per entry."""
    wanted = listed(results_dir, chapters)
    root, local = data_dir / "pretrained" / "runs", data_dir / "runs"
    todo, missing = [], []
    for kind in KINDS:
        for key in sorted(wanted[kind]):
            if _shipped(root, kind, key):
                continue
            source = local / key / "checkpoint.safetensors" if kind != "files" else local / key
            if source.exists():
                todo.append((kind, key))
            else:
                missing.append(f"{key} (listed by {', '.join(wanted[kind][key])})")
    if missing:
        raise SystemExit(f"not in {local} and not shipped: " + "; ".join(missing)
                         + ". Run those chapters again at the book's profile.")
    every = {key for ids in wanted.values() for key in ids}
    stale = ([p for p in sorted(root.iterdir()) if p.name not in every]
             if prune and root.exists() else [])
    staging = local / ".ship-staging"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        for kind, key in todo:
            if kind == "files":
                staging.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(local / key, staging / key)
            else:
                ship_run(local / key, staging / key, weights=kind == "runs")
        after = (folder_mb(data_dir / "pretrained") + folder_mb(staging)
                 - sum(folder_mb(p) for p in stale))
        if after > limit_mb:
            raise SystemExit(f"shipping {len(todo)} entries would make data/pretrained "
                             f"{after:.1f} MB, over the {limit_mb:g} MB limit; nothing was "
                             "shipped")
        done = []
        for kind, key in todo:
            dest = root / key
            if dest.is_dir():
                shutil.rmtree(dest)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(staging / key), dest)
            what = {"runs": "", "records": ", metrics only", "files": ", a cache"}[kind]
            done.append(f"shipped {key} ({folder_mb(dest):.2f} MB{what}; "
                        f"{', '.join(wanted[kind][key])})")
        for p in stale:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
            done.append(f"removed {p.name} (no chapter lists it)")
        done.append(f"data/pretrained: {folder_mb(data_dir / 'pretrained'):.1f} MB "
                    f"of {limit_mb:g}")
        return done
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("chapters", nargs="*", help="chapters whose runs to ship (02_comae ...)")
    ap.add_argument("--all", action="store_true", help="every chapter with a results file")
    ap.add_argument("--prune", action="store_true",
                    help="remove shipped entries that none of the chapters lists")
    ap.add_argument("--results", default=str(ROOT / "book" / "results"))
    ap.add_argument("--data-dir", default=str(ROOT / "data"))
    ap.add_argument("--limit-mb", type=float, default=LIMIT_MB)
    args = ap.parse_args(argv)
    results = Path(args.results)
    chapters = (sorted(p.stem for p in results.glob("[0-9][0-9]_*.json")) if args.all
                else args.chapters)
    if not chapters:
        ap.error("name the chapters, or --all")
    if args.prune and not args.all:
        ap.error("--prune needs --all: a run another chapter lists would be removed")
    for line in ship(results, Path(args.data_dir), chapters, args.prune, args.limit_mb):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
