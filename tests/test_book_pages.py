"""The book's reference pages: one API page per copkit module, in the table of contents; the
glossary defines the terms the issue found undefined, and every {term} the pages link to; the
docstrings' equations are typeset as reST math, not written as plain text."""

import ast
import os
import pkgutil
import re
import sys
from pathlib import Path

import pytest
import yaml

import copkit

ROOT = Path(__file__).resolve().parents[1]

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


#: The pages whose glossary links are checked (the chapter sources, chapters/*.py, are what is
#: read, not the executed notebooks in book/: the sources are where the links are written).
LINKING_PAGES = ["intro.md", "01_entropy.py", "02_comae.py", "03_rank.py", "04_cmar.py",
                 "05_cvit.py", "06_report.py", "07_performance.py"]


@pytest.mark.parametrize("page", LINKING_PAGES)
def test_the_intro_and_the_chapters_link_terms_at_first_use(page):
    """Each links some terms, and each term it links is linked once (at its first use)."""
    linked = [t for p, t in _links() if p == page]
    assert len(linked) >= 3, page
    assert len(linked) == len(set(linked)), sorted(t for t in linked if linked.count(t) > 1)


def prose(path: Path) -> str:
    """The running text of a page as a reader meets it: a Markdown page whole, a chapter source's
    Markdown cells with their ``# `` taken off; headings (the title included) left out."""
    text = path.read_text()
    if path.suffix == ".py":
        lines, markdown = [], False
        for line in text.splitlines():
            if line.startswith("# %%"):
                markdown = "[markdown]" in line
            elif markdown and line.startswith("#"):
                lines.append(line[2:])
        text = "\n".join(lines)
    return "\n".join(line for line in text.splitlines() if not line.startswith("#"))


def unlinked_before_link(text: str) -> list[str]:
    """The linked words of ``text`` (a {term}'s shown text) that the text already used, unlinked,
    before the link: the link is then not at the word's first use. Code, maths, citations and the
    text of a Markdown link (the paper's title) do not count as uses."""
    found = []
    for m in re.finditer(r"\{term\}`([^`<]+?)\s*(?:<[^>]+>)?`", text):
        word = m.group(1).strip()
        before = re.sub(r"\{\w+\}`[^`]+`|`[^`]*`|\$[^$]*\$|\[[^\]]*\]\([^)]*\)", "",
                        text[:m.start()])
        if re.search(r"(?<![\w-])" + re.escape(word) + r"(?![\w-])", before, flags=re.I):
            found.append(word)
    return found


def test_unlinked_before_link_finds_a_word_used_before_its_link_only():
    text = ("A patch is small. Its {term}`patches <patch>` and the {term}`collapse order` "
            "are linked; `seed` and $seed$ in code or maths do not count, nor {cite}`seed2020`, "
            "so {term}`seeds <seed>` is first. The {term}`CoMAE`; and CoMAE again. "
            "[*The Collapse*](https://x) is a title: {term}`collapse`.")
    assert unlinked_before_link(text) == []  # "patch" is not "patches"
    assert unlinked_before_link("The collapse order, then the {term}`collapse order`.") == [
        "collapse order"]


#: Pages whose prose uses a word before the link that claims its first use, to be moved (issue
#: 27). An entry whose links are all at first use fails, so the set only shrinks.
LINKED_LATE: set[str] = set()


@pytest.mark.parametrize("page", LINKING_PAGES)
def test_each_term_is_linked_at_its_first_use_in_the_prose(page):
    """A link where the page first uses the word, not a later one: read in the chapter source."""
    path = ROOT / ("book" if page.endswith(".md") else "chapters") / page
    late = unlinked_before_link(prose(path))
    if page in LINKED_LATE:
        assert late, f"{page} links every term at its first use now: remove it from LINKED_LATE"
    else:
        assert late == [], f"{page}: used before the link: {late}"


# --- the equations of the docstrings, typeset on the API pages (reST math, MathJax)

#: What an equation written as plain text looks like once code literals, roles (math, func, ...),
#: math blocks and doctest examples are taken out: the spellings copkit's docstrings used before
#: their equations were typeset.
PLAIN_MATH = {
    "a function written out": re.compile(
        r"\b(sqrt|exp|log|cos|tanh|arccos|floor|ceil|diag)\s?\(|\blog det\b"),
    "a sum or product written sum_/prod_": re.compile(r"\b(sum|prod)_"),
    "a power written ^ or **": re.compile(r"[\w)\]]\^[\w({-]|\w\*\*\w|\w \*\* \w"),
    "a subscript in braces": re.compile(r"\w_\{"),
    "a norm written ||": re.compile(r"\|\|"),
    "a Greek letter spelled out": re.compile(r"\b(alpha_bar|Sigma_\w|beta_t|eps_\w|sigma\^)"),
}
#: A paper equation named in the prose: "Eq. 4", "Eq. 3-5", "Eqs. 11-15".
NAMES_EQUATION = re.compile(r"\bEqs?\. \d")
HAS_MATH = re.compile(r":math:`|^\s*\.\. math::", re.M)
_CODE_OR_ROLE = re.compile(r"``.+?``|:[\w:.-]+:`[^`]*`", re.S)


def _api_texts(module: str) -> list[tuple[str, str]]:
    """(where, text) of what the API page of ``copkit.<module>`` renders from the source: the
    docstrings of the module and of its public classes, functions, methods and properties, and
    every ``#:`` comment block. Read with ``ast`` (nothing is imported)."""
    path = Path(copkit.__file__).parent / f"{module}.py"
    source = path.read_text()
    out = []

    def visit(node, prefix: str) -> None:
        doc = ast.get_docstring(node, clean=True)
        if doc:
            out.append((prefix or module, doc))
        for child in getattr(node, "body", []):
            if (isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                    and not child.name.startswith("_")):
                visit(child, f"{prefix}.{child.name}" if prefix else child.name)

    visit(ast.parse(source), "")
    block: list[str] = []  # a comment of its own lines, before what it documents
    for number, line in enumerate(source.splitlines() + [""], 1):
        code, mark, comment = line.partition("#:")
        if mark and not code.strip():
            block.append(comment.strip())
            continue
        if block:
            out.append((f"{module}.py:{number - len(block)}", "\n".join(block)))
            block = []
        if mark:  # a comment after the code on its line
            out.append((f"{module}.py:{number}", comment.strip()))
    return out


def _prose(text: str) -> str:
    """``text`` without its code, roles, ``.. math::`` blocks and doctest examples."""
    kept, skip_indent, in_example = [], None, False
    for line in text.splitlines():
        indent = len(line) - len(line.lstrip())
        if skip_indent is not None:
            if not line.strip() or indent > skip_indent:
                continue
            skip_indent = None
        if line.lstrip().startswith(".. math::"):
            skip_indent = indent
            continue
        if line.lstrip().startswith(">>>"):
            in_example = True
        if in_example:
            in_example = bool(line.strip())
            continue
        kept.append(line)
    return _CODE_OR_ROLE.sub(" ", "\n".join(kept))


@pytest.mark.parametrize("module", MODULES)
def test_docstring_equations_are_typeset(module):
    """The API pages show copkit's equations as math (issue: "the API reference ... with
    docstring math typeset"): a formula is written with the ``:math:`` role or a ``.. math::``
    block, never as plain text such as ``sqrt(alpha_bar_t) x`` or ``Sigma_{n|S}``; and a
    docstring or ``#:`` comment whose first line names one of the paper's equations (what it
    implements: "Eq. 4: ...", "L_r (Eq. 5) ...") shows that equation or its symbol as math."""
    plain, unnamed = [], []
    for where, text in _api_texts(module):
        prose = _prose(text)
        for what, pattern in PLAIN_MATH.items():
            for found in pattern.finditer(prose):
                line = prose[:found.end()].rsplit("\n", 1)[-1] + prose[found.end():].split("\n")[0]
                plain.append(f"{where}: {what}: {line.strip()!r}")
        if NAMES_EQUATION.search(text.splitlines()[0]) and not HAS_MATH.search(text):
            unnamed.append(f"{where}: {text.splitlines()[0]!r}")
    assert plain == [], "untypeset formulas:\n" + "\n".join(plain)
    assert unnamed == [], "names a paper equation but shows no math:\n" + "\n".join(unnamed)


# --- what a reader sees of the code and its outputs (issue 27: hide the bookkeeping)

#: The widest line of code a reader sees (a code cell not tagged ``remove-input``): the site's
#: text column, 88 characters; a wider line scrolls sideways.
MAX_CODE_LINE = 88
#: A tqdm progress bar, as it is saved in an output ("  40%|████      | 160/400 [00:40<...").
PROGRESS_BAR = re.compile(r"\d+%\|.*\|\s*\d+/\d+|\d+(?:\.\d+)?(?:it|s)/(?:s|it)\]")
#: A warning saved in an output, as Python prints one ("...py:23: UserWarning: ...").
WARNING = re.compile(r"\b\w*Warning: |^WARNING\b", re.M)


def _cells(source: str) -> list[tuple[str, list[str]]]:
    """The cells of a jupytext percent script: (header line, code lines)."""
    cells: list[tuple[str, list[str]]] = []
    for line in source.splitlines():
        if line.startswith("# %%"):
            cells.append((line, []))
        elif cells:
            cells[-1][1].append(line)
    return cells


def visible_long_lines(source: str, width: int = MAX_CODE_LINE) -> list[str]:
    """The code lines wider than ``width`` in the cells a reader of the site can see: code cells
    not tagged ``remove-input`` or ``remove-cell``. The ``parameters`` cell counts: the executed
    page hides it, but shows in its place the cell papermill injects, which tools/run_chapters.py
    writes as the same lines with the run's values (see the test below)."""
    out = []
    for header, lines in _cells(source):
        if "[markdown]" in header or any(tag in header for tag in ("remove-input", "remove-cell")):
            continue
        out += [line for line in lines if len(line) > width]
    return out


def saved_noise(notebook: dict) -> list[str]:
    """The warnings and progress-bar lines saved in an executed notebook's outputs, as
    ``cell N: <the line>``."""
    found = []
    for i, cell in enumerate(notebook["cells"]):
        for out in cell.get("outputs", []):
            text = "".join(out.get("text", "")) if out.get("output_type") == "stream" else ""
            for line in re.split(r"[\r\n]", text):
                if PROGRESS_BAR.search(line) or WARNING.search(line):
                    found.append(f"cell {i}: {line.strip()[:100]}")
    return found


def test_visible_long_lines_finds_wide_lines_only_where_a_reader_sees_them():
    wide = "x = " + "1 + " * 30 + "1"
    comment = f"p = 1  # {'.' * 90}"
    src = "\n".join(["# %% tags=[\"parameters\"]", comment, "# %%", wide,
                     "# %% tags=[\"remove-input\"]", wide, "# %% [markdown]", f"# {'a' * 95}",
                     "# %% tags=[\"hide-input\"]", wide, "y = 2"])
    assert visible_long_lines(src) == [comment, wide, wide]
    assert visible_long_lines(src, width=200) == []


def test_saved_noise_finds_warnings_and_progress_bars():
    bar = "\rlambda=0.0 seed=0:  40%|███▍   | 160/400 [00:40<01:00,  3.95it/s, loss=5.59]"
    warn = "/tmp/ipykernel_1/3.py:23: UserWarning: Converting a tensor with requires_grad=True"
    nb = {"cells": [{"cell_type": "code", "outputs": [
        {"output_type": "stream", "name": "stderr", "text": [bar]},
        {"output_type": "stream", "name": "stderr", "text": [warn + "\n"]},
        {"output_type": "stream", "name": "stdout", "text": ["40% of the patches; 3/4 seeds\n"]},
        {"output_type": "display_data", "data": {"text/plain": ["UserWarning: in a table"]}}]}]}
    found = saved_noise(nb)
    assert len(found) == 2 and "160/400" in found[0] and "UserWarning" in found[1]
    assert saved_noise({"cells": [{"cell_type": "markdown", "source": [bar]}]}) == []


def wide_output_lines(notebook: dict, width: int = MAX_CODE_LINE) -> list[str]:
    """The lines of printed output wider than ``width`` that a reader of the site sees: stream
    outputs (what ``print`` writes) of code cells not tagged ``remove-output`` or ``remove-cell``,
    as ``cell N: <the line>``. The site's CSS wraps a wider line rather than scrolling it, but
    a wrapped line breaks where the column ends, not where its sense does."""
    found = []
    for i, cell in enumerate(notebook["cells"]):
        tags = cell.get("metadata", {}).get("tags", [])
        if cell.get("cell_type") != "code" or {"remove-output", "remove-cell"} & set(tags):
            continue
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                found += [f"cell {i}: {line}" for line in "".join(out["text"]).splitlines()
                          if len(line) > width]
    return found


def test_wide_output_lines_finds_only_what_a_reader_sees():
    wide, fits = "x" * 89, "y" * 88

    def cell(text, tags=()):
        return {"cell_type": "code", "metadata": {"tags": list(tags)},
                "outputs": [{"output_type": "stream", "name": "stdout", "text": [text]}]}
    nb = {"cells": [cell(f"{fits}\n{wide}\n"), cell(wide, ["remove-output"]),
                    cell(wide, ["remove-cell"]), cell(wide, ["hide-input"]),
                    {"cell_type": "markdown", "source": [wide]}]}
    assert wide_output_lines(nb) == [f"cell 0: {wide}", f"cell 3: {wide}"]
    assert wide_output_lines(nb, width=89) == []


@pytest.mark.parametrize("path", sorted((ROOT / "chapters").glob("*.py")), ids=lambda p: p.name)
def test_no_visible_code_line_is_wider_than_the_text_column(path):
    long = visible_long_lines(path.read_text())
    assert long == [], (f"{path.name}: {len(long)} visible code lines over {MAX_CODE_LINE} "
                        "characters:\n" + "\n".join(long))


#: The values tools/run_chapters.py injects when it executes the book (``make book``: profile cpu,
#: into book/, the data in data/), as papermill writes them, paths relative to chapters/.
BOOK_PARAMETERS = {"profile": "cpu", "device": "auto", "results_dir": "../book/results",
                   "notebooks_dir": "../book", "data_dir": "../data"}


@pytest.mark.parametrize("path", sorted((ROOT / "chapters").glob("*.py")), ids=lambda p: p.name)
def test_the_parameters_cell_the_site_shows_fits_the_text_column(path):
    """The parameters cell a page shows is the one tools/run_chapters.py rewrites from papermill's
    injected cell: the chapter's lines, comments included, with the book's values."""
    import jupytext

    sys.path.insert(0, str(ROOT / "tools"))
    try:
        from run_chapters import parameters_once
    finally:
        sys.path.remove(str(ROOT / "tools"))
    nb = jupytext.read(path, fmt="py:percent")
    (cell,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    declared = re.findall(r"^(\w+) = ", cell.source, flags=re.M)
    injected = "# Parameters\n" + "".join(f"{name} = {BOOK_PARAMETERS[name]!r}\n".replace("'", '"')
                                           for name in declared if name in BOOK_PARAMETERS)
    shown = {"cells": [{"cell_type": "code", "metadata": {"tags": ["parameters"]},
                        "source": cell.source},
                       {"cell_type": "code", "metadata": {"tags": ["injected-parameters"]},
                        "source": injected}]}
    parameters_once(shown)
    lines = shown["cells"][1]["source"].splitlines()
    assert len(lines) == len(cell.source.splitlines()) + 1  # the cell's lines, under a heading
    assert [line for line in lines if len(line) > MAX_CODE_LINE] == []


#: Committed notebooks executed before progress bars were turned off (copkit.io.bars_off) and
#: Chapter 2's warning was removed: their saved noise goes when they are re-run. An entry that
#: is clean fails, so the set only shrinks (empty since Chapter 4's re-run of 2026-12-07).
KNOWN_NOISY: set[str] = set()


@pytest.mark.parametrize("path", sorted((ROOT / "book").glob("[0-9][0-9]_*.ipynb")),
                         ids=lambda p: p.stem)
def test_executed_chapters_save_no_warnings_progress_bars_or_wide_lines(path):
    import json

    notebook = json.loads(path.read_text())
    wide = wide_output_lines(notebook)
    assert wide == [], (f"{path.name}: printed lines over {MAX_CODE_LINE} characters:\n"
                        + "\n".join(wide))
    noise = saved_noise(notebook)
    if path.stem in KNOWN_NOISY:
        assert noise, f"{path.name} is clean now: remove it from KNOWN_NOISY"
    else:
        assert noise == [], f"{path.name}:\n" + "\n".join(noise[:20])


#: The smoke run's notebooks: `make smoke` executes the chapters into .scratch/book and then runs
#: the test below on them, naming the folder in COPKIT_SMOKE_BOOK. Without it (`make unit`, which
#: `make test` runs beside the smoke run) the test checks nothing: a folder being written would
#: give each test process another list of notebooks.
SMOKE_BOOK = os.environ.get("COPKIT_SMOKE_BOOK")


@pytest.mark.parametrize("path", sorted(Path(SMOKE_BOOK).glob("[0-9][0-9]_*.ipynb"))
                         if SMOKE_BOOK else [],
                         ids=lambda p: p.stem)
def test_the_smoke_run_saves_no_warnings_progress_bars_or_wide_lines(path):
    """The chapters make test's smoke run executed (tools/run_chapters.py --profile smoke, into
    .scratch/book/) must be clean whatever the committed book holds, and print no line wider than
    the text column at this profile's numbers either."""
    import json

    notebook = json.loads(path.read_text())
    assert saved_noise(notebook) == []
    assert wide_output_lines(notebook) == []
