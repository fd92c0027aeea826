"""Check a built site in a real headless browser (Chromium through Playwright).

Serves the site folder on localhost and, in Chromium:

- visits every page of the site (every .html file outside the ``_static``-like folders): each must
  answer HTTP 200 and log no console error or uncaught exception of its own (requests to other
  hosts are blocked, and their failures ignored: the check runs offline);
- follows no link but checks every internal one: the file it points to exists, and so does the
  ``#anchor`` on the target page (an element with that id, or an ``<a name>``);
- waits for every ``<img>`` and requires it to have loaded (``naturalWidth > 0``), and requires each
  chapter to show at least as many images as its notebook (``_sources/``) has image outputs, and
  as many captioned figures with alt text as it has cells with MyST-NB figure metadata;
- waits for MathJax on every page with equations and requires each of them typeset (a MathJax
  ``mjx-container`` inside every ``.math`` element) and no LaTeX left in the text (``\\(``,
  ``\\[``, or ``$...$`` around a command); one chapter (``--math-page``, Chapter 1) must show at
  least one typeset equation, so a site that lost its equations or its MathJax does not pass;
- lays every page out at 1280 px wide, with every collapsed cell opened, and requires that no table
  or code block is wider than the text column (the article's content box) or scrolls sideways,
  that no raw MyST role or directive (``{ref}`...```, ``:::{container}``) is left in the text, and
  that every figure (an image in a figure or a cell's output) is rendered at least
  ``MIN_FIGURE_SHARE`` (60%) of the column wide; and that the introduction and every chapter
  (:func:`needs_findings`) open with their "What we found" box (an admonition of class
  ``findings``, :mod:`copkit.findings`) before their first figure or code cell. A page that cannot pass one of these until its
  chapter is re-run is listed, by check and page, in :data:`KNOWN_FAILURES`: its failures are
  reported as known, not as failures, and an entry that no longer fails is itself a failure (so
  the list only shrinks);
- searches for a word (``PageRank``) on the search page and requires results;
- saves a screenshot of one chapter.

    python tools/check_site.py .scratch/site/_build/html --out .scratch/site-check

Chromium comes from the system (Debian: ``apt-get install chromium``), never from
``playwright install``; ``--chromium`` or ``$CHROMIUM`` names another binary. Exit status 1 when a
check fails, with every failure listed.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import os
import re
import shutil
import sys
import threading
import time
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlparse

SKIP_DIRS = {"_static", "_sources", "_images", "_downloads", "_sphinx_design_static",
             "_panels_static"}
# Console errors that are not the site's: pydata-sphinx-theme logs this on a reader's first visit
# (no mode stored yet) and falls back to "auto".
HARMLESS = ("Got invalid theme mode: . Resetting to auto.",)
#: The smallest width of a rendered figure, as a share of the text column.
MIN_FIGURE_SHARE = 0.6
#: The layout checks, by name: what :func:`layout_failures` reports.
LAYOUT_CHECKS = ("overflow", "raw-myst", "figure-width", "findings-first")
#: The class of the "What we found" box (copkit.findings.FINDINGS_CLASS; this tool imports no copkit).
FINDINGS_CLASS = "findings"
#: Chapter pages that need no findings box, and why.
NO_FINDINGS = {"07_performance": "measures the book's run times, not the paper's claims"}
#: Layout failures that only re-running a chapter can fix (its figures and outputs are made by the
#: chapter, not by the style sheet), by (check, page): why. Reported as known, never skipped in
#: silence; an entry whose page passes is a failure, so that the list is emptied as the chapters
#: are re-run. Empty: every page of the current book passes every layout check.
KNOWN_FAILURES: dict[tuple[str, str], str] = {}
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


class _Server(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        # The browser drops a response it no longer needs (a page left while its images load):
        # the broken pipe is not the site's fault, and its traceback would bury the report.
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


def serve(folder: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    """Serve ``folder`` on a free localhost port in a daemon thread; return the server and its
    URL."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = _Server(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def site_pages(html: Path) -> list[str]:
    """Every page of the built site, as paths relative to its root."""
    pages = []
    for path in sorted(html.rglob("*.html")):
        rel = path.relative_to(html)
        if rel.parts[0] in SKIP_DIRS or rel.parts[0].startswith("."):
            continue
        pages.append(rel.as_posix())
    return pages


def redirect_target(html: Path, page: str) -> str | None:
    """The page a pure redirect (``<meta http-equiv="Refresh" content="0; url=...">``, the root
    index.html that Jupyter Book writes) sends the browser to, relative to the site's root; None
    for an ordinary page. A browser check of a redirect would race its navigation, so the check
    follows the target instead (every page is checked in its own right)."""
    text = (html / page).read_text(errors="ignore")[:2000]
    m = re.search(r'<meta\s+http-equiv="refresh"\s+content="\d+;\s*url=([^"]+)"', text,
                  re.IGNORECASE)
    if not m:
        return None
    return (Path(page).parent / m.group(1).split("#")[0]).as_posix()


def notebook_expectations(html: Path, page: str) -> tuple[int, int]:
    """(image outputs, cells with MyST-NB figure metadata) of the notebook behind a page, from the
    copy Sphinx keeps in ``_sources/``; (0, 0) for pages that are not notebooks."""
    src = html / "_sources" / Path(page).with_suffix(".ipynb")
    if not src.exists():
        return 0, 0
    images = captioned = 0
    for cell in json.loads(src.read_text())["cells"]:
        if cell["cell_type"] != "code":
            continue
        tags = cell.get("metadata", {}).get("tags", [])
        if {"remove-output", "remove-cell", "remove_output", "remove_cell"} & set(tags):
            continue
        n = sum(1 for o in cell.get("outputs", [])
                if o.get("output_type") in ("display_data", "execute_result")
                and any(k.startswith("image/") for k in o.get("data", {})))
        images += n
        if n and cell.get("metadata", {}).get("mystnb", {}).get("figure", {}).get("caption"):
            captioned += n
    return images, captioned


def target_exists(html: Path, path: str) -> bool:
    """Does the URL path (relative to the site root) name a file of the built site?"""
    local = html / unquote(path)
    if local.is_dir():
        local = local / "index.html"
    return local.is_file()


PAGE_FACTS = """() => ({
  ids: Array.from(document.querySelectorAll('[id]')).map(e => e.id)
        .concat(Array.from(document.querySelectorAll('a[name]')).map(e => e.getAttribute('name'))),
  links: Array.from(document.querySelectorAll('a[href]')).map(a => [a.getAttribute('href'), a.href]),
  images: Array.from(document.images).map(i => ({src: i.currentSrc || i.src, ok: i.complete && i.naturalWidth > 0,
                                                  alt: i.getAttribute('alt') || '',
                                                  output: !!i.closest('.cell_output, .output')})),
  captioned: Array.from(document.querySelectorAll('figure')).filter(f =>
        f.querySelector('figcaption') && f.querySelector('figcaption').textContent.trim() &&
        f.querySelector('img') && (f.querySelector('img').getAttribute('alt') || '').trim()).length,
})"""  # noqa: E501 - JavaScript run in the page


# Wait for MathJax (bundled in _static/mathjax by sphinx-mathjax-offline) to typeset the page, then
# report its equations: how many, how many typeset, the untypeset ones and any LaTeX left in the
# text.
MATH_FACTS = r"""async (timeoutMs) => {
  const maths = Array.from(document.querySelectorAll('.math'));
  let waited = 'no equations';
  if (maths.length) {
    const t0 = Date.now();
    while (!(window.MathJax && MathJax.startup && MathJax.startup.promise) && Date.now() - t0 < timeoutMs)
      await new Promise(r => setTimeout(r, 50));
    if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
      await Promise.race([MathJax.startup.promise, new Promise(r => setTimeout(r, timeoutMs))]);
      waited = 'typeset';
    } else {
      waited = 'MathJax never loaded';
    }
  }
  const skip = 'pre, code, script, style, textarea, mjx-container, .math, .highlight';
  const walker = document.createTreeWalker(document.body || document.documentElement, NodeFilter.SHOW_TEXT, {acceptNode: n =>
      n.parentElement && n.parentElement.closest(skip) ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT});
  const latex = /\\\(|\\\[|\$\$|\$[^$\n]*\\[A-Za-z]+[^$\n]*\$/;
  const stray = [];
  while (walker.nextNode()) {
    const text = walker.currentNode.textContent;
    if (latex.test(text)) stray.push(text.trim().slice(0, 80));
  }
  return {count: maths.length, waited,
          typeset: maths.filter(m => m.querySelector('mjx-container')).length,
          raw: maths.filter(m => !m.querySelector('mjx-container')).map(m => m.textContent.trim().slice(0, 80)),
          stray};
}"""  # noqa: E501 - JavaScript run in the page


# Open every collapsed cell (hidden inputs and outputs), then measure the text column (the content
# box of the article), every table and code block, the text for raw MyST, and every figure.
LAYOUT_FACTS = r"""() => {
  document.querySelectorAll('details').forEach(d => { d.open = true; });
  const article = document.querySelector('article.bd-article') || document.querySelector('main') || document.body;
  const cs = getComputedStyle(article);
  const box = article.getBoundingClientRect();
  const left = box.left + parseFloat(cs.paddingLeft) + parseFloat(cs.borderLeftWidth);
  const right = box.right - parseFloat(cs.paddingRight) - parseFloat(cs.borderRightWidth);
  const describe = el => (el.innerText || el.textContent || '').trim().replace(/\s+/g, ' ').slice(0, 60);
  const overflows = [];
  for (const el of article.querySelectorAll('table, pre')) {
    const r = el.getBoundingClientRect();
    if (!r.width && !r.height) continue;
    const scroller = el.tagName === 'TABLE' ? (el.closest('.pst-scrollable-table-container') || el.parentElement) : el;
    const wide = Math.max(r.width, scroller.scrollWidth);
    if (r.left < left - 1 || r.right > right + 1 || scroller.scrollWidth > scroller.clientWidth + 1)
      overflows.push({tag: el.tagName.toLowerCase(), width: Math.round(wide), text: describe(el)});
  }
  const skip = 'pre, code, script, style, textarea, .highlight';
  const raw = /\{[a-z][a-z0-9_:-]*\}`[^`]*`|(:::|```)\{[a-z][a-z0-9_:-]*\}/;
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT, {acceptNode: n =>
      n.parentElement && n.parentElement.closest(skip) ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT});
  const roles = [];
  while (walker.nextNode()) {
    const m = walker.currentNode.textContent.match(raw);
    if (m) roles.push(m[0].slice(0, 80));
  }
  const figures = Array.from(article.querySelectorAll('img')).filter(i => i.closest('figure, .cell_output, .output'))
    .map(i => ({src: i.getAttribute('src') || '', alt: (i.getAttribute('alt') || '').slice(0, 60),
                width: Math.round(i.getBoundingClientRect().width)}));
  const found = article.querySelector('.admonition.FINDINGS');
  const first = article.querySelector('figure, img, div.cell');
  const findings = {box: !!found, first: first ? (first.matches('div.cell') ? 'code cell' : 'figure') : null,
                    before: !!found && (!first || !!(found.compareDocumentPosition(first) & Node.DOCUMENT_POSITION_FOLLOWING))};
  return {column: Math.round(right - left), overflows, roles, figures, findings};
}""".replace("FINDINGS", FINDINGS_CLASS)


def layout_failures(rel: str, facts: dict,
                    min_share: float = MIN_FIGURE_SHARE) -> list[tuple[str, str]]:
    """What is wrong with a page's layout, from :data:`LAYOUT_FACTS`, as (check, message) pairs
    with the check one of :data:`LAYOUT_CHECKS`: a table or code block wider than the text column
    (or scrolling sideways), raw MyST left in the text, a figure narrower than ``min_share`` of
    the column.

    >>> layout_failures("a.html", {"column": 700, "overflows": [{"tag": "pre", "width": 900, "text": "x = 1"}],
    ...                            "roles": ["{ref}`ch1-eq1`"], "figures": [{"src": "f.png", "alt": "a plot", "width": 400}]})
    ... # doctest: +NORMALIZE_WHITESPACE
    [('overflow', "a.html: a pre 900 px wide in a 700 px column: 'x = 1'"),
     ('raw-myst', "a.html: raw MyST in the text: '{ref}`ch1-eq1`'"),
     ('figure-width', "a.html: a figure 400 px wide, 57% of the 700 px column (at least 60%): 'a plot'")]
    """
    out = [("overflow", f"{rel}: a {o['tag']} {o['width']} px wide in a {facts['column']} px "
                        f"column: {o['text']!r}")
           for o in facts["overflows"]]
    out += [("raw-myst", f"{rel}: raw MyST in the text: {text!r}") for text in facts["roles"]]
    column = facts["column"]
    for f in facts["figures"]:
        if column and f["width"] < min_share * column:
            out.append(("figure-width",
                        f"{rel}: a figure {f['width']} px wide, {f['width'] / column:.0%} of the "
                                        f"{column} px column (at least {min_share:.0%}): "
                                        f"{f['alt'] or f['src']!r}"))
    return out


def needs_findings(rel: str) -> bool:
    """Must the page open with a findings box? The introduction and every chapter page
    (``NN_name.html``), but those in :data:`NO_FINDINGS`.

    >>> [needs_findings(p) for p in ("book/intro.html", "book/05_cvit.html", "book/07_performance.html", "book/glossary.html")]
    [True, True, False, False]
    """
    stem = Path(rel).stem
    return stem == "intro" or (re.fullmatch(r"\d\d_\w+", stem) is not None and stem not in NO_FINDINGS)


def findings_failures(rel: str, facts: dict, required: bool) -> list[tuple[str, str]]:
    """("findings-first", message) when a page that must open with its findings box
    (``required``) has none, or has it after its first figure or code cell, from the
    ``findings`` of :data:`LAYOUT_FACTS`.

    >>> findings_failures("a.html", {"findings": {"box": True, "first": "figure", "before": False}}, True)
    [('findings-first', "a.html: its 'What we found' box comes after its first figure")]
    """
    f = facts.get("findings") or {"box": False, "first": None, "before": False}
    if not required:
        return []
    if not f["box"]:
        return [("findings-first", f"{rel}: no 'What we found' box (an admonition of class "
                                   f"{FINDINGS_CLASS!r})")]
    if not f["before"]:
        return [("findings-first", f"{rel}: its 'What we found' box comes after its first "
                                   f"{f['first']}")]
    return []


def split_known(found: list[tuple[str, str, str]], known: dict[tuple[str, str], str]
                ) -> tuple[list[str], list[str]]:
    """(failures, known) from layout failures found as (check, page, message): a failure whose
    (check, page) is in ``known`` is reported as known, with the reason; an entry of ``known``
    that found nothing is a failure (remove it: the page passes now).

    >>> split_known([("overflow", "a.html", "a.html: too wide"), ("overflow", "b.html", "b.html: too wide")],
    ...             {("overflow", "a.html"): "until Chapter 2 is re-run", ("figure-width", "c.html"): "old"})
    (['b.html: too wide', 'c.html: listed in KNOWN_FAILURES for figure-width but passes it now: remove the entry'], ['a.html: too wide (known: until Chapter 2 is re-run)'])
    """
    failures, noted = [], []
    hit = set()
    for check, page, message in found:
        if (check, page) in known:
            hit.add((check, page))
            noted.append(f"{message} (known: {known[check, page]})")
        else:
            failures.append(message)
    failures += [f"{page}: listed in KNOWN_FAILURES for {check} but passes it now: remove the entry"
                 for check, page in known if (check, page) not in hit]
    return failures, noted


def math_failures(rel: str, facts: dict, must_have: bool) -> list[str]:
    """What is wrong with a page's equations, from :data:`MATH_FACTS`: untypeset ``.math`` elements
    (MathJax missing, blocked or failing), LaTeX left in the text, and, where ``must_have``, a page
    without a single typeset equation."""
    out = []
    if facts["raw"]:
        out.append(f"{rel}: {len(facts['raw'])} of {facts['count']} equations not typeset "
                   f"({facts['waited']}), first: {facts['raw'][0]!r}")
    out += [f"{rel}: LaTeX left in the text: {text!r}" for text in facts["stray"][:5]]
    if must_have and not facts["typeset"]:
        out.append(f"{rel}: no typeset equation (MathJax output) on the page that must show "
                   "equations")
    return out


def check(html: Path, out: Path, chromium: str, screenshot_page: str, query: str, timeout_ms: int,
          math_page: str = "01_entropy") -> list[str]:
    from playwright.sync_api import sync_playwright

    failures: list[str] = []
    pages = site_pages(html)
    if not pages:
        return [f"no pages in {html}"]
    server, base = serve(html)
    facts: dict[str, dict] = {}
    layout: list[tuple[str, str, str]] = []
    equations, math_seen = 0, False
    started = time.perf_counter()
    try:
        with sync_playwright() as p:
            # a fresh profile: Playwright gives launch() a new temporary user-data dir each time
            browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            # offline: only this server answers; everything else is refused at once
            context.route("**/*",
                          lambda route: route.continue_() if route.request.url.startswith(base)
                          else route.abort())
            page = context.new_page()
            errors: list[str] = []

            def on_console(msg):
                url = (msg.location or {}).get("url", "")
                if msg.type == "error" and (not url or url.startswith(base)) \
                        and "net::ERR_FAILED" not in msg.text and msg.text not in HARMLESS:
                    errors.append(f"console: {msg.text}")

            page.on("console", on_console)
            page.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))

            for rel in pages:
                errors.clear()
                target = redirect_target(html, rel)
                if target is not None:
                    if not (html / target).is_file():
                        failures.append(f"{rel}: redirects to {target}, which does not exist")
                    continue
                response = page.goto(base + rel, wait_until="load", timeout=timeout_ms)
                if response is None or response.status != 200:
                    failures.append(f"{rel}: HTTP {None if response is None else response.status}")
                    continue
                try:
                    page.wait_for_function("Array.from(document.images).every(i => i.complete)",
                                           timeout=timeout_ms)
                except Exception:  # reported below, image by image
                    pass
                f = page.evaluate(PAGE_FACTS)
                facts[rel] = f
                math = page.evaluate(MATH_FACTS, timeout_ms)
                failures += math_failures(rel, math, must_have=Path(rel).stem == math_page)
                equations += math["typeset"]
                if Path(rel).stem == math_page:
                    math_seen = True
                failures += [f"{rel}: {e}" for e in errors]
                laid = page.evaluate(LAYOUT_FACTS)
                layout += [(check, rel, message)
                           for check, message in (layout_failures(rel, laid)
                                                  + findings_failures(rel, laid, needs_findings(rel)))]
                for img in f["images"]:
                    if img["src"].startswith(base) and not img["ok"]:
                        failures.append(f"{rel}: image did not load: {img['src'][len(base):]}")
                want_images, want_captioned = notebook_expectations(html, rel)
                shown = sum(1 for img in f["images"] if img["output"] and img["ok"])
                if shown < want_images:
                    failures.append(f"{rel}: shows {shown} output images, its notebook has "
                                    f"{want_images}")
                if f["captioned"] < want_captioned:
                    failures.append(f"{rel}: {f['captioned']} captioned figures with alt text, "
                                    f"its notebook asks for {want_captioned}")

            if not math_seen:
                failures.append(f"no page named {math_page} to check its equations")

            # every internal link: the file exists, and so does the anchor on the target page
            checked = set()
            for rel, f in facts.items():
                for raw, absolute in f["links"]:
                    if not absolute.startswith(base) or raw.startswith(("javascript:", "mailto:")):
                        continue
                    url, fragment = urldefrag(absolute)
                    path = urlparse(url).path.lstrip("/")
                    key = (path, fragment)
                    if key in checked:
                        continue
                    checked.add(key)
                    if not target_exists(html, path):
                        failures.append(f"{rel}: broken link {raw!r} (no file {path})")
                        continue
                    target = (path if path.endswith(".html")
                              else (path.rstrip("/") + "/index.html" if path else "index.html"))
                    if (fragment and target in facts
                        and unquote(fragment) not in facts[target]["ids"]):
                        failures.append(f"{rel}: broken anchor {raw!r} (no id {fragment!r} on "
                                        f"{target})")

            # search
            errors.clear()
            page.goto(f"{base}search.html?q={query}", wait_until="load", timeout=timeout_ms)
            try:
                page.wait_for_selector("#search-results ul.search li", timeout=timeout_ms)
                hits = page.locator("#search-results ul.search li").count()
            except Exception:
                hits = 0
            if not hits:
                failures.append(f"search.html: no results for {query!r}")
            failures += [f"search.html?q={query}: {e}" for e in errors]

            # screenshot of one chapter
            shot = [rel for rel in pages if Path(rel).stem == screenshot_page]
            if shot:
                out.mkdir(parents=True, exist_ok=True)
                page.goto(base + shot[0], wait_until="load", timeout=timeout_ms)
                path = out / f"screenshot-{screenshot_page}.png"
                page.screenshot(path=str(path))
                print(f"screenshot: {os.path.relpath(path)}")
            else:
                failures.append(f"no page named {screenshot_page} to screenshot")
            browser.close()
    finally:
        server.shutdown()
    layout_bad, layout_known = split_known(layout, KNOWN_FAILURES)
    failures += layout_bad
    for note in layout_known:
        print(f"known failure: {note}")
    links = sum(len(f["links"]) for f in facts.values())
    images = sum(len(f["images"]) for f in facts.values())
    print(f"checked {len(facts)} pages, {links} links ({len(checked)} distinct internal targets), "
          f"{images} images, {equations} typeset equations, layout at 1280 px ({len(layout_bad)} "
          f"failures, {len(layout_known)} known), search for {query!r}: {hits} results, "
          f"in {time.perf_counter() - started:.1f} s")
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("html", help="the built site, e.g. .scratch/site/_build/html")
    parser.add_argument("--out", default=".scratch/site-check", help="folder for the screenshot")
    parser.add_argument("--screenshot", default="03_rank",
                        help="the page (file stem) to screenshot")
    parser.add_argument("--query", default="PageRank", help="a word the search must find")
    parser.add_argument("--math-page", default="01_entropy",
                        help="the page (file stem) that must show typeset equations")
    parser.add_argument("--chromium", default=os.environ.get("CHROMIUM", "/usr/bin/chromium"))
    parser.add_argument("--timeout", type=float, default=20.0,
                        help="seconds allowed per page load or wait")
    args = parser.parse_args()

    html = Path(args.html)
    if not (html / "index.html").exists():
        print(f"{html} holds no built site (no index.html): build it first (make site-check)",
              file=sys.stderr)
        return 1
    if not Path(args.chromium).exists() and not shutil.which(args.chromium):
        print(f"no Chromium at {args.chromium}: apt-get install chromium (or set CHROMIUM)",
              file=sys.stderr)
        return 1
    failures = check(html, Path(args.out), args.chromium, args.screenshot, args.query,
                     int(args.timeout * 1000), args.math_page)
    if failures:
        print(f"\n{len(failures)} problem(s):", file=sys.stderr)
        for f in failures:
            print(f"  {f}", file=sys.stderr)
        return 1
    print("site check: all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
