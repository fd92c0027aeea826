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
    page = (Path(__file__).resolve().parents[1] / "book" / "api.md").read_text()
    assert set(re.findall(r"automodule:: copkit\.(\w+)", page)) == modules
