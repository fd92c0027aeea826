"""The results file each chapter writes (``book/results/<chapter>.json``), read by the report, and
the few ways the book writes numbers and claims as text.

A results file holds, for one chapter run::

    {"chapter": "01_entropy",        # the chapter's file name without .py
     "profile": "cpu",               # the profile it ran under (copkit.profiles)
     "device": "cpu", "commit": "<sha>", "written": "<time>",
     "seeds": [0],                   # the seeds its measurements span
     "claims": {"table1.x": {"paper": ..., "ours": {...}, "verdict": "...", "why": "...",
                             "test": {...},  # tested claims: copkit.stats.claim_row, filled
                             "section": "ch1-eq1", "headline": true}},
     "metrics": {...}}               # everything else the chapter measured, for the record

A claim is made once, and one of three ways:

- :func:`tested`: a claim that rests on seeds or samples. It carries its test
  (:func:`copkit.stats.claim_row`: test, raw ``p``, ``effect`` with its 95% interval, the expected
  direction, a partial criterion stated before measuring) and gets its verdict from
  :func:`decide`, which applies Holm's correction over every tested claim of the book
  (:func:`copkit.stats.fill`): "reproduced" or "not reproduced" only when significant after it,
  "inconclusive" otherwise, "partly" only from the stated partial criterion;
- :func:`alias`: the same test as another claim of the chapter, counted once;
- :func:`claim`: a claim with no sampling variation: "not testable", or decided by an exact
  computation (``exact=True``: an identity checked numerically, a count), whose verdict
  :func:`exact_verdict` reads off criteria stated with the claim (:class:`copkit.stats.Partial`).

:func:`paired_claim` is the common tested claim "A comes out higher (lower) than B, paired by
seed"; :func:`at_ratio` reads each seed's value at one mask ratio off a set of curves.

``why`` is one sentence written from the measured numbers; the chapter's closing prose
(:func:`in_words`), the results file and the report page all read that one object. Claim ids
name the paper's table, figure or equation first. ``section`` (optional) is the label of the
chapter section that shows the claim, a MyST target ``(ch1-eq1)=`` above its heading; the report
links to it. ``headline`` (optional) marks the claims the report's summary leads with. Files are
written atomically.

The committed book holds one profile's results (:func:`book_profile`, ``cpu``). A chapter run at
another profile with the default ``results_dir`` (``../book/results``, e.g. in JupyterLab) writes
its file beside the runner's output for that profile instead, ``.scratch/book/<profile>/results/``
(:func:`results_folder`), so the book is never overwritten by accident; ``tools/run_chapters.py
--out book`` sets ``COPKIT_WRITE_BOOK=1`` to write there on purpose.

Text helpers: :func:`mean_sd` (one way to write "mean ± sd"; :func:`finite_mean_sd` of the
finite values only, :func:`with_paper` with the paper's number beside), :func:`markdown_table` (a
table
for ``IPython.display.Markdown``), :func:`brief` (any results value in a few characters),
:func:`readable` (a results value as a reader reads it: keys as words, shares as percentages,
FIDs to one decimal), :func:`test_text` (a test's outcome in words), and :func:`in_words`,
:func:`verdict_counts` for claims.

The whole book: :func:`book_results` decides every file's tests together, over one Holm family
(:func:`family_size`), which the report and the introduction's box both read; :func:`run_flags`
says what the report flags about each chapter's run (another commit, uncommitted changes, a later
run), with :func:`commit_text`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from . import fmt, stats
from .data import project_root
from .io import atomic_write_json

__all__ = ["VERDICTS", "BOOK_PROFILE", "book_profile", "results_folder", "summary", "claim",
           "tested", "share_of_paper", "alias", "decide", "book_verdicts", "test_text", "git_commit",
           "write_results", "read_results", "unsupported_numbers", "mean_sd", "markdown_table", "brief",
           "VERDICT_WORDS", "in_words", "verdict_counts", "headlines", "section_labels",
           "PROFILE_ORDER", "RUNTIME_READERS", "read_runtimes", "runtimes_table", "runtimes_hosts",
           "TABLE_CLASSES", "at_ratio", "paired_claim", "exact_verdict", "with_paper",
           "finite_mean_sd", "run_flags", "RUN_GAP_S", "book_results", "family_size",
           "effect_scale", "readable", "key_words", "commit_text", "BASE_MODEL_TARGETS", "base_model_numbers"]

#: The verdicts a claim can have, from agreeing with the paper to not testable at this scale
#: (:data:`copkit.stats.VERDICTS`).
VERDICTS = stats.VERDICTS
_KEYS = {"paper", "ours", "verdict", "why", "section", "headline", "test", "exact"}
_LABEL = re.compile(r"[a-z0-9][a-z0-9_.-]*")


def summary(values: Iterable[float] | float) -> dict[str, float | int]:
    """Mean, sample standard deviation (0 for one value) and count of a set of measurements."""
    v = np.atleast_1d(np.asarray(values, dtype=float))
    if v.size == 0:
        raise ValueError("summary of no values")
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
            "n": int(v.size)}


def at_ratio(curves: Mapping[str, np.ndarray], ratios: Sequence[float], name: str,
             ratio: float) -> np.ndarray:
    """Each seed's value of the curve ``name`` at mask ``ratio``: ``curves[name]`` is (seeds,
    ratios), one row per seed over ``ratios``; ``ratio`` must be one of them (to 1e-9).

    >>> at_ratio({"CViT": np.array([[80.0, 60.0], [82.0, 58.0]])}, [0.0, 0.78], "CViT", 0.78)
    array([60., 58.])
    """
    grid = np.asarray(ratios, dtype=float)
    values = np.asarray(curves[name], dtype=float)
    if values.ndim != 2 or values.shape[1] != grid.size:
        raise ValueError(f"curves[{name!r}] must be (seeds, {grid.size} ratios), got shape "
                         f"{values.shape}")
    hit = np.flatnonzero(np.abs(grid - ratio) < 1e-9)
    if hit.size == 0:
        raise ValueError(f"mask ratio {ratio} is not on the grid {grid.tolist()}")
    return values[:, hit[0]]


def _row(paper: Any, ours: dict | float, verdict: str | None, why: str, section: str | None,
         headline: bool) -> dict[str, Any]:
    if not why or not why.strip():
        raise ValueError("a claim needs a one-sentence reason")
    row = {"paper": paper, "ours": ours if isinstance(ours, dict) else summary(ours),
           "verdict": verdict, "why": why.strip()}
    if section is not None:
        if not isinstance(section, str) or not _LABEL.fullmatch(section):
            raise ValueError("section must be a label of lower-case letters, digits, '-', '_' or "
                             f"'.', got {section!r}")
        row["section"] = section
    if headline:
        row["headline"] = True
    return row


def claim(paper: Any, ours: dict | float, verdict: str, why: str, section: str | None = None,
          headline: bool = False, *, exact: bool = False) -> dict[str, Any]:
    """A claim decided without a statistical test.

    Args:
        paper: the paper's number, or a sentence when it states no number.
        ours: our measurement: a dict, or values summarised with :func:`summary`.
        verdict: "not testable" (the paper leaves it open, or this scale cannot test it); or, with
            ``exact``, "reproduced" / "not reproduced" / "partly" from a computation without
            sampling variation. A claim that rests on seeds or samples is made with :func:`tested`.
        why: one sentence saying why the verdict.
        section: the label of the section that shows the claim (a MyST target such as
            ``ch1-eq1``, written ``(ch1-eq1)=`` above the heading); stored only when given.
        headline: one of the claims that matter most, which the report's summary leads with;
            stored only when true.
        exact: the verdict comes from an exact computation (an identity checked numerically to
            rounding, a property of a finite object), stored as ``"exact": true``.

    Example:
        >>> claim(4.267, [4.1, 4.3], "not testable", "N differs.", section="ch2-table1")["section"]
        'ch2-table1'
    """
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
    if verdict != "not testable" and not exact:
        raise ValueError(f"a {verdict!r} verdict needs a test (copkit.results.tested) or an exact "
                         "computation (exact=True)")
    if verdict == "inconclusive":
        raise ValueError("an exact computation decides; 'inconclusive' comes from a test "
                         "(copkit.results.tested)")
    row = _row(paper, ours, verdict, why, section, headline)
    if exact:
        row["exact"] = True
    return row


def tested(paper: Any, ours: dict | float, record: stats.Record | None, expect: str, why: str, *,
           partial: stats.Partial | None = None, paper_effect: float | None = None,
           smallest: float | None = None, section: str | None = None,
           headline: bool = False) -> dict[str, Any]:
    """A claim that rests on seeds or samples, with its test (a :class:`copkit.stats.Record` from
    :func:`copkit.stats.welch`, :func:`~copkit.stats.paired`, :func:`~copkit.stats.one_sample`
    or :func:`~copkit.stats.equivalence`; None when the data cannot test it), the direction it
    expects of the effect ("lower", "higher", or "equal" for an equivalence record), an optional
    :class:`copkit.stats.Partial` criterion stated before measuring, and the paper's own effect in
    the same units. Its verdict is left to :func:`decide`.

    A directional claim ("lower" or "higher") must state ``smallest``, the smallest effect that
    would matter in the effect's units, before it is measured: an effect whose 95% interval lies
    inside it is "negligible", and "reproduced" needs at least that effect
    (:func:`copkit.stats.verdict`). An "equal" claim states its band in
    :func:`copkit.stats.equivalence` instead.

    >>> from copkit.stats import welch
    >>> c = tested("lower", [1.0, 2.0], welch([1.0, 2.0, 1.5], [3.0, 4.0, 3.5]), "lower",
    ...            "Lower by 2.", smallest=0.5)
    >>> c["verdict"], c["test"]["test"], c["test"]["effect"]
    (None, 'welch t', -2.0)
    """
    if expect in ("lower", "higher") and smallest is None:
        raise ValueError(f"a {expect!r} claim needs smallest=, the smallest effect that would "
                         "matter in the effect's units, stated before measuring (e.g. 0.05 of "
                         "Kendall tau, 1 point of top-1)")
    row = _row(paper, ours, None, why, section, headline)
    row["test"] = stats.claim_row(record, expect=expect, partial=partial, paper_effect=paper_effect,
                                  smallest=smallest)
    return row


def share_of_paper(paper_effect: float, paper_scale: float = 1.0, our_scale: float = 1.0,
                   share: float = 0.25) -> float:
    """A smallest effect that would matter (``tested(..., smallest=...)``), as a share of the
    paper's own effect carried to our scale in proportion: ``share * |paper_effect| * our_scale /
    paper_scale``. With the default, an effect under a quarter of the paper's does not count as
    reproducing it. ``paper_scale`` and ``our_scale`` are what the effect is relative to: the
    baseline's value (an FID, a loss), or the number of mask entries (N - 1) for a sum over them.

    >>> round(share_of_paper(5.928 - 5.997, paper_scale=5.997, our_scale=150.0), 3)  # 1.15% of 150 / 4
    0.431
    """
    for name, v in (("paper_effect", paper_effect), ("paper_scale", paper_scale),
                    ("our_scale", our_scale), ("share", share)):
        if not np.isfinite(v):
            raise ValueError(f"{name} must be a finite number, got {v!r}")
    if paper_effect == 0 or paper_scale <= 0 or our_scale <= 0 or not 0 < share <= 1:
        raise ValueError("share_of_paper needs a non-zero paper effect, positive scales and a "
                         f"share in (0, 1]; got {paper_effect}, {paper_scale}, {our_scale}, {share}")
    return float(share * abs(paper_effect) * our_scale / paper_scale)


def alias(primary: str, paper: Any, ours: dict | float, why: str, section: str | None = None,
          headline: bool = False) -> dict[str, Any]:
    """A claim of the paper that is the same test as the chapter's claim ``primary`` (e.g. "RViT's
    AuC beats ViT's" and "ViT's AuC is below RViT's"): it shares that claim's outcome and is not
    counted again in the book's correction."""
    row = _row(paper, ours, None, why, section, headline)
    row["test"] = stats.claim_row(alias_of=primary)
    return row


tested.__test__ = False  # not a pytest test, though named like one


def paired_claim(paper: Any, a: Iterable[float], b: Iterable[float], expect: str, other: str,
                 why: Callable[[float], str], **kw: Any) -> dict[str, Any]:
    """The claim that ``a`` comes out ``expect`` ("higher" or "lower") than ``b``, one value of
    each per seed, tested paired by seed (:func:`copkit.stats.paired`): ``ours`` is ``a``'s
    :func:`summary` with ``b``'s under the key ``other``, and ``why(d)`` writes the sentence from
    the mean difference ``d`` = mean(a) - mean(b). ``kw`` goes to :func:`tested` (``smallest``,
    which a directional claim must state, ``partial``, ``paper_effect``, ``section``,
    ``headline``).

    >>> c = paired_claim(70.6, [70.0, 71.0, 72.0], [67.0, 67.5, 68.0], "higher", "rvit",
    ...                  lambda d: f"CViT beats RViT by {d:.1f} points.", smallest=1.0)
    >>> c["why"], c["ours"]["rvit"]["mean"], c["test"]["test"]
    ('CViT beats RViT by 3.5 points.', 67.5, 'paired t')
    """
    a, b = np.asarray(list(a), dtype=float), np.asarray(list(b), dtype=float)
    return tested(paper, {**summary(a), other: summary(b)}, stats.paired(a, b), expect,
                  why(float(a.mean() - b.mean())), **kw)


def exact_verdict(full: tuple[stats.Partial, float],
                  partial: tuple[stats.Partial, float] | None = None) -> str:
    """The verdict of a claim decided by an exact computation (a FLOP count, one timing), from
    criteria stated with it before measuring: "reproduced" when the ``full`` criterion holds on
    its value, else "partly" when the ``partial`` one holds on its own value, else "not
    reproduced". Each is a (:class:`copkit.stats.Partial`, value) pair; a number without sampling
    variation is its own interval, so ``Partial.ci_within`` and ``Partial.ci_beyond`` read it as
    the interval [value, value]. Pass the result to :func:`claim` with ``exact=True``.

    >>> from copkit.stats import Partial
    >>> exact_verdict((Partial.ci_within(94.16, 96.16, "the whole forward saves 95.16% +- 1"), 78.0),
    ...               (Partial.ci_within(94.16, 96.16, "the attention term saves 95.16% +- 1"), 95.0))
    'partly'
    """  # noqa: E501 - a doctest's call is one line
    def holds(criterion: stats.Partial, value: float) -> bool:
        if not isinstance(criterion, stats.Partial):
            raise TypeError(f"a criterion is a copkit.stats.Partial, got {type(criterion).__name__}")
        v = float(value)
        if not np.isfinite(v):
            raise ValueError(f"criterion {criterion.name!r}: the value is not finite ({v})")
        return criterion({"ci": (v, v)})

    if holds(*full):
        return "reproduced"
    if partial is not None and holds(*partial):
        return "partly"
    return "not reproduced"


def _family(results: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every tested claim of the chapters' results, keyed ``chapter/claim``, aliases pointing the
    same way."""
    rows = {}
    for chapter, r in results.items():
        for cid, c in r["claims"].items():
            if c.get("test") is None:
                continue
            row = dict(c["test"])
            if row.get("alias_of") is not None:
                row = {"alias_of": f"{chapter}/{row['alias_of']}"}
            rows[f"{chapter}/{cid}"] = row
    return rows


def book_verdicts(results: Mapping[str, Mapping[str, Any]],
                  alpha: float = 0.05) -> dict[str, dict[str, dict]]:
    """The tests of every tested claim of the book, filled by :func:`copkit.stats.fill` over them
    all (Holm's ``p_holm``, the ``family`` size, ``mde_family`` and the ``verdict``): by chapter,
    by claim id. What the report shows, whatever the chapters wrote when they ran."""
    filled = stats.fill(_family(results), alpha)
    out: dict[str, dict[str, dict]] = {chapter: {} for chapter in results}
    for key, row in filled.items():
        chapter, cid = key.split("/", 1)
        if row.get("alias_of"):
            row = dict(row, alias_of=row["alias_of"].split("/", 1)[1])
        out[chapter][cid] = row
    return out


def book_results(results: Mapping[str, Mapping[str, Any]], alpha: float = 0.05
                 ) -> tuple[dict[str, dict[str, Any]], dict[tuple[str, str], str]]:
    """The results files as the book decides them: a copy of ``results`` whose tested claims
    carry the tests and verdicts of :func:`book_verdicts` over all of them (one Holm family, one
    ``family`` size), and the verdicts the chapters had written where they differ, by (chapter,
    claim id). Each chapter decided its claims against the other files as they were when it ran;
    a file written later changes the family, so the raw files can disagree on its size. Every
    page that speaks of the whole book (the report, the introduction's box) reads this, so that
    they cannot state two families or two verdicts for one claim."""
    book = book_verdicts(results, alpha)
    out: dict[str, dict[str, Any]] = {}
    ran_with: dict[tuple[str, str], str] = {}
    for chapter, r in results.items():
        claims = {}
        for cid, c in r["claims"].items():
            c = dict(c)
            row = book[chapter].get(cid)
            if row is not None:
                if c.get("verdict") != row["verdict"]:
                    ran_with[chapter, cid] = c.get("verdict")
                c["test"], c["verdict"] = row, row["verdict"]
            claims[cid] = c
        out[chapter] = {**r, "claims": claims}
    return out, ran_with


def family_size(results: Mapping[str, Mapping[str, Any]]) -> int | None:
    """How many tested claims Holm's correction counted for the tests in ``results`` (their
    ``family``); None when none carries one. Results whose tests were corrected over different
    families (raw files of chapters run at different times) are an error: decide them together
    with :func:`book_results` first, so that no page prints a size the others do not.

    >>> family_size({"01_a": {"claims": {"x": {"test": {"family": 3}}, "y": {}}}})
    3
    """
    sizes = {c["test"]["family"] for r in results.values() for c in r["claims"].values()
             if c.get("test") and c["test"].get("family")}
    if len(sizes) > 1:
        raise ValueError(f"the tests were corrected over families of {sorted(sizes)} claims: "
                         "decide them over the book together (copkit.results.book_results)")
    return sizes.pop() if sizes else None


def effect_scale(test: Mapping[str, Any] | None) -> float | None:
    """The magnitude of the numbers a test's effect stands among, against which float noise is
    told from an effect (:func:`copkit.fmt.snap`): the largest of its effect, interval ends, the
    paper's effect, its margin and its smallest effect that matters; None when it has none.

    >>> effect_scale({"effect": -1.1e-16, "ci": [None, None], "margin": 0.07})
    0.07
    """
    if not test:
        return None
    return _magnitude(test.get("effect"), *(test.get("ci") or ()), test.get("paper_effect"),
                      test.get("margin"), test.get("smallest"))


def _magnitude(*values: Any) -> float | None:
    """The largest ``|v|`` of the finite numbers among ``values``; None when there is none."""
    finite = [abs(float(v)) for v in values
              if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)]
    return max(finite) if finite else None


def decide(claims: Mapping[str, Mapping[str, Any]], chapter: str, results_dir: str | Path,
           alpha: float = 0.05) -> dict[str, dict[str, Any]]:
    """The chapter's claims with the verdicts of their tests, decided over the whole book: the
    family for Holm's correction is these claims and the tested claims of the other chapters'
    results files in ``results_dir`` (as they last ran). A chapter run alone is thus judged as in
    the book; the report recomputes the verdicts from all the files together, and says where a
    chapter's differ (when another chapter's numbers changed after it ran)."""
    others = {ch: r for ch, r in read_results(results_dir).items() if ch != chapter}
    filled = book_verdicts({**others, chapter: {"claims": claims}}, alpha)[chapter]
    out = {}
    for cid, c in claims.items():
        c = dict(c)
        if cid in filled:
            c["test"], c["verdict"] = filled[cid], filled[cid]["verdict"]
        out[cid] = c
    return out


def _p(p: float | None) -> str:
    """"= p" as :func:`copkit.fmt.pvalue` writes it ("< 1e-6" for a tiny p), "= none" where the test
    gave none."""
    shown = "none" if p is None or not np.isfinite(p) else fmt.pvalue(p)
    return shown if shown.startswith("<") else "= " + shown


def test_text(row: Mapping[str, Any] | stats.Record, digits: int = 2) -> str:
    """A test's outcome as a claim says it: the test, the effect with its 95% interval, the number
    of replicates and p (and Holm's p with the family size, once :func:`decide` filled them).
    Numbers follow :mod:`copkit.fmt`: the effect and interval with ``digits`` decimals (more where
    the interval's ends would print the same: :func:`copkit.fmt.interval_decimals`), p-values
    by :func:`copkit.fmt.pvalue`, the detectable and the paper's effects to ``digits``
    significant figures (never fewer than their integer digits).

    >>> from copkit.stats import paired
    >>> test_text(paired([1.0, 2.0, 3.0], [0.5, 1.1, 2.6]))
    'paired t over 3 seeds: +0.60 (95% interval -0.06 to +1.26), p = 0.059'
    >>> test_text(paired([1.0], [0.5]))
    'paired t over 1 seed: +0.50 (no interval), p = none'
    """
    r = row.as_dict() if isinstance(row, stats.Record) else row
    if r.get("test") is None:
        return "no test"
    n = r["n"]
    over = (f"{n[0]} and {n[1]} {r['unit']}" if isinstance(n, (list, tuple))
            else fmt.counted(n, r["unit"]))
    lo, hi = r["ci"] or (None, None)
    places = fmt.interval_decimals(lo, hi, digits)  # never "+0.02 to +0.02"
    interval = ("no interval" if lo is None or hi is None
                else f"95% interval {fmt.signed(lo, places)} to {fmt.signed(hi, places)}")
    text = f"{r['test']} over {over}: {fmt.signed(r['effect'], places)} ({interval}), p {_p(r['p'])}"
    if r.get("p_holm") is not None:
        text += f", Holm p {_p(r['p_holm'])} over the book's {r['family']} tested claims"
    if r.get("smallest") is not None:
        text += f"; the smallest effect that matters was set at {fmt.sig(r['smallest'], digits)}"
    mde = r.get("mde_family") if r.get("mde_family") is not None else r.get("mde")
    if mde is not None and r.get("paper_effect") is not None:
        shown = fmt.sig(mde, digits, scale=effect_scale(r))
        text += (f"; the smallest effect it could detect with 80% power is {shown}, "
                 f"the paper's is {fmt.signed(r['paper_effect'], digits=digits)}")
    return text


#: How :func:`git_commit` marks a commit whose tree had uncommitted changes.
DIRTY = "-dirty"


def git_commit(cwd: str | Path | None = None) -> str:
    """The current commit, with ``-dirty`` when tracked files outside ``book/`` have changes (the
    executed notebooks and results there are outputs, rewritten by every run), or ``"unknown"``."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)book"],
                               cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()
        return sha + (DIRTY if dirty else "")
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


_NUMBER = re.compile(r"(?<![\w.])[-+\u2212]?\d+(?:,\d{3})*(?:\.\d+)?(?:e[-+]?\d+)?%?")


def _numbers(obj: Any, out: list[float]) -> None:
    if isinstance(obj, bool) or obj is None:
        return
    if isinstance(obj, (int, float, np.integer, np.floating)):
        out.append(float(obj))
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            if k != "why":
                # keys such as "0.5" are numbers too
                _numbers(_float(k) if isinstance(k, str) else k, out)
                _numbers(v, out)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _numbers(v, out)


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def unsupported_numbers(text: str, data: Any) -> list[str]:
    """The numbers in ``text`` that no number in ``data`` (a results payload, its ``why``
    sentences left out) rounds to as written: ``0.93`` is supported by 0.9258, ``66%`` by 0.6629
    (or by 66.3), ``-5.7`` by 5.73 (a difference said with its sign), ``34%`` by 0.66 (the rest of a
    share); ``1.4e-15`` within 5%; a bound, ``< 1e-6`` (how :func:`copkit.fmt.pvalue` writes a tiny
    p), by any number below it. What a chapter says in a claim must come from what it measured
    and wrote down, never typed in; an empty list means it did.

    >>> unsupported_numbers("66% of the top 22% patches, against 0.63 (p = 0.012)",
    ...                     {"a": 0.6629, "b": [0.22, 0.631], "p": 0.0121})
    []
    >>> unsupported_numbers("a gain of 4.2 points", {"gain": 3.9})
    ['4.2']
    >>> unsupported_numbers("p < 1e-6, Holm p < 1e-6", {"p": 1.8e-69, "p_holm": 4.7e-68}), unsupported_numbers("p < 1e-6", {"p": 0.2})
    ([], ['1e-6'])
    """
    values: list[float] = []
    _numbers(data, values)
    v = np.array(values)
    # as written, in %, the rest, the rest in %
    have = np.abs(np.concatenate([v, 100 * v, 1 - v, 100 * (1 - v)]))
    bad = []
    for m in _NUMBER.finditer(text):
        token = m.group(0).replace(",", "").replace("\u2212", "-").rstrip("%")
        x = abs(float(token))
        mantissa = token.split("e")[0]
        decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
        tol = x * 0.05 if "e" in token else 0.5 * 10.0 ** -decimals + 1e-9
        if re.search(r"<\s*$", text[:m.start()]):  # a bound: "< 1e-6"
            if not have.size or have.min() >= x:
                bad.append(m.group(0))
        elif not have.size or np.abs(have - x).min() > tol:
            bad.append(m.group(0))
    return bad


#: the profile of the committed book when its results files record none
BOOK_PROFILE = "cpu"


def book_profile(root: str | Path | None = None) -> str:
    """The profile the committed book was executed with: the one most of its chapters' results
    files (``<root>/book/results/NN_name.json``) record; :data:`BOOK_PROFILE` when none does."""
    folder = Path(root or project_root()) / "book" / "results"
    recorded = Counter()
    for path in folder.glob("[0-9][0-9]_*.json"):
        try:
            profile = json.loads(path.read_text()).get("profile")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(profile, str):
            recorded[profile] += 1
    return recorded.most_common(1)[0][0] if recorded else BOOK_PROFILE


def results_folder(results_dir: str | Path, profile: str) -> Path:
    """Where results of ``profile`` asked to go to ``results_dir`` are written: ``results_dir``,
    except the committed book's ``book/results`` at a profile other than :func:`book_profile`
    (unless ``$COPKIT_WRITE_BOOK`` is 1): then ``.scratch/book/<profile>/results`` of the project,
    where ``tools/run_chapters.py --profile <profile>`` writes too."""
    root = project_root()
    book = (root / "book" / "results").resolve()
    if Path(results_dir).resolve() != book or os.environ.get("COPKIT_WRITE_BOOK") == "1" \
            or profile == book_profile(root):
        return Path(results_dir)
    return root / ".scratch" / "book" / Path(str(profile)).stem / "results"


def write_results(results_dir: str | Path, chapter: str, *, profile: str, device: str,
                  seeds: list[int], claims: dict[str, dict], metrics: dict[str, Any]) -> Path:
    """Write ``<results_dir>/<chapter>.json`` atomically and return its path; the book's results
    folder at another profile than the book's is replaced by that profile's scratch folder
    (:func:`results_folder`, said in one printed line). The file also lists what this process
    used (:func:`copkit.checkpoint.used`): as ``runs`` the networks :func:`copkit.train.fit`
    returned (``<name>-<hash8>``), as ``records`` the runs whose metrics alone were read, and as
    ``files`` the caches of computed numbers."""
    from .checkpoint import used  # here: results is read by pages that need no torch
    for cid, c in claims.items():
        if not {"paper", "ours", "verdict", "why"} <= set(c) <= _KEYS:
            raise ValueError(f"claim {cid!r} must be made with copkit.results.claim(), tested() or "
                             "alias()")
        if c["verdict"] is None:
            raise ValueError(f"claim {cid!r} has no verdict yet: decide the chapter's claims first "
                             "(copkit.results.decide)")
    numbers = {"claims": claims, "metrics": metrics, "seeds": seeds}
    for cid, c in claims.items():
        said = (c["why"]
                + ("" if c.get("test") is None or c["test"].get("alias_of") else " "
                   + test_text(c["test"])))
        typed = unsupported_numbers(said, numbers)
        if typed:
            raise ValueError(f"claim {cid!r} says {', '.join(typed)}, which no number in its "
                             "results file supports: write the sentence from measured (or the "
                             "paper's) values stored with the claim")
    payload = {
        "chapter": chapter,
        "profile": profile,
        "device": str(device),
        "commit": git_commit(project_root()),
        "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seeds": list(seeds),
        "claims": _plain(claims),
        "metrics": _plain(metrics),
        # what this kernel trained, loaded or cached: what tools/ship_runs.py ships so that a
        # fresh clone loads it instead of computing it again
        **{kind: sorted(ids) for kind, ids in used().items()},
    }
    folder = results_folder(results_dir, profile)
    if folder != Path(results_dir):
        print(f"profile {profile} is not the book's ({book_profile()}): results go to {folder}, "
              f"not {results_dir}", flush=True)
    return atomic_write_json(folder / f"{chapter}.json", payload)


def read_results(results_dir: str | Path) -> dict[str, dict[str, Any]]:
    """Every chapter's results file in ``results_dir`` (``NN_name.json``), by chapter, in order."""
    return {p.stem: json.loads(p.read_text())
            for p in sorted(Path(results_dir).glob("[0-9][0-9]_*.json"))}


#: The order in which the book's profiles are shown; any other profile (a profile file) after them.
PROFILE_ORDER = ("smoke", "cpu", "gpu")
#: The pages that read the runtimes files, the report and the performance chapter. Each runs
#: before its own time is recorded, so it would always show its previous run's; every table of
#: run times leaves them out (they take seconds), and so all pages agree.
RUNTIME_READERS = ("06_report", "07_performance")
#: The book's aims for the shipped base models (``pretrained.json``), set before each was trained:
#: (model, metric) -> (comparison, value). The report tabulates them; the performance page sets
#: the base MAR's FID beside its aim.
BASE_MODEL_TARGETS: dict[tuple[str, str], tuple[str, float]] = {
    ("classifier", "test_top1"): (">=", 0.92), ("vit", "test_top1"): (">=", 0.90),
    ("mar", "class_agreement_cfg"): (">=", 0.85), ("mar", "class_agreement_nocfg"): (">=", 0.70),
    ("mar", "fid_cfg"): ("<=", 30.0),
    **{(name, "val_L_r_change_last_fifth"): ("<", 0.02) for name in ("comae", "comae0", "comae_photo")}}
_REPLICATE = re.compile(r"_s\d+$")
_SHOWN_OP = {">=": "≥", "<=": "≤", "<": "<", ">": ">"}


def _base_value(key: str, value: float) -> str:
    """One shipped base-model number as the book prints it: counts as counts, FIDs to one
    decimal, losses and entropies to three figures, shares and relative changes as percentages."""
    if isinstance(value, int) or key in ("samples", "pr_k", "steps", "epochs"):
        return fmt.count(value) if float(value) == int(value) else fmt.sig(value, 3)
    if "fid" in key:
        return fmt.fid(value)
    if "change" in key or ("loss" not in key and "L_r" not in key and "H_mask" not in key
                           and 0 <= value <= 1):
        return fmt.share(value)
    return fmt.sig(value, 3)


def base_model_numbers(name: str, metrics: Mapping[str, Any]) -> str:
    """A shipped base model's final numbers (``pretrained.json``'s ``metrics``) as one line: each
    number with its spread over sampling seeds when one was recorded (``<key>_sd``; the ``_sd``
    and ``_seeds`` entries are not shown apart), and, where the book set an aim for it
    (:data:`BASE_MODEL_TARGETS`; a replicate ``<name>_s<k>`` has its model's), whether it meets it.

    >>> base_model_numbers("mar", {"fid_cfg": 151.43, "fid_cfg_sd": 17.6, "fid_cfg_seeds": [1],
    ...                            "samples": 1000, "class_agreement_cfg": 0.961})
    'fid_cfg 151.4 ± 17.6 (misses ≤ 30); samples 1,000; class_agreement_cfg 96.1% (meets ≥ 85%)'
    """
    parts = []
    for key, value in metrics.items():
        if (key.endswith(("_sd", "_seeds")) or isinstance(value, bool)
                or not isinstance(value, (int, float))):
            continue
        text = _base_value(key, value)
        if isinstance(metrics.get(f"{key}_sd"), (int, float)):
            text += f" ± {_base_value(key, metrics[f'{key}_sd'])}"
        target = BASE_MODEL_TARGETS.get((_REPLICATE.sub("", name), key))
        if target is not None:
            op, bound = target
            met = {">=": value >= bound, "<=": value <= bound, "<": value < bound,
                   ">": value > bound}[op]
            shown = _base_value(key, bound)
            if shown.endswith("%") and float(100 * bound).is_integer():
                shown = fmt.share(bound, 0)
            elif float(bound).is_integer():
                shown = fmt.count(bound)
            text += f" ({'meets' if met else 'misses'} {_SHOWN_OP[op]} {shown})"
        parts.append(f"{key} {text}")
    return "; ".join(parts)


def read_runtimes(*folders: str | Path) -> dict[str, dict[str, dict[str, Any]]]:
    """The run times ``tools/run_chapters.py`` recorded: every ``runtimes-<profile>.json`` in
    ``folders``, as {profile: {chapter: entry}} (an entry holds ``seconds``, ``device``, ``cpu``,
    ``cpus``, ``omp_num_threads``, ``gpu``, ``finished``), profiles in :data:`PROFILE_ORDER`. The
    first folder's file wins for a profile. The one source of every run time the book prints:
    the introduction and README (``tools/runtimes_text.py``), the report and the performance page.
    """
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for folder in folders:
        for path in sorted(Path(folder).glob("runtimes-*.json")):
            r = json.loads(path.read_text())
            found.setdefault(r.get("profile", path.stem.removeprefix("runtimes-")),
                             dict(r.get("chapters", {})))
    rank = {p: i for i, p in enumerate(PROFILE_ORDER)}
    return {p: found[p] for p in sorted(found, key=lambda p: (rank.get(p, len(rank)), p))}


def runtimes_table(runtimes: Mapping[str, Mapping[str, Mapping[str, Any]]],
                   leave_out: Sequence[str] = RUNTIME_READERS) -> str:
    """Minutes per chapter (rows) for every profile (columns), and their total, as a Markdown
    table; "not run" where a profile has no time for a chapter. The chapters in ``leave_out``
    (:data:`RUNTIME_READERS`) are not shown nor counted.

    >>> print(runtimes_table({"smoke": {"01_a": {"seconds": 13.9}}, "cpu": {"01_a": {"seconds": 41.1},
    ...                       "02_b": {"seconds": 2178.7}, "06_report": {"seconds": 9.1}}}))
    | chapter | `smoke` (min) | `cpu` (min) |
    |---|---|---|
    | 01_a | 0.2 | 0.7 |
    | 02_b | not run | 36.3 |
    | **total** | **0.2** | **37.0** |
    """
    runtimes = {p: {k: v for k, v in c.items() if k not in leave_out} for p, c in runtimes.items()}
    profiles = list(runtimes)
    names = sorted({name for chapters in runtimes.values() for name in chapters})
    rows = [[name,
             *(fmt.minutes(runtimes[p][name]["seconds"]) if name in runtimes[p] else "not run"
               for p in profiles)]
            for name in names]
    rows.append(["**total**",
                 *(f"**{fmt.minutes(sum(c['seconds'] for c in runtimes[p].values()))}**"
                   for p in profiles)])
    return markdown_table(["chapter", *(f"`{p}` (min)" for p in profiles)], rows)


def runtimes_hosts(chapters: Mapping[str, Mapping[str, Any]]) -> str:
    """Where a profile's chapters ran, from their runtimes entries: each distinct device and
    machine once, e.g. "cpu (AMD EPYC, 2 cores, OMP_NUM_THREADS=1)".

    >>> runtimes_hosts({"01_a": {"device": "cpu", "cpu": "AMD EPYC", "cpus": 2, "omp_num_threads": "1"},
    ...                 "02_b": {"device": "cuda", "gpu": "NVIDIA H200", "cpus": 16, "omp_num_threads": None}})
    'cpu (AMD EPYC, 2 cores, OMP_NUM_THREADS=1); cuda (NVIDIA H200, 16 cores)'
    """
    hosts = {(c.get("device"), c.get("gpu") or c.get("cpu"), c.get("cpus"),
              c.get("omp_num_threads"))
             for c in chapters.values()}
    return "; ".join(f"{d} ({m or 'unknown machine'}, {n} cores" + (", "
                                                                    f"OMP_NUM_THREADS={t}" if t
                                                                    else "") + ")"
                     for d, m, n, t in sorted(hosts, key=str))


# ---------------------------------------------------------------------------------------------
# Numbers and claims as text


def mean_sd(values: Iterable[float] | Mapping[str, Any] | float, digits: int = 1, *,
            significant: bool = False, show_n: bool = False) -> str:
    """Measurements, or a :func:`summary` dict, as "mean ± sd"; the sd is the sample one (0 for one
    value).

    ``digits`` decimals for both (:func:`copkit.fmt.num`), or with ``significant`` that many
    significant digits for the mean and two for the sd (:func:`copkit.fmt.sig`: never fewer than
    the integer digits); ``show_n`` adds the count.

    >>> mean_sd([70.0, 71.0, 72.5])
    '71.2 ± 1.3'
    >>> mean_sd({"mean": 0.123456, "std": 0.0123, "n": 4}, 4, significant=True, show_n=True)
    '0.1235 ± 0.012 (n=4)'
    >>> mean_sd(3.0, 2), mean_sd({"mean": 12345.678, "std": 8.04, "n": 3}, 3, significant=True)
    ('3.00 ± 0.00', '12,346 ± 8.0')
    >>> mean_sd({"mean": 0.7799999999999999, "std": 1.36e-16, "n": 3}, 4, significant=True)
    '0.7800 ± 0'
    """
    s = dict(values) if isinstance(values, Mapping) else summary(values)
    # float noise in the sd of equal values (1.4e-16 beside 0.78) is no spread: copkit.fmt.snap
    scale = _magnitude(s.get("mean"), s.get("std"))
    if significant:
        text = f"{fmt.sig(s['mean'], digits, scale=scale)} ± {fmt.sig(s['std'], 2, scale=scale)}"
    else:
        text = (f"{fmt.num(s['mean'], digits, scale=scale)} ± "
                f"{fmt.num(s['std'], digits, scale=scale)}")
    return text + (f" (n={s['n']})" if show_n else "")


def finite_mean_sd(values: Iterable[float], digits: int = 1, none: str = "none") -> str:
    """:func:`mean_sd` of the finite values only (e.g. the seeds whose curve has a knee), ``none``
    when no value is finite.

    >>> finite_mean_sd([0.78, float("nan"), 0.82], 2), finite_mean_sd([float("nan")])
    ('0.80 ± 0.03', 'none')
    """
    v = np.asarray(list(values), dtype=float)
    v = v[np.isfinite(v)]
    return mean_sd(v, digits) if v.size else none


def with_paper(text: str, paper: float | None, digits: int = 1) -> str:
    """``text`` with the paper's number beside it in brackets, ``digits`` decimals
    (:func:`copkit.fmt.num`); ``text`` alone where the paper has no number (None).

    >>> with_paper("71.2 ± 1.3", 70.57), with_paper("19.6 ± 0.4", 72.19, 2), with_paper("x", None)
    ('71.2 ± 1.3 (70.6)', '19.6 ± 0.4 (72.19)', 'x')
    """
    return text if paper is None else f"{text} ({fmt.num(paper, digits)})"


#: The layouts the book's style sheet (``_static/copkit.css``) gives a table, by class:
#: ``claims-table``, six columns whose last (a sentence, such as a claim's "why") takes a
#: full-width line under the other five; ``dense-table``, many short numeric columns in smaller
#: type.
TABLE_CLASSES = ("claims-table", "dense-table")


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]],
                   css_class: str | None = None) -> str:
    """A Markdown table, for ``IPython.display.Markdown``: one header row, then ``rows``.

    Cells are written with ``str()``; a ``|`` inside a cell is escaped so that it cannot split the
    cell. Every row must have as many cells as the header. ``css_class`` (one of
    :data:`TABLE_CLASSES`) wraps the table in a MyST ``container`` of that class, which the
    site's style sheet lays out so that the table fits the text column.

    >>> print(markdown_table(["model", "AuC"], [["CViT", "72.2"], ["a|b", 1]]))
    | model | AuC |
    |---|---|
    | CViT | 72.2 |
    | a\\|b | 1 |
    >>> print(markdown_table(["a"], [[1]], css_class="dense-table"))
    :::{container} dense-table
    | a |
    |---|
    | 1 |
    :::
    """
    header = [str(h) for h in header]
    lines = ["| " + " | ".join(h.replace("|", "\\|") for h in header) + " |",
             "|" + "---|" * len(header)]
    for i, row in enumerate(rows):
        cells = [str(c).replace("|", "\\|") for c in row]
        if len(cells) != len(header):
            raise ValueError(f"row {i} has {len(cells)} cells, the header {len(header)}")
        lines.append("| " + " | ".join(cells) + " |")
    if css_class is None:
        return "\n".join(lines)
    if css_class not in TABLE_CLASSES:
        raise ValueError(f"css_class must be one of {TABLE_CLASSES}, got {css_class!r}")
    if css_class == "claims-table" and len(header) != 6:
        raise ValueError(f"a claims-table has 6 columns (the last a sentence), got {len(header)}")
    return "\n".join([f":::{{container}} {css_class}", *lines, ":::"])


def brief(value: Any) -> str:
    """A results value in a few characters: ``mean ± sd (n=...)`` for a summary, four significant
    digits for a float (:func:`copkit.fmt.sig`), the first four items of a dict or list, the rest
    as text (an ASCII arrow ``->`` as ``→``).

    >>> brief({"mean": 71.234, "std": 1.25, "n": 3})
    '71.23 ± 1.2 (n=3)'
    >>> brief({"a": 0.5, "b": [1, 2, 3, 4, 5]}), brief(150_700_000.0), brief(-0.00001), brief("4.816 -> 4.267")
    ('a: 0.5; b: [1, 2, 3, 4, …]', '150,700,000', '-1e-5', '4.816 → 4.267')
    """
    if isinstance(value, dict) and {"mean", "std", "n"} <= set(value):
        if value["mean"] is None:
            return f"none (n={value['n']})"
        return mean_sd(value, 4, significant=True, show_n=True)
    if isinstance(value, dict):
        items = list(value.items())
        return ("; ".join(f"{k}: {brief(v)}" for k, v in items[:4]) + ("; "
                                                                       "…" if len(items) > 4
                                                                       else ""))
    if isinstance(value, float):
        # trailing zeros dropped, as "g" does
        mantissa, e, exponent = fmt.sig(value, 4).partition("e")
        return (mantissa.rstrip("0").rstrip(".") if "." in mantissa else mantissa) + e + exponent
    if isinstance(value, (list, tuple)):
        return ("[" + ", ".join(brief(v) for v in value[:4]) + (", …" if len(value) > 4 else "")
                + "]")
    return str(value).replace("->", "→")  # an arrow that a narrow cell cannot break into "- >"


#: A results key whose value is a share of a whole, printed as a percentage by :func:`readable`.
_SHARE_KEY = re.compile(r"(?:^|_)(?:share|rate|fraction)s?(?:$|_)")


def key_words(key: str) -> str:
    """A results key as words: underscores as spaces, a symbol such as ``H_mask`` or ``L_r`` (one
    capital, an underscore, its subscript) kept whole.

    >>> key_words("paper_late_share"), key_words("H_mask_late"), key_words("CMAR_minus_MAR")
    ('paper late share', 'H_mask late', 'CMAR minus MAR')
    """
    tokens = str(key).split("_")
    words = []
    i = 0
    while i < len(tokens):
        if len(tokens[i]) == 1 and tokens[i].isupper() and i + 1 < len(tokens) and tokens[i + 1]:
            words.append(f"{tokens[i]}_{tokens[i + 1]}")
            i += 2
        else:
            words.append(tokens[i])
            i += 1
    return " ".join(w for w in words if w)


def _is_summary(value: Any) -> bool:
    return isinstance(value, Mapping) and {"mean", "std", "n"} <= set(value)


def _is_test(value: Any) -> bool:
    return isinstance(value, Mapping) and {"test", "effect"} <= set(value)


def readable(value: Any, *, fid: bool = False, share: bool = False, items: int = 4,
             _depth: int = 0) -> str:
    """A results value (a claim's ``ours``, or the paper's) as a reader reads it, in the book's
    number rule (:mod:`copkit.fmt`): keys as words (:func:`key_words`), a value under a key that
    names a share (``mutual_share``, ``violation_rate``) as a percentage, every number an FID
    (to one decimal) with ``fid``, a summary as "mean ± sd (n=3)" (the mean alone for one
    value), a test as its effect with the 95% interval, whole numbers with thousands separators,
    other numbers to four significant figures; at most ``items`` entries of a dict or list, then
    "…". A dict inside a dict is written in brackets, its entries without colons.

    >>> readable({"paper_late_share": 0.2734, "from_step": 5676})
    'paper late share: 27.3%; from step: 5,676'
    >>> readable({"0.5": {"mutual_share": 0.7079, "edges_per_graph": 136.94}})
    '0.5: (mutual share 70.8%, edges per graph 136.9)'
    >>> readable({"MAR": {"mean": 170.02, "std": 8.21, "n": 3}}, fid=True)
    'MAR: 170.0 ± 8.2 (n=3)'
    >>> readable({"mean": 0.7799999999999999, "std": 1.36e-16, "n": 3}), readable([3.0, 1e-17])
    ('0.78 ± 0 (n=3)', '3, 1e-17')
    """
    def number(x: float, scale: float | None = None) -> str:
        if fid:
            return fmt.fid(x)
        if share and 0 <= x <= 1:
            return fmt.share(x)
        if float(x) == int(x) and abs(x) < fmt.HUGE:
            return fmt.count(x)
        # four significant figures, trailing zeros dropped as "g" does
        mantissa, e, exponent = fmt.sig(x, 4, scale=scale).partition("e")
        return (mantissa.rstrip("0").rstrip(".") if "." in mantissa else mantissa) + e + exponent

    if value is None:
        return fmt.MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float, np.integer, np.floating)):
        return fmt.MISSING if not np.isfinite(float(value)) else number(float(value))
    if _is_test(value):
        lo, hi = value.get("ci") or (None, None)
        scale = effect_scale(value)
        interval = ("" if lo is None or hi is None else
                    f" (95% interval {fmt.signed(lo, digits=3, scale=scale)} to "
                    f"{fmt.signed(hi, digits=3, scale=scale)})")
        return f"{fmt.signed(value['effect'], digits=3, scale=scale)}{interval}"
    if _is_summary(value):
        mean, sd, n = value["mean"], value["std"], value["n"]
        if mean is None or not np.isfinite(float(mean)):
            text = f"none (n={n})"
        else:
            scale = _magnitude(mean, sd)
            text = number(float(mean), scale)
            if n != 1 and sd is not None:
                spread = (fmt.fid(sd) if fid else fmt.share(sd) if share and 0 <= mean <= 1
                          else fmt.sig(sd, 2, scale=scale))
                text += f" ± {spread}"
            text += f" (n={fmt.count(n)})"
        rest = {k: v for k, v in value.items() if k not in ("mean", "std", "n")}
        if rest:
            text += "; " + readable(rest, fid=fid, share=share, items=items, _depth=_depth)
        return text
    if isinstance(value, Mapping):
        entries = list(value.items())
        parts = []
        for k, v in entries[:items]:
            words = key_words(k)
            shown = readable(v, fid=fid, share=share or bool(_SHARE_KEY.search(str(k))),
                             items=items, _depth=_depth + 1)
            nested = isinstance(v, Mapping) and not _is_summary(v) and not _is_test(v)
            if _depth == 0:
                parts.append(f"{words}: ({shown})" if nested else f"{words}: {shown}")
            else:
                parts.append(f"{words} ({shown})" if nested else f"{words} {shown}")
        more = ["…"] if len(entries) > items else []
        return ("; " if _depth == 0 else ", ").join([*parts, *more])
    if isinstance(value, (list, tuple)):
        shown = [readable(v, fid=fid, share=share, items=items, _depth=_depth + 1)
                 for v in value[:items]]
        return ", ".join([*shown, *(["…"] if len(value) > items else [])])
    return str(value).replace("->", "→")


test_text.__test__ = False


#: How :func:`in_words` introduces each verdict.
VERDICT_WORDS = {
    "reproduced": "**Agrees**: the paper's direction, by at least the smallest effect that would "
                  "matter (or its value, within the margin stated with the claim), significant "
                  "after Holm's correction over every tested claim of the book; or an exact "
                  "computation.",
    "partly": "**Partly**: the full claim is not shown, but the weaker criterion stated with it "
              "before measuring holds.",
    "negligible": "**Negligible**: the effect's 95% interval lies inside the smallest effect that "
                  "would matter, stated with the claim before measuring; whatever its sign, it does "
                  "not support the paper.",
    "not reproduced": "**Disagrees**: the opposite direction (or outside the stated margin), "
                      "significant after the correction; or an exact computation.",
    "inconclusive": "**Inconclusive**: not significant after Holm's correction over the book's "
                    "tested claims; these data do not decide either way.",
    "not testable": "**Not testable at this scale.**",
}


def in_words(claims: Mapping[str, Mapping[str, Any]], links: bool = True) -> str:
    """The closing prose of a chapter: its claims grouped by verdict, each said by its own ``why``.

    For each verdict that has claims, in the order of :data:`VERDICTS`, a line saying what the
    verdict means (:data:`VERDICT_WORDS`), then one list item per claim: its ``why``, and for a
    tested claim its test in words (:func:`test_text`; for an alias, the claim it shares). Nothing
    is stated twice: the sentences are the claims' own, as the results file and the report have
    them. With ``links``, a claim that names its ``section`` ends with a MyST reference to it
    (which shows the section's title).

    >>> print(in_words({"a": claim(1, 2.0, "not testable", "A differs."),
    ...                 "b": claim(1, 1.0, "reproduced", "B holds.", exact=True)}, links=False))
    **Agrees**: the paper's direction, by at least the smallest effect that would matter (or its value, within the margin stated with the claim), significant after Holm's correction over every tested claim of the book; or an exact computation.
    <BLANKLINE>
    - B holds.
    <BLANKLINE>
    **Not testable at this scale.**
    <BLANKLINE>
    - A differs.
    """  # noqa: E501 - a doctest's expected output is one line
    groups = []
    for verdict in VERDICTS:
        said = []
        for c in claims.values():
            if c["verdict"] != verdict:
                continue
            t = c.get("test")
            how = ("" if t is None else f" (the same test as `{t['alias_of']}`)"
                   if t.get("alias_of") else f" ({test_text(t)})")
            said.append(c["why"] + how + (" (see "
                                          f"{{ref}}`{c['section']}`)" if links and c.get("section")
                                          else ""))
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
    """The section labels, ``(label)=`` lines, of a notebook's markdown cells (none if it is
    missing): the targets a claim's ``section`` may name."""
    path = Path(notebook)
    if not path.exists():
        return set()
    cells = json.loads(path.read_text())["cells"]
    text = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    return set(re.findall(r"^\(([^)\s]+)\)=\s*$", text, flags=re.M))


def run_flags(results: Mapping[str, Mapping[str, Any]], commit: str, started: str,
              executed: Mapping[str, str | None] | None = None) -> dict[str, list[str]]:
    """What a summary page (the report) should flag about each chapter's run, by chapter: a
    results file written at another commit than the page's own ``commit`` (:func:`git_commit`),
    or from uncommitted changes on top of it, or after the page started (``started``, an ISO time: a chapter that ran after the page read
    it), or by another run than the executed notebook the site shows (``executed``: each
    notebook's papermill end time, ISO; the results file is written in the chapter's last cells,
    so more than :data:`RUN_GAP_S` between the two means two runs). An empty list: nothing to
    flag.

    >>> run_flags({"01_a": {"commit": "abc", "written": "2026-12-02T07:18:02+0000"}}, "abc",
    ...           "2026-12-02T08:00:00+00:00", {"01_a": "2026-12-02T09:00:00+00:00"})
    {'01_a': ['its page comes from another run than its results file (the page ended 1.7 h after the file was written)']}
    >>> run_flags({"01_a": {"commit": "abc", "written": "2026-12-02T09:00:00+0000"}}, "def",
    ...           "2026-12-02T08:00:00+00:00")
    {'01_a': ['another commit (abc)', 'ran after this page started']}

    A chapter run from a tree with uncommitted changes (:func:`git_commit` ends its commit with
    ``-dirty``) on the page's own commit is flagged as such, not as another commit; one run from
    the clean commit that the page's changes sit on is not flagged:

    >>> run_flags({"01_a": {"commit": "abc-dirty"}, "02_b": {"commit": "abc"}}, "abc-dirty",
    ...           "2026-12-02T08:00:00+00:00")
    {'01_a': ['run from uncommitted changes on top of abc'], '02_b': []}
    """
    from datetime import datetime

    def when(text: str) -> datetime:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))

    start = when(started)
    flags: dict[str, list[str]] = {}
    here = _base(commit)
    for chapter, r in results.items():
        out = []
        theirs = str(r.get("commit", "unknown"))
        if _base(theirs) != here:
            out.append(f"another commit ({commit_text(theirs)})")
        elif theirs.endswith(DIRTY):
            out.append(f"run from uncommitted changes on top of {_base(theirs)[:12]}")
        written = when(r["written"]) if r.get("written") else None
        if written is not None and written > start:
            out.append("ran after this page started")
        end = (executed or {}).get(chapter)
        if written is not None and end:
            gap = (when(end) - written).total_seconds()
            if abs(gap) > RUN_GAP_S:
                out.append(f"its page comes from another run than its results file (the page "
                           f"ended {fmt.duration(abs(gap))} {'after' if gap > 0 else 'before'} "
                           "the file was written)")
        flags[chapter] = out
    return flags


#: More than this many seconds between a results file and its notebook's end means two runs.
RUN_GAP_S = 600.0


def _base(commit: str) -> str:
    """The commit a (possibly ``-dirty``) :func:`git_commit` stands on."""
    return commit.removesuffix(DIRTY)


def commit_text(commit: str, code: bool = False) -> str:
    """A :func:`git_commit` as a page prints it: its first 12 characters (in backticks with
    ``code``), and "with uncommitted changes" when the tree was dirty (which the first 12
    characters would hide).

    >>> commit_text("c2c41e65eb2bedea99ff-dirty"), commit_text("c2c41e65eb2bedea99ff", code=True)
    ('c2c41e65eb2b with uncommitted changes', '`c2c41e65eb2b`')
    """
    commit = str(commit)
    sha = _base(commit)[:12]
    return ((f"`{sha}`" if code else sha)
            + (" with uncommitted changes" if commit.endswith(DIRTY) else ""))
