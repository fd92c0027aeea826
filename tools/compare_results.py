"""Compare two folders of results files (``<chapter>.json``) value by value.

For refactors that must not change a number: run the chapters before and after (same profile,
fresh data folders) and compare. Numbers are equal when within ``--rtol``/``--atol`` (float
round-off); strings must match exactly unless ``--ignore-text``; keys that hold times, dates and
commits are skipped (also any key ending in ``_s`` or ``_seconds``), and so are measured speeds
(``--skip`` adds more key names).

    python tools/compare_results.py before/results after/results --ignore-text

Prints each difference as ``chapter: path: before -> after`` and exits 1 if there is any.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Iterator

#: keys whose values change from run to run by nature: clocks, commits, measured speeds
SKIP = {"written", "commit", "seconds", "minutes", "wall_s", "train_seconds", "images_per_s",
        "images_per_s_full", "images_per_s_22", "speedup", "measured_speedup", "time_ratio",
        "order_images_per_s", "steps_per_s"}


def diff(a: Any, b: Any, path: str, rtol: float, atol: float, skip: set[str],
         text: bool) -> Iterator[str]:
    """Every place where ``a`` and ``b`` differ, as 'path: a -> b'."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k in skip or k.endswith(("_seconds", "_s")):
                continue
            if k not in a or k not in b:
                was, now = ("missing" if k not in d else "present" for d in (a, b))
                yield f"{path}/{k}: {was} -> {now}"
                continue
            yield from diff(a[k], b[k], f"{path}/{k}", rtol, atol, skip, text)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            yield f"{path}: length {len(a)} -> {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            yield from diff(x, y, f"{path}[{i}]", rtol, atol, skip, text)
    elif isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        if (not (math.isclose(a, b, rel_tol=rtol, abs_tol=atol)
                 or (math.isnan(a) and math.isnan(b)))):
            yield f"{path}: {a!r} -> {b!r}"
    elif isinstance(a, str) and isinstance(b, str) and not text:
        return
    elif a != b:
        yield f"{path}: {a!r} -> {b!r}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    ap.add_argument("--rtol", type=float, default=1e-6)
    ap.add_argument("--atol", type=float, default=1e-9)
    ap.add_argument("--ignore-text", action="store_true", help="compare numbers only, not prose")
    ap.add_argument("--skip", nargs="*", default=[], help="more key names to skip")
    args = ap.parse_args(argv)
    skip = SKIP | set(args.skip)
    names = sorted({p.name for p in args.before.glob("[0-9]*.json")}
                   | {p.name for p in args.after.glob("[0-9]*.json")})
    found = 0
    for name in names:
        fa, fb = args.before / name, args.after / name
        if not fa.exists() or not fb.exists():
            print(f"{name}: only in {'after' if not fa.exists() else 'before'}")
            found += 1
            continue
        for line in diff(json.loads(fa.read_text()), json.loads(fb.read_text()), "", args.rtol,
                         args.atol, skip, not args.ignore_text):
            print(f"{name}: {line}")
            found += 1
    print(f"{len(names)} results files compared; {found} difference(s)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
