"""The results file each chapter writes (``book/results/<chapter>.json``), read by the report.

Shape (see DESIGN.md)::

    {"chapter": "01_entropy", "profile": "cpu", "device": "cpu", "commit": "<sha>",
     "seeds": [0], "claims": {"eq1.order_invariant": {"paper": ..., "ours": {...},
     "verdict": "...", "why": "...", "section": "ch1-eq1"}}, "metrics": {...}}

Claim ids name the paper's table, figure or equation first. ``section`` (optional) is the label
of the chapter section that shows the claim, a MyST target ``(ch1-eq1)=`` above its heading; the
report links to it. Files are written atomically.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .data import project_root
from .io import atomic_write_json

__all__ = ["VERDICTS", "summary", "claim", "direction_verdict", "git_commit", "write_results"]

#: The verdicts a claim can have, from agreeing with the paper to not testable at this scale.
VERDICTS = ("reproduced", "partly", "not reproduced", "not testable")
_LABEL = re.compile(r"[a-z0-9][a-z0-9_.-]*")


def summary(values: Iterable[float] | float) -> dict[str, float | int]:
    """Mean, sample standard deviation (0 for one value) and count of a set of measurements."""
    v = np.atleast_1d(np.asarray(values, dtype=float))
    if v.size == 0:
        raise ValueError("summary of no values")
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0, "n": int(v.size)}


def claim(paper: Any, ours: dict | float, verdict: str, why: str, section: str | None = None) -> dict[str, Any]:
    """One row of the reproducibility report: the paper's value, ours, a verdict and why.

    Args:
        paper: the paper's number, or a sentence when it states no number.
        ours: our measurement: a dict, or values summarised with :func:`summary`.
        verdict: one of :data:`VERDICTS`.
        why: one sentence saying why the verdict.
        section: the label of the section that shows the claim (a MyST target such as
            ``ch1-eq1``, written ``(ch1-eq1)=`` above the heading); stored only when given.

    Example:
        >>> claim(4.267, [4.1, 4.3], "partly", "lower, not significant.", section="ch2-table1")["section"]
        'ch2-table1'
    """
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
    if not why or not why.strip():
        raise ValueError("a claim needs a one-sentence reason")
    row = {"paper": paper, "ours": ours if isinstance(ours, dict) else summary(ours),
           "verdict": verdict, "why": why.strip()}
    if section is not None:
        if not isinstance(section, str) or not _LABEL.fullmatch(section):
            raise ValueError(f"section must be a label of lower-case letters, digits, '-', '_' or '.', got {section!r}")
        row["section"] = section
    return row


def direction_verdict(a: Iterable[float], b: Iterable[float], expect: str, alpha: float = 0.05) -> tuple[str, float]:
    """Does ``a`` come out ``expect`` ("lower" or "higher") than ``b``, across seeds?

    Welch's t-test on the two sets of per-seed values: ``"reproduced"`` when the difference has
    the expected sign and p < alpha, ``"partly"`` when the sign is right but p >= alpha, ``"not
    reproduced"`` when the sign is wrong. Returns (verdict, p).
    """
    from scipy.stats import ttest_ind

    if expect not in ("lower", "higher"):
        raise ValueError(f"expect must be 'lower' or 'higher', got {expect!r}")
    a, b = np.asarray(list(a), float), np.asarray(list(b), float)
    right_sign = a.mean() < b.mean() if expect == "lower" else a.mean() > b.mean()
    p = float(ttest_ind(a, b, equal_var=False).pvalue) if min(a.size, b.size) > 1 else float("nan")
    if not right_sign:
        return "not reproduced", p
    return ("reproduced" if p < alpha else "partly"), p


def git_commit(cwd: str | Path | None = None) -> str:
    """The current commit, with ``-dirty`` when tracked files outside ``book/`` have changes (the
    executed notebooks and results there are outputs, rewritten by every run), or ``"unknown"``."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)book"],
                               cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _plain(obj: Any) -> Any:
    """Numbers from numpy / torch as Python floats and ints, recursively."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return obj


def write_results(results_dir: str | Path, chapter: str, *, profile: str, device: str,
                  seeds: list[int], claims: dict[str, dict], metrics: dict[str, Any]) -> Path:
    """Write ``<results_dir>/<chapter>.json`` atomically and return its path."""
    for cid, c in claims.items():
        if not {"paper", "ours", "verdict", "why"} <= set(c) <= {"paper", "ours", "verdict", "why", "section"}:
            raise ValueError(f"claim {cid!r} must be made with copkit.results.claim()")
    payload = {
        "chapter": chapter,
        "profile": profile,
        "device": str(device),
        "commit": git_commit(project_root()),
        "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seeds": list(seeds),
        "claims": _plain(claims),
        "metrics": _plain(metrics),
    }
    return atomic_write_json(Path(results_dir) / f"{chapter}.json", payload)
