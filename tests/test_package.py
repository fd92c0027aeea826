"""The package as a whole: its map (the package docstring) and the API page cover every module."""

import pytest


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
    # one page per module
    pages = sorted((Path(__file__).resolve().parents[1] / "book" / "api").glob("*.md"))
    assert (set(re.findall(r"automodule:: copkit\.(\w+)", "".join(p.read_text() for p in pages)))
            == modules)


def test_no_reference_to_a_markdown_file_outside_the_repository():
    """What a reader needs is in a docstring or a page of the book: every ``*.md`` file that a
    tracked text file of the repository names (code, chapters, the executed book, configs, tools'
    lists, README) exists in the repository."""
    import re
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=False)
    if listed.returncode != 0:
        pytest.skip("not a git checkout: the tracked files are not known")
    tracked = [root / name for name in listed.stdout.decode().split("\0") if name]
    have = {p.name for p in tracked if p.suffix == ".md"}
    missing = set()
    for path in tracked:
        if not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" in data:  # a binary file (weights, orders, images)
            continue
        text = data.decode("utf-8", errors="ignore")
        missing |= {(str(path.relative_to(root)), name)
                    for name in re.findall(r"[A-Za-z0-9_\-]+\.md\b", text) if name not in have}
    assert len(tracked) > 100 and not missing


def test_a_named_figure_cell_displays_no_markdown():
    """myst-nb gives a cell's figure name to every output of the cell: a named-figure cell that
    also displays Markdown makes a duplicate target, and the strict site build fails. Every
    chapter source and executed notebook keeps its Markdown in a cell of its own."""
    import json
    from pathlib import Path

    import jupytext

    root = Path(__file__).resolve().parents[1]
    notebooks = [(p, jupytext.read(p, fmt="py:percent"))
                 for p in sorted(root.glob("chapters/[0-9][0-9]_*.py"))]
    notebooks += [(p, json.loads(p.read_text()))
                  for p in sorted(root.glob("book/[0-9][0-9]_*.ipynb"))]
    bad = []
    for path, nb in notebooks:
        for cell in nb["cells"]:
            name = cell.get("metadata", {}).get("mystnb", {}).get("figure", {}).get("name")
            source = "".join(cell["source"])
            shown = [o for o in cell.get("outputs", []) if "text/markdown" in o.get("data", {})]
            if name and ("display(Markdown(" in source or shown):
                bad.append(f"{path.name}: {name}")
    assert not bad, f"named figures whose cell also displays Markdown: {bad}"


def test_make_test_runs_the_linter_as_pyproject_configures_it():
    """`make test` starts with ruff over the whole repository, at the line length and rules that
    pyproject.toml gives it."""
    import shutil
    import subprocess
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    ruff = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["ruff"]
    assert ruff["line-length"] == 100 and {"E", "F", "I"} <= set(ruff["lint"]["select"])
    if shutil.which("make") is None:
        pytest.skip("no make")
    plan = subprocess.run(["make", "-n", "-B", "test"], cwd=root, capture_output=True, text=True,
                          check=True).stdout.splitlines()
    lint = [i for i, line in enumerate(plan) if line.endswith("-m ruff check .")]
    tests = [i for i, line in enumerate(plan) if "-m pytest" in line]
    assert lint and tests and lint[0] < tests[0]
