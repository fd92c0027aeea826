"""Sphinx glue for the API page (book/api.md), loaded through `sphinx: local_extensions` in _config.yml.

- ``nitpick_ignore`` and ``nitpick_ignore_regex`` entries come from YAML as lists; Sphinx
  compares (type, target) tuples, so they are turned into tuples here.
- copkit documents dataclass fields with ``#:`` comments such as ``#: K targets per image (49: the
  paper's Eq. 6)``. Napoleon reads the text before the first colon of such an attribute docstring
  as its *type* ("K targets per image (49"), which renders garbled and is an unresolvable
  cross-reference. The fields already carry their type as an annotation, so the docstring is
  marked as description only (a leading ``:`` leaves napoleon's type empty; a comment that
  starts with a role such as ``:math:`` gets one too).
- The docstrings write their equations in reST themselves (the ``:math:`` role, ``.. math::``
  blocks), so nothing here rewrites them; tests/test_book_pages.py checks that none is left as
  plain text.
- sphinx-thebe adds its inline configuration script twice to every page (``const THEBE_JS_URL``
  declared twice: an uncaught SyntaxError in the browser, which tools/check_site.py reports), so
  identical scripts are kept once. The page's list is edited in place: it is the builder's own
  list, to which later handlers (sphinx.ext.mathjax's, on pages with equations) add their
  scripts; a new list here would drop those, and the equations would never be typeset.
"""

from __future__ import annotations

import re


def _tuples(app, config) -> None:
    config.nitpick_ignore = [tuple(entry) for entry in config.nitpick_ignore]
    config.nitpick_ignore_regex = [tuple(entry) for entry in config.nitpick_ignore_regex]


def _attribute_without_type(app, what, name, obj, options, lines) -> None:
    if what in ("attribute", "data") and name.startswith("copkit.") and lines and ":" in lines[0] \
            and not re.match(r"\s*:(\s|$)", lines[0]):
        lines[0] = ": " + lines[0]


def _unique_scripts(app, pagename, templatename, context, doctree) -> None:
    seen, unique = set(), []
    for js in context.get("script_files", []):
        name = getattr(js, "filename", js) or ""  # the same inline script comes as filename None and ""
        key = (str(name), tuple(sorted((k, str(v)) for k, v in getattr(js, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            unique.append(js)
    context["script_files"][:] = unique  # in place: later handlers add MathJax to this very list


def setup(app):
    app.connect("config-inited", _tuples)
    # before napoleon (priority 500), which rewrites the docstring lines
    app.connect("autodoc-process-docstring", _attribute_without_type, priority=400)
    app.connect("html-page-context", _unique_scripts, priority=100)  # before any handler that returns a template
    return {"parallel_read_safe": True, "parallel_write_safe": True}
