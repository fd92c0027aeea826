"""The introduction's "What we found" box is the one copkit.findings writes from book/results
(tools/findings_text.py), so that it cannot say what the results files do not."""

import json
import subprocess
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


def test_check_passes_on_the_committed_intro():
    res = subprocess.run([sys.executable, str(ROOT / "tools" / "findings_text.py"), "--check"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr


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
