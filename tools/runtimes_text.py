"""Write the book's run times into the Markdown pages that state them, from the one file that
records them.

``tools/run_chapters.py`` records the seconds each chapter took in
``book/results/runtimes-<profile>.json``; the performance chapter and the report read that file.
The introduction (``book/intro.md``) and ``README.md`` cannot run code, so this tool writes the
same numbers into them, between the lines ``<!-- runtimes:begin -->`` and
``<!-- runtimes:end -->`` (nothing else in the files is touched): minutes per chapter for every
profile that has been run (:func:`copkit.results.runtimes_table`), where they ran, and how long
the chapters take two at a time as ``make book`` runs them (the longest of the runner's lanes).
``make book`` runs it after the chapters; ``--check`` only compares, and exits 1 naming a file
whose numbers differ from the runtimes files (``tests/test_runtimes_text.py`` does that on
every test run).

    python tools/runtimes_text.py            # rewrite the blocks
    python tools/runtimes_text.py --check    # exit 1 if a block is stale
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from run_chapters import schedule  # noqa: E402

from copkit import fmt  # noqa: E402
from copkit.results import (  # noqa: E402
    PROFILE_ORDER,
    RUNTIME_READERS,
    read_runtimes,
    runtimes_hosts,
    runtimes_table,
)

#: the Markdown files that state run times, relative to the repository
FILES = ("book/intro.md", "README.md")
BEGIN, END = "<!-- runtimes:begin -->", "<!-- runtimes:end -->"
#: chapters run at once by ``make book`` (the Makefile's JOBS)
JOBS = 2


def lanes_seconds(seconds: dict[str, float], jobs: int = JOBS) -> float:
    """How long the chapters take ``jobs`` at a time, as ``tools/run_chapters.py`` schedules them:
    longest first, each to the lane that frees first (then the summary pages one after the other,
    when ``seconds`` holds any). A lower bound of the wall time (it leaves out starting the
    processes).

    >>> lanes_seconds({"01_a": 10.0, "02_b": 30.0, "03_c": 25.0, "06_report": 2.0}, jobs=2)
    37.0
    """
    parallel, summaries = schedule(list(seconds), seconds)
    lanes = [0.0] * max(1, jobs)
    for name in parallel:
        lanes[lanes.index(min(lanes))] += seconds[name]
    return max(lanes) + sum(seconds[name] for name in summaries)


def render(results_dir: Path) -> str:
    """The block: the table of minutes, where they were measured, the time two at a time."""
    runtimes = read_runtimes(results_dir)
    if not runtimes:
        return f"No run times recorded yet (`{results_dir.relative_to(ROOT)}/runtimes-<profile>.json`)."
    lines = [runtimes_table(runtimes), ""]
    computing = {p: {k: v for k, v in c.items() if k not in RUNTIME_READERS}
                 for p, c in runtimes.items()}
    where = "; ".join(f"`{p}` on {runtimes_hosts(c)}" for p, c in computing.items())
    lines.append(f"Minutes per chapter as `tools/run_chapters.py` recorded them in "
                 "`book/results/runtimes-<profile>.json` (the report and the performance chapter "
                 f"read the same files, and take seconds themselves): {where}.")
    seconds = {p: {name: c["seconds"] for name, c in chapters.items()}
               for p, chapters in computing.items()}
    if seconds:
        lines.append("Two chapters at a time, as `make book` and `make test` run them "
                     f"(`JOBS={JOBS}`), the chapters take about "
                     + fmt.listing(f"{fmt.duration(lanes_seconds(s))} at `{p}`"
                                   for p, s in seconds.items())
                     + ", "
                       "against "
                     + fmt.listing(fmt.duration(sum(s.values())) for s in seconds.values())
                     + " one after the other.")
    missing = [p for p in PROFILE_ORDER if p not in runtimes]
    if missing:
        lines.append(f"Not measured yet: {fmt.listing(f'`{p}`' for p in missing)}.")
    return "\n".join(lines)


#: the base models' training costs, in README.md only (:func:`render_pretrain`)
PRETRAIN_BEGIN, PRETRAIN_END = "<!-- pretrain-costs:begin -->", "<!-- pretrain-costs:end -->"
PRETRAIN_FILES = ("README.md",)


def render_pretrain(results_dir: Path) -> str:
    """What `make pretrain` and `make orders` cost, from the shipped models' summary
    (``pretrained.json``: each model's training seconds and epochs) and ``make bench``'s timing
    of `make orders` (``bench.json``)."""
    import json

    path = results_dir / "pretrained.json"
    if not path.exists():
        return "No base model shipped yet (`book/results/pretrained.json`)."
    models = json.loads(path.read_text())["models"]
    order = sorted(models, key=lambda n: -models[n]["train_seconds"])
    text = (f"`make pretrain` cost {fmt.num(sum(m['train_seconds'] for m in models.values()) / 3600, 1)} "
            "hours of training on one core each (as each model's `.json` records it; the machine "
            "ran other work beside it): "
            + fmt.listing(f"`{n}` {fmt.duration(models[n]['train_seconds'])} "
                          f"({models[n]['epochs']:g} epochs)" for n in order) + ".")
    bench = results_dir / "bench.json"
    made = json.loads(bench.read_text()).get("make_orders") if bench.exists() else None
    if made:
        text += (f" `make orders` then ranks all {fmt.count(made['images'])} images in "
                 f"{fmt.duration(made['seconds'])} ({made['processes']} processes, "
                 f"{fmt.num(made['orders_per_s'], 0)} images per second; `make bench`).")
    return text


def with_block(text: str, block: str, name: str, begin: str = BEGIN, end: str = END) -> str:
    """``text`` with what lies between its ``begin`` and ``end`` lines replaced by ``block`` (the
    run times' markers unless told; ``tools/findings_text.py`` passes its own)."""
    if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
        raise ValueError(f"{name} must hold one {begin} line and, after it, one {end} line")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{block}\n{end}{tail}"


def rewrite_blocks(root: Path, files: tuple[str, ...], block: str, begin: str = BEGIN,
                   end: str = END, check: bool = False) -> list[str]:
    """Put ``block`` between the markers of each of ``files`` (paths from ``root``),
    writing only those that change, or none with ``check``; returns the files whose block was
    stale. Both generated blocks, the run times and the findings box, go in this way."""
    stale = []
    for rel in files:
        path = root / rel
        text = path.read_text()
        new = with_block(text, block, rel, begin, end)
        if new != text:
            stale.append(rel)
            if not check:
                path.write_text(new)
    return stale


def report(stale: list[str], check: bool, what: str, source: str, command: str) -> int:
    """What :func:`rewrite_blocks` did, said once for both text tools: with ``check``, exit 1
    naming the stale files (``what`` in them differs from ``source``: run ``command``)."""
    if check and stale:
        print(f"{what} in {', '.join(stale)} differ from {source}: run {command}", file=sys.stderr)
        return 1
    print(f"{'stale' if check else 'rewrote'}: {', '.join(stale)}" if stale else f"{what} up to date")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true",
                        help="compare only; exit 1 if a file's block is stale")
    parser.add_argument("--results", default=str(ROOT / "book" / "results"),
                        help="where runtimes-<profile>.json are")
    args = parser.parse_args()
    results = Path(args.results).resolve()
    stale = rewrite_blocks(ROOT, FILES, render(results), check=args.check)
    stale += rewrite_blocks(ROOT, PRETRAIN_FILES, render_pretrain(results), PRETRAIN_BEGIN,
                            PRETRAIN_END, check=args.check)
    return report(sorted(set(stale)), args.check, "run times",
                  "book/results/runtimes-*.json, pretrained.json and bench.json",
                  "python tools/runtimes_text.py")


if __name__ == "__main__":
    sys.exit(main())
