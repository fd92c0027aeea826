"""The introduction's "What we found" box is the one copkit.findings writes from book/results
(tools/findings_text.py), so that it cannot say what the results files do not."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import findings_text  # noqa: E402
import runtimes_text  # noqa: E402

from copkit import fmt  # noqa: E402
from copkit.findings import FINDINGS_CLASS  # noqa: E402


def _block(text: str) -> str:
    return text.split(findings_text.BEGIN, 1)[1].split(findings_text.END, 1)[0]


def test_the_committed_intro_holds_the_box_of_the_committed_results():
    intro = (ROOT / "book" / "intro.md").read_text()
    block = _block(intro).strip()
    assert block == findings_text.render(ROOT / "book" / "results", ROOT / "book")
    assert f":class: {FINDINGS_CLASS}" in block and fmt.comparison_errors(block) == []
    # before the intro's first figure
    assert intro.index(findings_text.BEGIN) < intro.index("```{figure}")


def test_check_passes_on_the_committed_intro(monkeypatch):
    """The command as `make` runs it, called in this process (no second interpreter)."""
    monkeypatch.setattr(sys, "argv", ["findings_text.py", "--check"])
    assert findings_text.main() == 0


def _claim(verdict, **extra):
    return {"paper": 1, "ours": {}, "verdict": verdict, "why": "A reason.", **extra}


def test_check_fails_and_a_rewrite_fixes_a_stale_box(tmp_path, monkeypatch):
    results = tmp_path / "results"
    results.mkdir()
    (results / "01_a.json").write_text(json.dumps({"chapter": "01_a", "claims": {
        "eq1.order_invariant": _claim("not reproduced", exact=True, headline=True,
                                      section="ch1-eq1"),
        "dag.acyclic": _claim("reproduced", exact=True, headline=True, section="gone")}}))
    (tmp_path / "01_a.ipynb").write_text(json.dumps({"cells": [
        {"cell_type": "markdown", "source": ["(ch1-eq1)=\n", "## Eq. 1\n"]}]}))
    page = tmp_path / "intro.md"
    page.write_text(f"# Intro\n\nThe method works.\n\n{findings_text.BEGIN}\nold\n"
                    f"{findings_text.END}\n\nafter\n")
    monkeypatch.setattr(findings_text, "ROOT", tmp_path)
    monkeypatch.setattr(findings_text, "FILES", ("intro.md",))
    args = ["--results", str(results), "--notebooks", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", ["findings_text.py", "--check", *args])
    assert findings_text.main() == 1
    monkeypatch.setattr(sys, "argv", ["findings_text.py", *args])
    assert findings_text.main() == 0
    text = page.read_text()
    assert text.startswith("# Intro\n\nThe method works.\n\n") and text.endswith("\n\nafter\n")
    box = _block(text)
    assert "2 of the paper's claims" in box and "1 reproduced and 1 contradicted" in box
    # a section the executed chapter defines is linked; one it lacks is not (the build would fail)
    assert "{ref}`ch1-eq1`" in box and "{ref}`gone`" not in box and "{doc}`Chapter 1 <01_a>`" in box
    monkeypatch.setattr(sys, "argv", ["findings_text.py", "--check", *args])
    assert findings_text.main() == 0


def test_a_page_without_its_markers_is_an_error():
    with pytest.raises(ValueError, match="must hold one"):
        runtimes_text.with_block("no markers", "x", "intro.md", findings_text.BEGIN,
                                 findings_text.END)


def test_the_intro_and_the_report_name_one_family_from_results_written_at_different_times(
        tmp_path):
    """Planted files whose raw tests were corrected over 27 and 24 claims (each chapter decided
    its own when the book held other files), 3 tested claims in all: the intro's box and the
    report (copkit.results.book_results, family_size) both say 3, and the same verdicts."""
    from copkit import stats
    from copkit.findings import claim_counts, counts_phrase
    from copkit.results import (
        alias,
        book_results,
        claim,
        decide,
        family_size,
        read_results,
        tested,
        write_results,
    )

    results = tmp_path / "results"
    near = stats.one_sample([0.30, 0.32, 0.35, 0.33, 0.31, 0.36], 0.3)  # p ~ 0.02
    null = stats.welch([1.0, 2.0, 3.0], [1.1, 2.2, 2.9])
    chapters = {
        "01_a": ({"table5.cvit.top1@78": tested(0.3, 1.0, near, "higher", "A is higher.",
                                                smallest=0.01, headline=True),
                  "table5.vit.auc": alias("table5.cvit.top1@78", 0.3, 1.0, "The same.")}, 27),
        "02_b": ({"table5.rvit.auc": tested(1.0, 1.0, null, "higher", "Null.", smallest=0.5),
                  "table5.vitc.auc": tested(1.0, 1.0, null, "higher", "Null.", smallest=0.5),
                  "dag.acyclic": claim("open", 1.0, "not testable", "Not here.")}, 24)}
    for chapter, (claims, family) in chapters.items():
        decided = decide(claims, chapter, tmp_path / "none")
        for c in decided.values():
            if c.get("test"):
                c["test"]["family"] = family  # as the raw file of an earlier book has it
        write_results(results, chapter, profile="smoke", device="cpu", seeds=[0], claims=decided,
                      metrics={})
    raw = read_results(results)
    first = next(c["test"]["family"] for c in raw["01_a"]["claims"].values())
    assert first == 27  # the number the intro used to print

    report, _ = book_results(raw)  # what the report reads
    box = findings_text.render(results, tmp_path)
    assert family_size(report) == 3
    assert "corrected for the book's 3 tested claims (Holm)" in box
    assert "27 tested" not in box and "24 tested" not in box
    # the verdicts too: the significant-alone claim is undecided over the book, in both
    counts = counts_phrase(claim_counts(c for r in report.values() for c in r["claims"].values()))
    assert f"measurements on Fashion-MNIST: {counts};" in box
    assert report["01_a"]["claims"]["table5.cvit.top1@78"]["verdict"] == "inconclusive"
    assert raw["01_a"]["claims"]["table5.cvit.top1@78"]["verdict"] == "reproduced"
