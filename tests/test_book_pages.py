"""The book's reference pages: one API page per copkit module, in the table of contents; the
glossary defines the terms the issue found undefined, and every {term} the pages link to; the
module docstrings' equations that book/_ext/copkit_api.py typesets are still in the docstrings."""

import importlib
import inspect
import pkgutil
import re
import sys
from pathlib import Path

import pytest
import yaml

import copkit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "book" / "_ext"))
import copkit_api  # noqa: E402

MODULES = sorted(m.name for m in pkgutil.iter_modules(copkit.__path__)
                 if not m.name.startswith("_"))


def _toc_files(node) -> list[str]:
    out = []
    if isinstance(node, dict):
        if "file" in node:
            out.append(node["file"])
        for value in node.values():
            out += _toc_files(value)
    elif isinstance(node, list):
        for value in node:
            out += _toc_files(value)
    return out


def test_every_module_has_its_own_api_page_in_the_toc():
    toc = _toc_files(yaml.safe_load((ROOT / "_toc.yml").read_text()))
    for name in MODULES:
        page = ROOT / "book" / "api" / f"{name}.md"
        assert page.exists(), name
        assert f".. automodule:: copkit.{name}\n" in page.read_text()
        assert f"book/api/{name}" in toc, name
        assert f"<api/{name}>" in (ROOT / "book" / "api.md").read_text(), name
    # no page of a gone module
    assert sorted(p.stem for p in (ROOT / "book" / "api").glob("*.md")) == MODULES
    assert "book/glossary" in toc


def _glossary_terms() -> set[str]:
    text = (ROOT / "book" / "glossary.md").read_text()
    terms = set()
    for block in re.findall(r":::\{glossary\}\n(.*?)\n:::", text, flags=re.S):
        terms |= {line.strip().lower() for line in block.splitlines() if line.strip()
                  and not line.startswith(" ")}
    return terms


def test_the_glossary_defines_the_terms_the_issue_found_undefined():
    terms = _glossary_terms()
    for term in ("nats", "ema", "cfg", "fid", "is", "kneedle", "auc", "holm", "welch", "power",
                 "collapse order", "pagerank", "comae", "mar", "cvit"):
        assert term in terms, term


def _links() -> list[tuple[str, str]]:
    """Every {term} target written in the book's Markdown and in the chapter sources."""
    found = []
    for path in [*sorted((ROOT / "book").glob("*.md")), *sorted((ROOT / "chapters").glob("*.py"))]:
        for m in re.finditer(r"\{term\}`([^`]+)`", path.read_text()):
            target = re.search(r"<([^>]+)>$", m.group(1))
            found.append((path.name, (target.group(1) if target else m.group(1)).strip().lower()))
    return found


def test_every_term_linked_is_in_the_glossary():
    terms = _glossary_terms()
    links = _links()
    assert links
    assert [(page, t) for page, t in links if t not in terms] == []


@pytest.mark.parametrize("page", ["intro.md", "01_entropy.py", "06_report.py", "07_performance.py"])
def test_the_intro_and_chapters_1_6_7_link_terms_at_first_use(page):
    """Each links some terms, and each term it links is linked once (at its first use)."""
    linked = [t for p, t in _links() if p == page]
    assert len(linked) >= 3, page
    assert len(linked) == len(set(linked)), sorted(t for t in linked if linked.count(t) > 1)


@pytest.mark.parametrize("module", sorted(copkit_api.MODULE_MATH))
def test_the_equations_the_api_typesets_are_in_their_docstrings(module):
    """book/_ext/copkit_api.py rewrites these plain-text equations as math; each must be there
    (the build warns, and fails with -W, when one is not), and the rewrite must leave no plain
    text."""
    lines = inspect.cleandoc(importlib.import_module(module).__doc__).splitlines()
    before = list(lines)
    copkit_api._module_math(None, "module", module, None, {}, lines)
    for plain, latex in copkit_api.MODULE_MATH[module]:
        if isinstance(plain, tuple):
            assert [line.strip() for line in before].count(plain[0]) == 1
            assert ".. math::" in lines and not any(line.strip() == plain[0] for line in lines)
        else:
            assert any(plain in line for line in before), plain
            assert not any(plain in line for line in lines) and any(latex in line for line in lines)
