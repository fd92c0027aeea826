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


@pytest.mark.skipif(not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)), reason="no Chromium")
@pytest.mark.skipif(importlib.util.find_spec("playwright") is None, reason="no playwright")
@pytest.mark.skipif(_mathjax_dir() is None, reason="sphinx-mathjax-offline is not installed")
def test_math_facts_in_chromium(tmp_path):
    from playwright.sync_api import sync_playwright

    (tmp_path / "_static").mkdir()
    (tmp_path / "_static" / "mathjax").symlink_to(_mathjax_dir())
    (tmp_path / "good.html").write_text(PAGE.format(script=SCRIPT, extra=""))
    (tmp_path / "no-mathjax.html").write_text(PAGE.format(script="", extra=""))
    (tmp_path
     / "stray.html").write_text(PAGE.format(script=SCRIPT, extra=": a raw $\\alpha_i$ left over"))
    server, base = check_site.serve(tmp_path)
    facts = {}
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=check_site.CHROMIUM_ARGS,
                                        headless=True)
            page = browser.new_page()
            for name in ("good", "no-mathjax", "stray"):
                page.goto(f"{base}{name}.html", wait_until="load")
                facts[name] = page.evaluate(check_site.MATH_FACTS, 3000)
            browser.close()
    finally:
        server.shutdown()
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
