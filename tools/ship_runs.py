"""Ship what the chapters trained, so that a fresh clone's `make book` loads it instead of training
it again (as UvA's notebooks load a checkpoint when it is there and train it when it is missing).

    python tools/ship_runs.py 02_comae 05_cvit     # the runs those chapters' results files list
    python tools/ship_runs.py --all --prune        # every chapter; drop shipped runs none lists

Each chapter's results file (``book/results/<chapter>.json``, the book's profile) lists as ``runs``
the training runs ``copkit.train.fit`` returned while the chapter ran. Each one not shipped yet is
copied from ``data/runs/<name>-<hash8>/`` to ``data/pretrained/runs/<name>-<hash8>/``
(``copkit.checkpoint.ship_run``: the EMA weights alone, the metrics and the configuration), which
is committed; ``fit`` then loads it whenever the run folder holds no checkpoint. A run changes
hash, and so trains again, whenever a reader changes what it depends on (a parameter, the data,
the base model). Nothing is written when the shipped files would exceed ``--limit-mb`` (all of
``data/pretrained/``: the base models and the shipped runs together).
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


def listed_runs(results_dir: Path, chapters: list[str]) -> dict[str, list[str]]:
    """``run id -> the chapters that list it`` from the chapters' results files."""
    out: dict[str, list[str]] = {}
    for chapter in chapters:
        path = results_dir / f"{chapter}.json"
        if not path.exists():
            raise SystemExit(f"{path}: no results file; run the chapter first "
                             f"(python tools/run_chapters.py {chapter} --profile cpu)")
        runs = json.loads(path.read_text()).get("runs")
        if runs is None:
            raise SystemExit(f"{path}: written before results files listed their runs; run "
                             f"{chapter} again")
        for run in runs:
            out.setdefault(run, []).append(chapter)
    return out


def folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def ship(results_dir: Path, data_dir: Path, chapters: list[str], prune: bool,
         limit_mb: float = LIMIT_MB) -> list[str]:
    """Ship the chapters' runs; with ``prune`` remove shipped runs that none of them lists.
    Returns what it did, a line per run."""
    runs = listed_runs(results_dir, chapters)
    shipped_root = data_dir / "pretrained" / "runs"
    todo, missing = [], []
    for run in sorted(runs):
        if (shipped_root / run / WEIGHTS).exists():
            continue
        if not (data_dir / "runs" / run / "checkpoint.safetensors").exists():
            missing.append(f"{run} (listed by {', '.join(runs[run])})")
        else:
            todo.append(run)
    if missing:
        raise SystemExit("not in " + str(data_dir / "runs") + " and not shipped: "
                         + "; ".join(missing) + ". Run those chapters again at the book's profile.")
    stale = ([p for p in sorted(shipped_root.glob("*")) if p.is_dir() and p.name not in runs]
             if prune and shipped_root.exists() else [])
    # the size after: the checkpoint's EMA part is what ships, so estimate from a dry copy
    staging = data_dir / "runs" / ".ship-staging"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        for run in todo:
            ship_run(data_dir / "runs" / run, staging / run)
        after = (folder_mb(data_dir / "pretrained") + folder_mb(staging)
                 - sum(folder_mb(p) for p in stale))
        if after > limit_mb:
            raise SystemExit(f"shipping {len(todo)} runs would make data/pretrained "
                             f"{after:.1f} MB, over the {limit_mb:g} MB limit; nothing was "
                             "shipped")
        done = []
        for run in todo:
            dest = shipped_root / run
            shutil.rmtree(dest, ignore_errors=True)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(staging / run), dest)
            done.append(f"shipped {run} ({folder_mb(dest):.2f} MB; {', '.join(runs[run])})")
        for p in stale:
            shutil.rmtree(p)
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
                    help="remove shipped runs that none of the chapters lists")
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
