"""The results file each chapter writes (``book/results/<chapter>.json``), read by the report, and
the few ways the book writes numbers and claims as text.

A results file holds, for one chapter run::

    {"chapter": "01_entropy",        # the chapter's file name without .py
     "profile": "cpu",               # the profile it ran under (copkit.profiles)
     "device": "cpu", "commit": "<sha>", "written": "<time>",
     "seeds": [0],                   # the seeds its measurements span
     "claims": {"eq1.order_invariant": {"paper": ..., "ours": {...}, "verdict": "...",
                "why": "...", "section": "ch1-eq1", "headline": true}},
     "metrics": {...}}               # everything else the chapter measured, for the record

A claim is made once, with :func:`claim`: the paper's value, ours (usually a :func:`summary` over
seeds), one of :data:`VERDICTS` and a sentence saying why, written from the measured numbers. The
chapter's closing prose (:func:`in_words`), the results file and the report page all read that one
object. Claim ids name the paper's table, figure or equation first. ``section`` (optional) is the
label of the chapter section that shows the claim, a MyST target ``(ch1-eq1)=`` above its heading;
the report links to it. ``headline`` (optional) marks the claims the report's summary leads with.
Files are written atomically.

Text helpers: :func:`mean_sd` (one way to write "mean ± sd"), :func:`markdown_table` (a table
for ``IPython.display.Markdown``), :func:`brief` (any results value in a few characters), and
:func:`claims_list`, :func:`in_words`, :func:`verdict_counts` for claims.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from scipy.stats import ttest_ind

from .data import project_root
from .io import atomic_write_json

__all__ = ["VERDICTS", "summary", "claim", "direction_verdict", "tolerance_verdict", "welch_text", "git_commit", "write_results",
           "read_results", "mean_sd", "markdown_table", "brief", "claims_list", "VERDICT_WORDS", "in_words", "verdict_counts",
           "headlines", "section_labels"]

#: The verdicts a claim can have, from agreeing with the paper to not testable at this scale.
VERDICTS = ("reproduced", "partly", "not reproduced", "not testable")
_LABEL = re.compile(r"[a-z0-9][a-z0-9_.-]*")


def summary(values: Iterable[float] | float) -> dict[str, float | int]:
    """Mean, sample standard deviation (0 for one value) and count of a set of measurements."""
    v = np.atleast_1d(np.asarray(values, dtype=float))
    if v.size == 0:
        raise ValueError("summary of no values")
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0, "n": int(v.size)}


def claim(paper: Any, ours: dict | float, verdict: str, why: str, section: str | None = None,
          headline: bool = False) -> dict[str, Any]:
    """One row of the reproducibility report: the paper's value, ours, a verdict and why.

    Args:
        paper: the paper's number, or a sentence when it states no number.
        ours: our measurement: a dict, or values summarised with :func:`summary`.
        verdict: one of :data:`VERDICTS`.
        why: one sentence saying why the verdict.
        section: the label of the section that shows the claim (a MyST target such as
            ``ch1-eq1``, written ``(ch1-eq1)=`` above the heading); stored only when given.
        headline: one of the claims that matter most, which the report's summary leads with;
            stored only when true.

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
    if headline:
        row["headline"] = True
    return row


def direction_verdict(a: Iterable[float], b: Iterable[float], expect: str, alpha: float = 0.05) -> tuple[str, float]:
    """Does ``a`` come out ``expect`` ("lower" or "higher") than ``b``, across seeds?

    Welch's t-test on the two sets of per-seed values: ``"reproduced"`` when the difference has
    the expected sign and p < alpha, ``"partly"`` when the sign is right but p >= alpha, ``"not
    reproduced"`` when the sign is wrong. Returns (verdict, p).
    """
    if expect not in ("lower", "higher"):
        raise ValueError(f"expect must be 'lower' or 'higher', got {expect!r}")
    a, b = np.asarray(list(a), float), np.asarray(list(b), float)
    right_sign = a.mean() < b.mean() if expect == "lower" else a.mean() > b.mean()
    p = float(ttest_ind(a, b, equal_var=False).pvalue) if min(a.size, b.size) > 1 else float("nan")
    if not right_sign:
        return "not reproduced", p
    return ("reproduced" if p < alpha else "partly"), p


def tolerance_verdict(diff: float, tight: float, loose: float) -> str:
    """``"reproduced"`` when ``|diff| <= tight``, ``"partly"`` when ``|diff| <= loose``, else
    ``"not reproduced"``: for claims that state a number rather than a direction.

    >>> [tolerance_verdict(d, 0.07, 0.2) for d in (0.05, -0.1, 0.3)]
    ['reproduced', 'partly', 'not reproduced']
    """
    return "reproduced" if abs(diff) <= tight else "partly" if abs(diff) <= loose else "not reproduced"


def welch_text(p: float | None, n: int) -> str:
    """A Welch p-value over ``n`` seeds as a claim says it: ``"Welch p = 0.012 over 3 seeds"``, or
    ``"one seed, no test"`` when there is no p (None or NaN). A p that two significant digits would
    round to 0.05 gets three, so that the text never shows 0.05 for a p just on either side of it.

    >>> welch_text(0.01234, 3), welch_text(0.0496, 3), welch_text(float("nan"), 1)
    ('Welch p = 0.012 over 3 seeds', 'Welch p = 0.0496 over 3 seeds', 'one seed, no test')
    """
    if p is None or not np.isfinite(p):
        return "one seed, no test"
    shown = f"{p:.2g}"
    return f"Welch p = {shown if shown != '0.05' else f'{p:.3g}'} over {n} seeds"


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
        if not {"paper", "ours", "verdict", "why"} <= set(c) <= {"paper", "ours", "verdict", "why", "section", "headline"}:
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


def read_results(results_dir: str | Path) -> dict[str, dict[str, Any]]:
    """Every chapter's results file in ``results_dir`` (``NN_name.json``), by chapter, in order."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(Path(results_dir).glob("[0-9][0-9]_*.json"))}


# ---------------------------------------------------------------------------------------------
# Numbers and claims as text


def mean_sd(values: Iterable[float] | Mapping[str, Any] | float, digits: int = 1, *, significant: bool = False,
            show_n: bool = False) -> str:
    """Measurements, or a :func:`summary` dict, as "mean ± sd"; the sd is the sample one (0 for one value).

    ``digits`` decimals for both, or with ``significant`` that many significant digits for the mean
    and two for the sd; ``show_n`` adds the count.

    >>> mean_sd([70.0, 71.0, 72.5])
    '71.2 ± 1.3'
    >>> mean_sd({"mean": 0.123456, "std": 0.0123, "n": 4}, 4, significant=True, show_n=True)
    '0.1235 ± 0.012 (n=4)'
    >>> mean_sd(3.0, 2)
    '3.00 ± 0.00'
    """
    s = dict(values) if isinstance(values, Mapping) else summary(values)
    if significant:
        text = f"{s['mean']:.{digits}g} ± {s['std']:.2g}"
    else:
        text = f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"
    return text + (f" (n={s['n']})" if show_n else "")


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table, for ``IPython.display.Markdown``: one header row, then ``rows``.

    Cells are written with ``str()``; a ``|`` inside a cell is escaped so that it cannot split the
    cell. Every row must have as many cells as the header.

    >>> print(markdown_table(["model", "AuC"], [["CViT", "72.2"], ["a|b", 1]]))
    | model | AuC |
    |---|---|
    | CViT | 72.2 |
    | a\\|b | 1 |
    """
    header = [str(h) for h in header]
    lines = ["| " + " | ".join(h.replace("|", "\\|") for h in header) + " |", "|" + "---|" * len(header)]
    for i, row in enumerate(rows):
        cells = [str(c).replace("|", "\\|") for c in row]
        if len(cells) != len(header):
            raise ValueError(f"row {i} has {len(cells)} cells, the header {len(header)}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def brief(value: Any) -> str:
    """A results value in a few characters: ``mean ± sd (n=...)`` for a summary, four significant
    digits for a float, the first four items of a dict or list, the rest as text.

    >>> brief({"mean": 71.234, "std": 1.25, "n": 3})
    '71.23 ± 1.2 (n=3)'
    >>> brief({"a": 0.5, "b": [1, 2, 3, 4, 5]})
    'a: 0.5; b: [1, 2, 3, 4, …]'
    """
    if isinstance(value, dict) and {"mean", "std", "n"} <= set(value):
        if value["mean"] is None:
            return f"none (n={value['n']})"
        return mean_sd(value, 4, significant=True, show_n=True)
    if isinstance(value, dict):
        items = list(value.items())
        return "; ".join(f"{k}: {brief(v)}" for k, v in items[:4]) + ("; …" if len(items) > 4 else "")
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(brief(v) for v in value[:4]) + (", …" if len(value) > 4 else "") + "]"
    return str(value)


def claims_list(claims: Mapping[str, Mapping[str, Any]]) -> str:
    """The claims as a Markdown list, one line each: id, verdict, why.

    >>> print(claims_list({"fig5.x": claim(1, 2.0, "partly", "Close.")}))
    - **fig5.x** (partly): Close.
    """
    return "\n".join(f"- **{cid}** ({c['verdict']}): {c['why']}" for cid, c in claims.items())


#: How :func:`in_words` introduces each verdict.
VERDICT_WORDS = {
    "reproduced": "**Agrees** (the paper's direction beyond the spread over seeds, or within the stated tolerance).",
    "partly": "**Partly** (the paper's direction but not significant, within the looser tolerance only, or only part "
              "of the claim).",
    "not reproduced": "**Disagrees.**",
    "not testable": "**Not testable at this scale.**",
}


def in_words(claims: Mapping[str, Mapping[str, Any]], links: bool = True) -> str:
    """The closing prose of a chapter: its claims grouped by verdict, each said by its own ``why``.

    For each verdict that has claims, in the order of :data:`VERDICTS`, a line saying what the
    verdict means (:data:`VERDICT_WORDS`), then one list item per claim. Nothing is stated twice:
    the sentences are the claims' reasons, as the results file and the report have them. With
    ``links``, a claim that names its ``section`` ends with a MyST reference to it (which shows the
    section's title).

    >>> print(in_words({"a": claim(1, 2.0, "partly", "A is close."), "b": claim(1, 1.0, "reproduced", "B holds.")},
    ...                links=False))
    **Agrees** (the paper's direction beyond the spread over seeds, or within the stated tolerance).
    <BLANKLINE>
    - B holds.
    <BLANKLINE>
    **Partly** (the paper's direction but not significant, within the looser tolerance only, or only part of the claim).
    <BLANKLINE>
    - A is close.
    """
    groups = []
    for verdict in VERDICTS:
        said = [c["why"] + (f" (see {{ref}}`{c['section']}`)" if links and c.get("section") else "")
                for c in claims.values() if c["verdict"] == verdict]
        if said:
            groups.append(VERDICT_WORDS[verdict] + "\n\n" + "\n".join(f"- {w}" for w in said))
    return "\n\n".join(groups)


def verdict_counts(results: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """How many claims of each verdict every chapter's results file holds: by chapter, a count for
    every verdict of :data:`VERDICTS` (0 when none), in that order."""
    counts = {}
    for chapter, r in results.items():
        tally = Counter(cl["verdict"] for cl in r["claims"].values())
        counts[chapter] = {v: tally[v] for v in VERDICTS}
    return counts


def headlines(results: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, str, dict[str, Any]]]:
    """The claims marked ``headline`` in the results files, as (chapter, claim id, claim), in the
    chapters' order."""
    return [(chapter, cid, c) for chapter, r in results.items() for cid, c in r["claims"].items()
            if c.get("headline")]


def section_labels(notebook: str | Path) -> set[str]:
    """The section labels, ``(label)=`` lines, of a notebook's markdown cells (none if it is missing):
    the targets a claim's ``section`` may name."""
    path = Path(notebook)
    if not path.exists():
        return set()
    cells = json.loads(path.read_text())["cells"]
    text = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    return set(re.findall(r"^\(([^)\s]+)\)=\s*$", text, flags=re.M))
