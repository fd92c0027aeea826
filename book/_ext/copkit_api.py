"""Sphinx glue for the API page (book/api.md), loaded through `sphinx: local_extensions` in _config.yml.

- ``nitpick_ignore`` and ``nitpick_ignore_regex`` entries come from YAML as lists; Sphinx
  compares (type, target) tuples, so they are turned into tuples here.
- copkit documents dataclass fields with ``#:`` comments such as ``#: K targets per image (49: the
  paper's Eq. 6)``. Napoleon reads the text before the first colon of such an attribute docstring
  as its *type* ("K targets per image (49"), which renders garbled and is an unresolvable
  cross-reference. The fields already carry their type as an annotation, so the docstring is
  marked as description only (a leading ``:`` leaves napoleon's type empty).
- The module docstrings write their equations as plain text, readable in ``help()`` and in an
  editor (``P = (D^-1 A)^T``); :data:`MODULE_MATH` says how each reads in LaTeX, and the API
  pages typeset it (an inline ``:math:`` role, or a ``.. math::`` block for an indented display
  equation). An entry whose text is no longer in its docstring is a warning, so a strict build
  (``-W``) fails instead of silently leaving the equation as text.
- sphinx-thebe adds its inline configuration script twice to every page (``const THEBE_JS_URL``
  declared twice: an uncaught SyntaxError in the browser, which tools/check_site.py reports), so
  identical scripts are kept once. The page's list is edited in place: it is the builder's own
  list, to which later handlers (sphinx.ext.mathjax's, on pages with equations) add their
  scripts; a new list here would drop those, and the equations would never be typeset.
"""

from __future__ import annotations

from sphinx.util import logging

logger = logging.getLogger(__name__)

#: module -> (plain text as the docstring writes it, LaTeX). A tuple of lines is a display
#: equation (an indented block of its own in the docstring), anything else inline; inline text
#: written as ``code`` loses its backticks.
MODULE_MATH: dict[str, list[tuple[str | tuple[str, ...], str]]] = {
    "copkit.tokens": [("dimension d = C p^2", r"dimension :math:`d = C p^2`")],
    "copkit.entropy": [
        (("H(e_n | e_S) = 1/2 log det(2 pi e Sigma_{n|S}),",
          "Sigma_{n|S}  = Sigma_nn - Sigma_nS Sigma_SS^{-1} Sigma_Sn          (the Schur complement)."),
         r"H(e_n \mid e_S) &= \tfrac12 \log\det\left(2\pi e\,\Sigma_{n\mid S}\right), \\"
         "\n"
         r"\Sigma_{n\mid S} &= \Sigma_{nn} - \Sigma_{nS}\,\Sigma_{SS}^{-1}\,\Sigma_{Sn} \qquad \text{(the Schur complement).}"),
        ("H_c(S) = sum_{n not in S} H(e_n | e_S)", r":math:`H_c(S) = \sum_{n \notin S} H(e_n \mid e_S)`"),
        ("H_c(S_k) for the first k patches of the order, k = 0..N",
         r":math:`H_c(S_k)` for the first :math:`k` patches of the order, :math:`k = 0, \dots, N`"),
        ("sum_k H(e_{o_k} | e_{o_1..o_{k-1}})", r":math:`\sum_k H(e_{o_k} \mid e_{o_1}, \dots, e_{o_{k-1}})`"),
        ("1/2 log det(2 pi e Sigma)", r":math:`\tfrac12 \log\det(2\pi e\,\Sigma)`"),
        ("after which H_c is smallest", r"after which :math:`H_c` is smallest"),
    ],
    "copkit.rank": [
        ("A[i, j] = w_ij", r":math:`A_{ij} = w_{ij}`"),
        (("P = (D^-1 A)^T,   D = diag(row sums of A),",),
         r"P = (D^{-1} A)^\top, \qquad D = \operatorname{diag}(\text{row sums of } A),"),
        ("r = (1 - c) beta + c P r with damping c and teleport beta",
         r":math:`r = (1 - c)\,\beta + c\,P r` with damping :math:`c` and teleport :math:`\beta`"),
        ("sends its score to beta", r"sends its score to :math:`\beta`"),
    ],
    "copkit.comae": [
        ("outputs a mask w_n in [0, 1]^N", r"outputs a mask :math:`w_n \in [0, 1]^N`"),
        ("a_i = exp(-(1 - w_ni)^2 / (2 sigma^2))", r":math:`a_i = \exp\left(-(1 - w_{ni})^2 / 2\sigma^2\right)`"),
        ("e^m_i = a_i e_i + (1 - a_i) eps_i", r":math:`e^m_i = a_i e_i + (1 - a_i)\,\epsilon_i`"),
        ("L_r = ||e_n - e*_n||_1", r":math:`L_r = \lVert e_n - e^*_n \rVert_1`"),
        ("L = L_r + 0.01 L_c", r":math:`L = L_r + 0.01\,L_c`"),
        ("(tanh(x) + 1) / 2", r":math:`(\tanh x + 1) / 2`"),
    ],
    "copkit.diffusion": [("the cosine schedule alpha_bar(t)", r"the cosine schedule :math:`\bar\alpha(t)`")],
    "copkit.diffloss": [
        ("x_t = sqrt(alpha_bar_t) x + sqrt(1 - alpha_bar_t) eps",
         r":math:`x_t = \sqrt{\bar\alpha_t}\,x + \sqrt{1 - \bar\alpha_t}\,\epsilon`"),
    ],
    "copkit.cmar": [("``floor(N cos(pi/2 (s+1)/S))``", r":math:`\lfloor N \cos(\tfrac{\pi}{2} \tfrac{s+1}{S}) \rfloor`")],
    "copkit.cvit": [
        ("``r = r_max (1 - cos(pi u / 2))`` with ``u ~ U(0, 1)``",
         r":math:`r = r_{\max}\,(1 - \cos(\pi u / 2))` with :math:`u \sim U(0, 1)`"),
    ],
    "copkit.efficiency": [("``1 - keep^2``", r":math:`1 - \mathrm{keep}^2`")],
}


def _tuples(app, config) -> None:
    config.nitpick_ignore = [tuple(entry) for entry in config.nitpick_ignore]
    config.nitpick_ignore_regex = [tuple(entry) for entry in config.nitpick_ignore_regex]


def _attribute_without_type(app, what, name, obj, options, lines) -> None:
    if what == "attribute" and name.startswith("copkit.") and lines and ":" in lines[0] \
            and not lines[0].lstrip().startswith(":"):
        lines[0] = ": " + lines[0]


def _module_math(app, what, name, obj, options, lines) -> None:
    """Typeset the equations :data:`MODULE_MATH` lists for a module's docstring, in place."""
    if what != "module" or name not in MODULE_MATH:
        return
    for plain, latex in MODULE_MATH[name]:
        if isinstance(plain, tuple):
            stripped = [line.strip() for line in lines]
            at = next((i for i in range(len(lines) - len(plain) + 1)
                       if stripped[i:i + len(plain)] == list(plain)), None)
            if at is None:
                logger.warning(f"{name}: the display equation {plain[0]!r} is not in its docstring (book/_ext/copkit_api.py)")
                continue
            block = ["", ".. math::", ""] + ["   " + part for part in latex.splitlines()] + [""]
            lines[at:at + len(plain)] = block
        else:
            found = [i for i, line in enumerate(lines) if plain in line]
            if not found:
                logger.warning(f"{name}: {plain!r} is not in its docstring (book/_ext/copkit_api.py)")
            for i in found:
                lines[i] = lines[i].replace(plain, latex)


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
    app.connect("autodoc-process-docstring", _module_math, priority=400)
    app.connect("html-page-context", _unique_scripts, priority=100)  # before any handler that returns a template
    return {"parallel_read_safe": True, "parallel_write_safe": True}
