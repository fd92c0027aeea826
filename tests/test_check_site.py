"""tools/check_site.py's equation check: the verdict from a page's facts, and the facts themselves
read by Chromium from small pages served with the bundled MathJax (skipped without Chromium)."""

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import check_site  # noqa: E402

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
#: the tests that read pages in a real browser, skipped without one (make check-site needs it)
needs_chromium = pytest.mark.skipif(
    not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM))
    or importlib.util.find_spec("playwright") is None, reason="no Chromium or no playwright")


def test_math_failures_name_what_is_wrong():
    ok = {"count": 3, "typeset": 3, "raw": [], "stray": [], "waited": "typeset"}
    assert check_site.math_failures("a.html", ok, must_have=True) == []
    none = {"count": 0, "typeset": 0, "raw": [], "stray": [], "waited": "no equations"}
    assert check_site.math_failures("b.html", none, must_have=False) == []
    assert check_site.math_failures("b.html", none, must_have=True) == [
        "b.html: no typeset equation (MathJax output) on the page that must show equations"]
    raw = {"count": 2, "typeset": 0, "raw": [r"\(x^2\)", r"\[y\]"], "stray": [r"cost $\alpha$"],
           "waited": "MathJax never loaded"}
    got = check_site.math_failures("c.html", raw, must_have=False)
    assert got == ["c.html: 2 of 2 equations not typeset (MathJax never loaded), first: "
                   "'\\\\(x^2\\\\)'", "c.html: LaTeX left in the text: 'cost $\\\\alpha$'"]


def _mathjax_dir() -> Path | None:
    spec = importlib.util.find_spec("sphinx-mathjax-offline")
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "static" / "mathjax"
    return folder if (folder / "tex-chtml.js").is_file() else None


PAGE = """<!DOCTYPE html><html><head>{script}</head><body><main>
<p>Inline <span class="math notranslate nohighlight">\\(H(x_i) = \\log \\sigma_i\\)</span> and prose{extra}.</p>
<div class="math notranslate nohighlight">\\[ r = (1 - c)\\beta + c P r \\]</div>
<pre>a $\\alpha$ in code is fine</pre>
</main></body></html>"""  # noqa: E501 - the page's HTML, as a site has it
SCRIPT = '<script defer src="_static/mathjax/tex-chtml.js"></script>'


@needs_chromium
@pytest.mark.skipif(_mathjax_dir() is None, reason="sphinx-mathjax-offline is not installed")
def test_math_facts_in_chromium(tmp_path):
    (tmp_path / "_static").mkdir()
    (tmp_path / "_static" / "mathjax").symlink_to(_mathjax_dir())
    (tmp_path / "good.html").write_text(PAGE.format(script=SCRIPT, extra=""))
    (tmp_path / "no-mathjax.html").write_text(PAGE.format(script="", extra=""))
    (tmp_path
     / "stray.html").write_text(PAGE.format(script=SCRIPT, extra=": a raw $\\alpha_i$ left over"))
    facts = _facts(tmp_path, ("good", "no-mathjax", "stray"), check_site.MATH_FACTS, 3000)
    assert facts["good"] == {"count": 2, "typeset": 2, "raw": [], "stray": [], "waited": "typeset"}
    assert check_site.math_failures("good.html", facts["good"], must_have=True) == []
    assert (facts["no-mathjax"]["typeset"] == 0
            and facts["no-mathjax"]["waited"] == "MathJax never loaded")
    assert (facts["no-mathjax"]["raw"] == [r"\(H(x_i) = \log \sigma_i\)",
                                           r"\[ r = (1 - c)\beta + c P r \]"])
    assert facts["stray"]["typeset"] == 2 and len(facts["stray"]["stray"]) == 1
    assert r"$\alpha_i$" in facts["stray"]["stray"][0]


def test_a_redirect_page_is_followed_not_loaded(tmp_path):
    """The root index.html is a meta refresh: loading it in the browser races its navigation (a
    document without a body mid-check), so the check reads its target instead, and fails when the
    target is missing."""
    (tmp_path / "book").mkdir()
    (tmp_path / "index.html").write_text('<meta http-equiv="Refresh" content="0; '
                                         'url=book/intro.html" />\n')
    (tmp_path / "book" / "intro.html").write_text("<html><body><p>intro</p></body></html>")
    (tmp_path / "book" / "old.html").write_text('<META HTTP-EQUIV="refresh" CONTENT="0; '
                                                'URL=gone.html#top">')
    assert check_site.redirect_target(tmp_path, "index.html") == "book/intro.html"
    assert check_site.redirect_target(tmp_path, "book/old.html") == "book/gone.html"
    assert check_site.redirect_target(tmp_path, "book/intro.html") is None


def test_layout_failures_name_the_check_and_what_is_wrong():
    ok = {"column": 688, "overflows": [], "roles": [],
          "figures": [{"src": "a.png", "alt": "a plot", "width": 413}]}
    assert check_site.layout_failures("a.html", ok) == []  # 413 / 688 = 60.03%
    bad = {"column": 688, "overflows": [{"tag": "table", "width": 995, "text": "claim paper"}],
           "roles": ["{term}`nats`", ":::{container}"],
           "figures": [{"src": "b.png", "alt": "", "width": 412},
                       {"src": "c.png", "alt": "ok", "width": 688}]}
    got = check_site.layout_failures("b.html", bad)
    assert [c for c, _ in got] == ["overflow", "raw-myst", "raw-myst", "figure-width"]
    assert got[0][1] == "b.html: a table 995 px wide in a 688 px column: 'claim paper'"
    assert (got[3][1]
            == "b.html: a figure 412 px wide, 60% of the 688 px column (at least 60%): 'b.png'")
    assert {c for c, _ in got} <= set(check_site.LAYOUT_CHECKS)


def test_known_failures_are_reported_as_known_and_a_stale_entry_fails():
    found = [("figure-width", "book/05_cvit.html", "book/05_cvit.html: a figure too narrow"),
             ("overflow", "book/06_report.html", "book/06_report.html: a table too wide")]
    known = {("figure-width",
              "book/05_cvit.html"): "its figure is drawn by Chapter 5, re-run later",
             ("overflow", "book/02_comae.html"): "fixed since"}
    failures, noted = check_site.split_known(found, known)
    assert (noted == ["book/05_cvit.html: a figure too narrow (known: its figure is drawn by "
                      "Chapter 5, re-run later)"])
    assert failures == ["book/06_report.html: a table too wide",
                        "book/02_comae.html: listed in KNOWN_FAILURES for overflow but passes it "
                        "now: remove the entry"]
    assert all(check in check_site.LAYOUT_CHECKS for check, _ in check_site.KNOWN_FAILURES)


LAYOUT_PAGE = """<!DOCTYPE html><html><head>{css}<style>body {{ margin: 0; }}
article.bd-article {{ width: 700px; padding: 0 20px; box-sizing: content-box; }}</style></head><body>
<article class="bd-article">
<div class="cell_output"><div class="pst-scrollable-table-container" style="overflow-x: auto"><table>
<tr><th>claim</th><th>why</th></tr>
<tr><td><code class="docutils literal"><span class="pre">table1.contrastive_lowers_reconstruction_loss_{long}</span></code></td>
<td>{words}</td></tr></table></div></div>
<div class="highlight"><pre>x = "{long}{long}"</pre></div>
<details><summary>code</summary><div class="highlight"><pre>hidden = "{long}{long}"</pre></div></details>
<p>Entropy in {{term}}`nats`, and prose.</p>
<figure><img src="wide.png" alt="a wide plot"></figure>
<div class="cell_output"><img src="narrow.png" alt="a narrow plot"></div>
</article></body></html>"""


def _facts(folder: Path, names: tuple[str, ...], script: str, *arg, images: bool = False) -> dict:
    """``script`` (one of check_site's page scripts, with ``arg``) evaluated on each page
    ``<name>.html`` of ``folder``, served and read in Chromium at 1280 px (after every image has
    loaded, with ``images``), as tools/check_site.py reads the built site."""
    from playwright.sync_api import sync_playwright

    server, base = check_site.serve(folder)
    facts = {}
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=check_site.CHROMIUM_ARGS,
                                        headless=True)
            page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            for name in names:
                page.goto(f"{base}{name}.html", wait_until="load")
                if images:
                    page.wait_for_function("Array.from(document.images).every(i => i.complete)")
                facts[name] = page.evaluate(script, *arg)
            browser.close()
    finally:
        server.shutdown()
    return facts


def _layout_facts(folder: Path, names: tuple[str, ...], images: bool = False) -> dict:
    """check_site.LAYOUT_FACTS of each page ``<name>.html`` of ``folder`` (:func:`_facts`)."""
    return _facts(folder, names, check_site.LAYOUT_FACTS, images=images)


@needs_chromium
def test_layout_facts_in_chromium_and_the_book_css_makes_tables_and_code_fit(tmp_path):
    """Planted: a table with an unbreakable claim id, a code line and a collapsed code line each
    wider than the 700 px column, a raw role, a figure wider and one narrower than 60% of it.
    Without the style sheet all are caught; with the book's _static/copkit.css the table and the
    code fit, and what CSS cannot fix (the role, the narrow figure) is still caught."""
    from PIL import Image

    root = Path(__file__).resolve().parents[1]
    (tmp_path / "_static").mkdir()
    shutil.copy(root / "_static" / "copkit.css", tmp_path / "_static" / "copkit.css")
    Image.new("RGB", (600, 200), "white").save(tmp_path / "wide.png")
    Image.new("RGB", (300, 200), "white").save(tmp_path / "narrow.png")
    fill = {"long": "x" * 150, "words": "a sentence of many words " * 20}
    (tmp_path / "bare.html").write_text(LAYOUT_PAGE.format(css="", **fill))
    (tmp_path / "styled.html").write_text(LAYOUT_PAGE.format(
        css='<link rel="stylesheet" href="_static/copkit.css">', **fill))
    facts = _layout_facts(tmp_path, ("bare", "styled"), images=True)
    bare = facts["bare"]
    assert bare["column"] == 700
    # the collapsed one too
    assert sorted(o["tag"] for o in bare["overflows"]) == ["pre", "pre", "table"]
    assert bare["roles"] == ["{term}`nats`"]
    assert ([(f["alt"], f["width"]) for f in bare["figures"]] == [("a wide plot", 600), ("a narrow "
                                                                                         "plot",
                                                                                         300)])
    checks = [c for c, _ in check_site.layout_failures("bare.html", bare)]
    assert checks == ["overflow", "overflow", "overflow", "raw-myst", "figure-width"]
    styled = facts["styled"]
    assert styled["overflows"] == []
    assert ([c for c, _ in check_site.layout_failures("styled.html", styled)]
            == ["raw-myst", "figure-width"])


def test_findings_failures_need_the_box_first_on_the_intro_and_chapters_only():
    first = {"findings": {"box": True, "first": "code cell", "before": True}}
    late = {"findings": {"box": True, "first": "code cell", "before": False}}
    none = {"findings": {"box": False, "first": "figure", "before": False}}
    assert check_site.findings_failures("book/01_entropy.html", first, required=True) == []
    assert check_site.findings_failures("book/01_entropy.html", late, required=True) == [
        ("findings-first", "book/01_entropy.html: its 'What we found' box comes after its first "
                           "code cell")]
    assert check_site.findings_failures("book/intro.html", none, required=True) == [
        ("findings-first", "book/intro.html: no 'What we found' box (an admonition of class "
                           "'findings')")]
    assert check_site.findings_failures("book/glossary.html", none, required=False) == []
    assert ([check_site.needs_findings(p) for p in ("book/intro.html", "book/03_rank.html",
                                                    "book/07_performance.html", "book/api.html")]
            == [True, True, False, False])


FINDINGS_PAGE = """<!DOCTYPE html><html><head></head><body><article class="bd-article">
<section><h1>1. A chapter</h1><p>Intro.</p>{before}
<div class="cell docutils container"><div class="cell_input"><pre>x = 1</pre></div></div>
<figure><img src="data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8/5+hHgAHggJ/PchI7wAAAABJRU5ErkJggg==" alt="a plot"></figure>
{after}</section></article></body></html>"""
BOX = ('<div class="findings admonition"><p class="admonition-title">What we found</p>'
       '<p>A holds.</p></div>')


@needs_chromium
def test_findings_first_in_chromium_on_a_passing_and_a_failing_page(tmp_path):
    """Planted: a page whose box (as myst-nb renders a pasted admonition of class findings)
    opens it, one whose box follows its first code cell, one without a box."""

    (tmp_path / "good.html").write_text(FINDINGS_PAGE.format(before=BOX, after=""))
    (tmp_path / "late.html").write_text(FINDINGS_PAGE.format(before="", after=BOX))
    (tmp_path / "none.html").write_text(FINDINGS_PAGE.format(before="", after=""))
    facts = _layout_facts(tmp_path, ("good", "late", "none"))
    assert facts["good"]["findings"] == {"box": True, "first": "code cell", "before": True}
    assert check_site.findings_failures("book/01_a.html", facts["good"], required=True) == []
    assert facts["late"]["findings"] == {"box": True, "first": "code cell", "before": False}
    assert [c for c, _ in check_site.findings_failures("book/01_a.html", facts["late"], True)] == [
        "findings-first"]
    assert facts["none"]["findings"]["box"] is False
    assert "no 'What we found' box" in check_site.findings_failures("book/01_a.html",
                                                                   facts["none"], True)[0][1]
