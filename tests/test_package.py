"""The package as a whole: its map (the package docstring) and the API page cover every module."""


def test_package_docstring_lists_every_module():
    """The package's docstring is the map of copkit: every module is on it, and nothing else."""
    import pkgutil
    import re

    import copkit

    modules = {m.name for m in pkgutil.iter_modules(copkit.__path__) if not m.name.startswith("_")}
    listed = set(re.findall(r":mod:`copkit\.(\w+)`", copkit.__doc__))
    assert listed == modules


def test_api_page_documents_every_module():
    import pkgutil
    import re
    from pathlib import Path

    import copkit

    modules = {m.name for m in pkgutil.iter_modules(copkit.__path__) if not m.name.startswith("_")}
    pages = sorted((Path(__file__).resolve().parents[1] / "book" / "api").glob("*.md"))  # one page per module
    assert set(re.findall(r"automodule:: copkit\.(\w+)", "".join(p.read_text() for p in pages))) == modules


def test_no_reference_to_a_markdown_file_outside_the_repository():
    """What a reader needs is in a docstring or a page of the book: every ``*.md`` file that the
    code, chapters, executed book, configs and README name exists in the repository."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    have = {p.name for p in root.rglob("*.md") if ".venv" not in p.parts and ".scratch" not in p.parts}
    sources = [*root.glob("copkit/**/*.py"), *root.glob("chapters/*.py"), *root.glob("tools/*.py"),
               *root.glob("scripts/*"), *root.glob("book/*.md"), *root.glob("book/*.ipynb"), *root.glob("configs/**/*"),
               root / "README.md", root / "Makefile", root / "_config.yml"]
    missing = {(str(p.relative_to(root)), name) for p in sources if p.is_file()
               for name in re.findall(r"[A-Za-z0-9_\-]+\.md\b", p.read_text(errors="ignore")) if name not in have}
    assert not missing


def test_a_named_figure_cell_displays_no_markdown():
    """myst-nb gives a cell's figure name to every output of the cell: a named-figure cell that
    also displays Markdown makes a duplicate target, and the strict site build fails. Every
    chapter source and executed notebook keeps its Markdown in a cell of its own."""
    import json
    from pathlib import Path

    import jupytext

    root = Path(__file__).resolve().parents[1]
    notebooks = [(p, jupytext.read(p, fmt="py:percent")) for p in sorted(root.glob("chapters/[0-9][0-9]_*.py"))]
    notebooks += [(p, json.loads(p.read_text())) for p in sorted(root.glob("book/[0-9][0-9]_*.ipynb"))]
    bad = []
    for path, nb in notebooks:
        for cell in nb["cells"]:
            name = cell.get("metadata", {}).get("mystnb", {}).get("figure", {}).get("name")
            source = "".join(cell["source"])
            shown = [o for o in cell.get("outputs", []) if "text/markdown" in o.get("data", {})]
            if name and ("display(Markdown(" in source or shown):
                bad.append(f"{path.name}: {name}")
    assert not bad, f"named figures whose cell also displays Markdown: {bad}"
