"""What the book found, in words: a readable name for each of the paper's claims, and the "What we
found" box that opens the introduction, every chapter and the report.

A claim is stored under an id that names the paper's table, figure or equation first
(``table5.cvit.top1@78``, see :mod:`copkit.results`); a reader reads it by its name in
:data:`CLAIM_NAMES`, the one mapping from id to words, which also says what the claim's effect
measures and how it prints. :func:`claim_sentence` says one claim in a sentence, verdict first,
then its effect with its 95% interval (in the book's number rule, :mod:`copkit.fmt`), and
:func:`findings_box` writes 4-6 such sentences for a chapter, or for the whole book, as a MyST
admonition of class :data:`FINDINGS_CLASS`. Nothing in the box is typed by hand: every number
comes from the results files, and every verdict from their tests.

The box of a chapter shows the numbers of the run that made the page: the chapter computes it at
its end, after its claims are decided, and glues it (``myst_nb.glue``, a ``remove-cell`` cell);
the chapter's first Markdown cell pastes it under the title with ``{glue:md}``. The introduction,
which runs no code, gets the book's box from ``tools/findings_text.py``; it and the report read
the results files as :func:`copkit.results.book_results` decides them over the whole book, so
that both name one family and one verdict for each claim.

Aliases (the same test as another claim, :func:`copkit.results.alias`) are counted once, with the
claim they repeat: :func:`claim_counts`.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any, Iterable, Mapping

from . import fmt, stats
from .results import effect_scale, family_size, readable

__all__ = ["ClaimName", "CLAIM_NAMES", "FINDINGS_CLASS", "FINDINGS_TITLE", "VERDICT_LABELS",
           "COUNT_WORDS", "claim_name", "claim_format", "chapter_number", "is_alias",
           "effect_text", "effect_cell", "ours_text",
           "verdict_parts", "verdict_text", "claim_sentence", "claim_counts", "counts_phrase",
           "key_claims",
           "findings_sentences", "findings_box", "admonition", "GLUE_KEY", "PASTE", "glue_box"]

#: The class of the box's admonition, by which ``tools/check_site.py`` finds it.
FINDINGS_CLASS = "findings"
#: The box's title.
FINDINGS_TITLE = "What we found"
#: The name under which a chapter glues its box (:func:`glue_box`).
GLUE_KEY = "findings"
#: The Markdown a page's top holds to paste the glued box (myst-nb's ``glue:md`` directive).
#:
#: :meta hide-value:
PASTE = f"```{{glue:md}} {GLUE_KEY}\n:format: myst\n```"


@dataclass(frozen=True)
class ClaimName:
    """A claim of the paper in words.

    Attributes:
        name: the paper's claim, as a reader would state it, with where the paper makes it
            ("paper Table 5").
        effect: what the claim's test measures, as the subject of "is +12.8 points" ("CViT's
            top-1 minus RViT's"); None for a claim without a test.
        scale: the factor from the stored effect to the printed one (100: a share as points).
        decimals: decimals of the printed effect; None for two significant figures
            (:func:`copkit.fmt.sig`).
        unit: the unit after the number (" points", " nats"; "" for none).
    """

    name: str
    effect: str | None = None
    scale: float = 1.0
    decimals: int | None = None
    unit: str = ""

    @property
    def is_fid(self) -> bool:
        """Are the claim's numbers FIDs (printed to one decimal, :func:`copkit.fmt.fid`)?"""
        return self.unit == _FID["unit"]

    def show(self, x: float | None, unit: bool = True, *,
             relative_to: float | None = None) -> str:
        """A value of the effect (or an interval's end) as this claim prints it, with its sign
        (and its unit, unless ``unit`` is false); a value that would print as zero at the
        claim's decimals gets two significant figures instead, so that a small effect is not
        written as none; float noise relative to ``relative_to`` (the magnitude of the numbers
        the value stands among, in stored units: :func:`copkit.results.effect_scale`) is 0
        (:func:`copkit.fmt.snap`).

        >>> ClaimName("x", "y", decimals=1, unit=" FID").show(-0.041)
        '-0.041 FID'
        >>> ClaimName("x", "y").show(-1.1102230246251565e-16, relative_to=0.07)
        '0'
        """
        if x is None:
            return fmt.MISSING
        v = fmt.snap(float(x), relative_to) * self.scale
        text = (fmt.signed(v, digits=2) if self.decimals is None
                else fmt.signed(v, self.decimals))
        if v != 0 and not any(ch in "123456789" for ch in text):
            text = fmt.signed(v, digits=2)
        return text + (self.unit if unit else "")

    def interval(self, test: Mapping[str, Any]) -> str | None:
        """A test's 95% interval as this claim prints it, without its unit ("+10.0 to +15.6",
        float noise relative to :func:`copkit.results.effect_scale` as 0); None without one.
        Two different ends get the decimals that print them apart
        (:func:`copkit.fmt.interval_decimals`), never "+1.2 to +1.2", which reads as a point.

        >>> ClaimName("x", "y", decimals=1).interval({"effect": 12.78, "ci": [10.0, 15.56]})
        '+10.0 to +15.6'
        >>> ClaimName("x", "y", decimals=1).interval({"effect": 1.22, "ci": [1.21, 1.24]})
        '+1.21 to +1.24'
        """
        lo, hi = test.get("ci") or (None, None)
        if lo is None or hi is None:
            return None
        scale = effect_scale(test)
        ends = [self.show(x, unit=False, relative_to=scale) for x in (lo, hi)]
        v_lo, v_hi = (fmt.snap(float(x), scale) * self.scale for x in (lo, hi))
        if ends[0] == ends[1] and v_lo != v_hi:
            wider = replace(self, decimals=fmt.interval_decimals(v_lo, v_hi, self.decimals or 0))
            ends = [wider.show(x, unit=False, relative_to=scale) for x in (lo, hi)]
        return f"{ends[0]} to {ends[1]}"


_POINTS = {"decimals": 1, "unit": " points"}
_SHARE = {"scale": 100.0, "decimals": 1, "unit": " points"}
_FID = {"decimals": 1, "unit": " FID"}

#: Every claim id of the book with its readable name, the one place where an id becomes words.
CLAIM_NAMES: dict[str, ClaimName] = {
    # Chapter 1
    "eq1.order_invariant": ClaimName("Eq. 1, the paper's objective, depends on the order of the "
                                     "patches (paper Eq. 1)"),
    "def1.order_matters": ClaimName(
        "The order in which patches are observed changes how fast the rest collapse (paper "
        "Def. 1)", "the prefix-curve area of random orders minus the greedy order's",
        decimals=1, unit=" nats"),
    # Chapter 2
    "table1.contrastive.mask_entropy": ClaimName("The mask entropy H_mask with L_c (paper "
                                                 "Table 1)"),
    "table1.no_contrastive.mask_entropy": ClaimName("The mask entropy H_mask without L_c (paper "
                                                    "Table 1)"),
    "table1.contrastive.reconstruction_loss": ClaimName("The reconstruction loss L_r with L_c "
                                                        "(paper Table 1)"),
    "table1.no_contrastive.reconstruction_loss": ClaimName("The reconstruction loss L_r without "
                                                           "L_c (paper Table 1)"),
    "table1.contrastive_lowers_mask_entropy": ClaimName(
        "The contrastive loss L_c lowers the mask entropy H_mask (paper Table 1)",
        "H_mask with L_c minus without"),
    "table1.contrastive_lowers_reconstruction_loss": ClaimName(
        "The contrastive loss L_c lowers the reconstruction loss L_r (paper Table 1)",
        "L_r with L_c minus without"),
    "fig6.mask_entropy_falls_with_training": ClaimName(
        "The mask entropy H_mask falls over training (paper Fig. 6)",
        "H_mask at the end minus at the first evaluation"),
    # Chapter 3
    "eq11-15.derivation": ClaimName("The Neumann-series, fixed-point and PageRank identities "
                                    "of paper Eqs. 11-15"),
    "sec6.order_invariant_to_beta_scale": ClaimName("Scaling the teleport term beta leaves the "
                                                    "order unchanged (paper Sec. 6)"),
    "theorem.pagerank_area_vs_greedy": ClaimName("Ordering patches by PageRank minimises the "
                                                 "collapse entropy (paper Sec. 6, theorem)"),
    "assumption2.submodularity": ClaimName("The collapse entropy is monotone and nearly "
                                           "submodular (paper Assumption 2)"),
    "assumption1.gain_tracks_pagerank": ClaimName("A patch's gain is proportional to its "
                                                  "PageRank score (paper Assumption 1)"),
    "dag.acyclic": ClaimName("The mask graph is acyclic (paper Sec. 6)"),
    "fig5.common_structure": ClaimName(
        "Collapse orders of different classes share a common structure (paper Fig. 5)",
        "Kendall's tau between two images of different classes"),
    "fig5.class_consistency": ClaimName(
        "Collapse orders are consistent within a class (paper Fig. 5)",
        "Kendall's tau with the class's mean order minus with all images' mean order"),
    "fig4.top22_on_object": ClaimName(
        "The top 22% of the collapse order falls on the object (paper Fig. 4)",
        "the share of the top 22% on the object minus a random order's", **_SHARE),
    # Chapter 4
    "table2.cmar_vs_mar.fid_cfg": ClaimName(
        "With CFG, CMAR generates better images than MAR (lower FID, paper Table 2)",
        "CMAR's FID minus MAR's", **_FID),
    "table2.cmar_vs_mar.fid_no_cfg": ClaimName(
        "Without CFG, CMAR's FID is worse than MAR's (paper Table 2)",
        "CMAR's FID minus MAR's", **_FID),
    "table2.mar_c_vs_mar.fid_cfg": ClaimName(
        "Sampling the unchanged MAR in collapse order lowers its FID (MAR+C, paper Table 2)",
        "the FID in collapse order minus in random order", **_FID),
    "table3.cmar.cfg_scale": ClaimName(
        "CMAR's FID is lower at a smaller CFG scale (paper Table 3)",
        "the FID at the smallest CFG scale minus at the largest", **_FID),
    "table4.descending_vs_ascending.fid": ClaimName(
        "Generating the best-ranked patches first gives a lower FID than the worst first (paper "
        "Table 4)", "the FID best first minus worst first", **_FID),
    "cmar.own_vs_fixed_order.fid_cfg": ClaimName(
        "CMAR gains from each image's own collapse order, not from any fixed order (implied by "
        "the paper's Sec. 3.3)",
        "the same CMAR's FID along real images' orders minus along one fixed order", **_FID),
    "fig1.uncertainty_collapse": ClaimName(
        "Revealing patches in collapse order collapses the uncertainty of the rest faster "
        "(paper Fig. 1)",
        "the summed variance of the hidden pixels, collapse order minus random order"),
    "sec3.3.generation_order": ClaimName("The order in which CMAR generates (paper Sec. 3.3, "
                                         "left open)", **_FID),
    # Chapter 5
    "table5.vit.top1@0": ClaimName("ViT's top-1 on full images (paper Table 5)"),
    "table5.cvit.top1@0": ClaimName(
        "Training with dropped patches leaves CViT's full-image top-1 equal to ViT's (paper "
        "Table 5)", "CViT's full-image top-1 minus ViT's", **_POINTS),
    "table5.rvit.top1@0": ClaimName(
        "Training with random drops leaves RViT's full-image top-1 equal to ViT's (paper "
        "Table 5)", "RViT's full-image top-1 minus ViT's", **_POINTS),
    "table5.vit.top1@78": ClaimName(
        "A ViT trained on full images keeps under half its accuracy with 78% of the patches "
        "removed (paper Table 5)",
        "the share of its above-chance accuracy it keeps, minus half", **_SHARE),
    "table5.vitc.top1@78": ClaimName(
        "The collapse order at test time helps a full-image ViT with 78% of the patches removed "
        "(paper Table 5)", "top-1 in collapse order minus with random drops", **_POINTS),
    "table5.vitc.top1@30": ClaimName(
        "The collapse order at test time hurts a full-image ViT with 30% of the patches removed "
        "(paper Table 5)", "top-1 in collapse order minus with random drops", **_POINTS),
    "table5.rvit.top1@78": ClaimName(
        "Training with random drops raises top-1 with 78% of the patches removed (RViT against "
        "ViT, paper Table 5)", "RViT's top-1 minus ViT's", **_POINTS),
    "table5.cvit.top1@78": ClaimName(
        "CViT beats RViT with 78% of the patches removed (paper Table 5)",
        "CViT's top-1 minus RViT's", **_POINTS),
    "table5.dynamicvit.top1@78": ClaimName(
        "DynamicViT falls below CViT with 78% of the patches removed (paper Table 5)",
        "the pruning baseline's top-1 minus CViT's", **_POINTS),
    "table5.dynamicvit.top1_equal_flops": ClaimName(
        "DynamicViT falls below CViT at equal compute (paper Table 5)",
        "the pruning baseline's top-1 minus CViT's at equal FLOPs", **_POINTS),
    "table5.cvit.auc": ClaimName(
        "CViT has the largest area under the accuracy curve, AuC (paper Table 5)",
        "CViT's AuC minus the next best model's", **_POINTS),
    "table5.rvit.auc": ClaimName(
        "Training with random drops raises the AuC (RViT against ViT, paper Table 5)",
        "RViT's AuC minus ViT's", **_POINTS),
    "table5.vitc.auc": ClaimName(
        "The collapse order at test time raises a full-image ViT's AuC (paper Table 5)",
        "ViT's AuC in collapse order minus with random drops", **_POINTS),
    "table5.vit.auc": ClaimName("A full-image ViT's AuC is below RViT's (paper Table 5)",
                                "RViT's AuC minus ViT's", **_POINTS),
    "table5.dynamicvit.auc": ClaimName("DynamicViT's AuC is below CViT's (paper Table 5)",
                                       "CViT's AuC minus the next best model's", **_POINTS),
    "table5.auc_ranking": ClaimName("The ranking of the five models by AuC (paper Table 5)"),
    "knee.cvit.mask_ratio": ClaimName(
        "CViT's accuracy curve has its knee at 78% of the patches removed (paper Fig. 8)",
        "our knee minus the paper's, as a mask ratio"),
    "knee.cvit.top1": ClaimName(
        "At its knee CViT keeps about 85% of its full-image top-1 (paper Fig. 8)",
        "the share it keeps minus the paper's", **_SHARE),
    "knee.specific_to_cvit": ClaimName(
        "The knee is CViT's own: it lies later than RViT's (paper Fig. 8)",
        "CViT's knee minus RViT's, as a mask ratio"),
    "sec3.4.cvit.per_image_order": ClaimName(
        "CViT gains from each image's own collapse order (paper Sec. 3.4)",
        "AuC with each image's own order minus with one fixed order", decimals=2,
        unit=" points"),
    "efficiency.attention_saving_at_22": ClaimName("Keeping 22% of the patches saves 95% of the "
                                                   "attention cost (paper Sec. 5)"),
    "efficiency.end_to_end_with_order": ClaimName("CViT saves compute end to end, the collapse "
                                                  "order included"),
    "efficiency.throughput_at_22": ClaimName("Keeping 22% of the patches speeds inference up "
                                             "in proportion (paper Sec. 5)"),
}

#: A verdict as the first word of a claim's line in the report.
VERDICT_LABELS = {"reproduced": "Holds", "partly": "Holds in part",
                  "negligible": "Too small to matter", "not reproduced": "Fails",
                  "inconclusive": "Undecided", "not testable": "Not testable here"}
#: A verdict in a count ("3 reproduced, 2 contradicted and ...").
COUNT_WORDS = {"reproduced": "reproduced", "partly": "reproduced in part",
               "negligible": "too small to matter", "not reproduced": "contradicted",
               "inconclusive": "undecided", "not testable": "not testable at this scale"}
# The order in which a box picks claims: where the paper fails first, then what holds.
_PRIORITY = ("not reproduced", "negligible", "reproduced", "partly", "inconclusive",
             "not testable")


def claim_name(cid: str) -> str:
    """The readable name of a claim id (:data:`CLAIM_NAMES`); an id without one is named by
    itself, so that a new claim shows up rather than vanishing (a test requires every id of the
    book's results to have a name).

    >>> claim_name("table5.cvit.top1@78")
    'CViT beats RViT with 78% of the patches removed (paper Table 5)'
    """
    entry = CLAIM_NAMES.get(cid)
    return entry.name if entry is not None else f"Claim {cid}"


def claim_format(cid: str) -> ClaimName:
    """How a claim's numbers print: its :data:`CLAIM_NAMES` entry, or for an id without one,
    an entry that prints two significant figures without a unit."""
    return CLAIM_NAMES.get(cid) or ClaimName(claim_name(cid))


def chapter_number(chapter: str) -> int:
    """The number of a chapter from its file name: ``05_cvit`` -> 5.

    >>> chapter_number("05_cvit")
    5
    """
    m = re.match(r"(\d+)_", chapter)
    if m is None:
        raise ValueError(f"a chapter's name starts with its number and '_', got {chapter!r}")
    return int(m.group(1))


def is_alias(c: Mapping[str, Any]) -> bool:
    """Is the claim the same test as another claim of its chapter (counted with that one)?"""
    t = c.get("test")
    return bool(t and t.get("alias_of"))


def _p(p: float | None) -> str:
    shown = fmt.pvalue(p)
    return shown if shown.startswith("<") else "= " + shown


def _finish(text: str) -> str:
    text = text.strip()
    return text if text.endswith((".", "!", "?")) else text + "."


def effect_text(cid: str, test: Mapping[str, Any] | None) -> str | None:
    """A test's effect with its 95% interval and its replicates, as :data:`CLAIM_NAMES` says
    what it measures: "CViT's top-1 minus RViT's is +12.8 points (95% interval +10.0 to +15.6)
    over 3 seeds, the paper's +3.3 points". None for a claim without a test, or whose effect
    the mapping does not describe.

    >>> effect_text("table5.cvit.top1@78", {"effect": 12.78, "ci": [10.0, 15.56], "n": 3,
    ...                                     "unit": "seeds", "paper_effect": 3.3})
    "CViT's top-1 minus RViT's is +12.8 points (95% interval +10.0 to +15.6) over 3 seeds, the paper's +3.3 points"
    """  # noqa: E501 - a doctest's expected output is one line
    entry = CLAIM_NAMES.get(cid)
    if test is None or entry is None or entry.effect is None or test.get("effect") is None:
        return None
    ends = entry.interval(test)
    interval = "no interval" if ends is None else f"95% interval {ends}"
    n = test.get("n")
    over = (f" over {fmt.listing(str(k) for k in n)} {test.get('unit', '')}".rstrip()
            if isinstance(n, (list, tuple)) else
            f" over {fmt.counted(n, test.get('unit', ''))}" if n is not None else "")
    text = (f"{entry.effect} is {entry.show(test['effect'], relative_to=effect_scale(test))} "
            f"({interval}){over}")
    if test.get("paper_effect") is not None:
        text += f", the paper's {entry.show(test['paper_effect'])}"
    return text


def effect_cell(cid: str, test: Mapping[str, Any] | None) -> str:
    """A test's effect with its 95% interval for a table cell, in the claim's units and decimals
    (:meth:`copkit.findings.ClaimName.show`): "+12.8 points (+10.0 to +15.6)", "+29.9 FID
    (+9.3 to +50.5)"; :data:`copkit.fmt.MISSING` for a claim without a test (or an alias not
    yet filled with its primary's test, :func:`copkit.results.book_results`).

    >>> effect_cell("table5.cvit.top1@78", {"effect": 12.78, "ci": [10.0, 15.56]})
    '+12.8 points (+10.0 to +15.6)'
    """
    if test is None or test.get("effect") is None:
        return fmt.MISSING
    entry = claim_format(cid)
    ends = entry.interval(test)
    return (entry.show(test["effect"], relative_to=effect_scale(test))
            + ("" if ends is None else f" ({ends})"))


def ours_text(cid: str, ours: Any) -> str:
    """A claim's ``ours`` (what the chapter measured) as a reader reads it
    (:func:`copkit.results.readable`), its numbers FIDs to one decimal where the claim's are.

    >>> ours_text("table2.cmar_vs_mar.fid_cfg", {"MAR": {"mean": 170.02, "std": 8.21, "n": 3}})
    'MAR: 170.0 ± 8.2 (n=3)'
    """
    return readable(ours, fid=claim_format(cid).is_fid)


def verdict_parts(c: Mapping[str, Any]) -> tuple[str, str]:
    """A claim's verdict in plain words and what decided it, apart: ("holds", "Holm p = 0.0030"),
    ("fails", "by an exact computation"), ("undecided", "its test gives no p"); the second is ""
    when there is nothing to add. :func:`verdict_text` joins them; the report, which leads with
    the verdict (:data:`VERDICT_LABELS`), shows only the second."""
    v = c.get("verdict")
    t = c.get("test") or {}
    exact = bool(c.get("exact"))
    holm = f"Holm p {_p(t['p_holm'])}" if t.get("p_holm") is not None else ""
    if v == "reproduced":
        return "holds", "by an exact computation" if exact else holm
    if v == "partly":
        partial = t.get("partial")
        return "holds only in part", (f"its weaker criterion, {partial}, is met" if partial
                                      else "")
    if v == "negligible":
        smallest = t.get("smallest")
        return "fails: the effect is too small to matter", (
            f"its 95% interval lies within {fmt.sig(smallest, 2)} of zero, the smallest effect "
            "that would matter" if smallest is not None else "")
    if v == "not reproduced":
        if exact:
            return "fails", "by an exact computation"
        what = ("lies outside the stated margin" if t.get("expect") == "equal"
                else "goes the other way")
        return f"fails: the effect {what}", holm
    if v == "inconclusive":
        return "undecided", holm or "its test gives no p"
    if v == "not testable":
        return "not testable at this scale", ""
    return f"{v}", ""


def verdict_text(c: Mapping[str, Any]) -> str:
    """A claim's verdict in plain words, with what decided it: Holm's p for a tested claim, the
    criterion met for a partial one, the band it lies in for a negligible one, "by an exact
    computation" for a claim decided without sampling.

    >>> verdict_text({"verdict": "inconclusive", "test": {"p_holm": 0.0509, "family": 27}})
    'undecided (Holm p = 0.051)'
    >>> verdict_text({"verdict": "not reproduced", "exact": True})
    'fails, by an exact computation'
    """
    word, detail = verdict_parts(c)
    if not detail:
        return word
    return f"{word}, {detail}" if detail.startswith("by ") else f"{word} ({detail})"


def claim_sentence(cid: str, c: Mapping[str, Any], *, where: str | None = None,
                   why: bool = False) -> str:
    """One claim in one sentence: its name, its verdict, then its effect with the 95% interval;
    ``where`` (a link, "see ...") before the full stop. With ``why``, the claim's own one-sentence
    reason follows (for claims without a test, whose numbers are in it).

    >>> claim_sentence("dag.acyclic", {"verdict": "not reproduced", "exact": True,
    ...                                "why": "No graph is acyclic"}, why=True)
    'The mask graph is acyclic (paper Sec. 6): fails, by an exact computation. No graph is acyclic.'
    """
    effect = effect_text(cid, c.get("test"))
    text = f"{claim_name(cid)}: {verdict_text(c)}" + (f"; {effect}" if effect else "")
    text = _finish(text + (f" ({where})" if where else ""))
    if why and c.get("why"):
        text += " " + _finish(c["why"])
    return text


def claim_counts(claims: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """How many claims have each verdict, an alias counted once with the claim it repeats (not
    at all on its own): every verdict of :data:`copkit.stats.VERDICTS` in that order (0 when
    none), then any other verdict found.

    >>> claim_counts([{"verdict": "reproduced"}, {"verdict": "reproduced",
    ...               "test": {"alias_of": "a"}}, {"verdict": "inconclusive"}])["reproduced"]
    1
    """
    seen = Counter(c["verdict"] for c in claims if not is_alias(c))
    return {**{v: seen[v] for v in stats.VERDICTS}, **{v: n for v, n in seen.items()
                                                       if v not in stats.VERDICTS}}


def counts_phrase(counts: Mapping[str, int]) -> str:
    """Counts of verdicts as a phrase: "2 reproduced, 1 contradicted and 4 undecided".

    >>> counts_phrase({"reproduced": 2, "partly": 0, "not reproduced": 1, "inconclusive": 4})
    '2 reproduced, 1 contradicted and 4 undecided'
    """
    return fmt.tally([(COUNT_WORDS.get(v, v), n) for v, n in counts.items()])


def _rank(verdict: str) -> int:
    return _PRIORITY.index(verdict) if verdict in _PRIORITY else len(_PRIORITY)


def key_claims(results: Mapping[str, Mapping[str, Any]], chapter: str | None = None,
               headline_only: bool = False) -> list[tuple[str, str, dict[str, Any]]]:
    """The claims a box speaks of, as (chapter, id, claim), best first: headline claims before the
    rest, and among those where the paper fails first (contradicted, too small to matter), then
    what holds, holds in part, and is undecided, in the chapters' order; aliases and claims not
    testable at this scale are left out (the counts say them)."""
    found = []
    for ch, r in results.items():
        if chapter is not None and ch != chapter:
            continue
        for i, (cid, c) in enumerate(r["claims"].items()):
            if is_alias(c) or c["verdict"] == "not testable":
                continue
            if headline_only and not c.get("headline"):
                continue
            found.append(((not c.get("headline"), _rank(c["verdict"]), c.get("test") is None,
                           chapter_number(ch), i),
                          (ch, cid, c)))
    return [item for _, item in sorted(found, key=lambda x: x[0])]


def _where(chapter: str, c: Mapping[str, Any], labels: set[str] | None, book: bool) -> str | None:
    section = c.get("section")
    ref = (f"{{ref}}`{section}`" if section and (labels is None or section in labels) else None)
    if not book:
        return f"see {ref}" if ref else None
    name = f"Chapter {chapter_number(chapter)}"
    return f"{name}, {ref}" if ref else f"{{doc}}`{name} <{chapter}>`"


def findings_sentences(results: Mapping[str, Mapping[str, Any]], chapter: str | None = None, *,
                       labels: set[str] | None = None, notes: Iterable[str] = (),
                       max_sentences: int = 6) -> list[str]:
    """The sentences of a "What we found" box, at most ``max_sentences``.

    For ``chapter`` (a key of ``results``): how many of the paper's claims it tests and how each
    came out, then its key claims (:func:`key_claims`) one sentence each, verdict first with the
    effect and its 95% interval, and a link to the section that shows it (when ``labels`` is None
    or holds the claim's section); a claim without a test adds its own reason, which carries its
    numbers. For the whole book (``chapter`` None): the counts over every chapter, the counts of
    the headline claims, then the headline claims the same way, each with its chapter (and
    without their reasons: the chapters' boxes have them). Claims are added while they fit.
    ``notes`` are sentences the caller wrote from its own numbers, added after the counts.

    The counts sentence names the family Holm's correction counted
    (:func:`copkit.results.family_size`); the tests in scope must agree on it, so the whole
    book's results are passed as :func:`copkit.results.book_results` decides them, as the report
    shows them (raw files of chapters run at different times are an error, not the first file's
    family).
    """
    if chapter is not None and chapter not in results:
        raise ValueError(f"no results for chapter {chapter!r}; have {sorted(results)}")
    if max_sentences < 2:
        raise ValueError(f"a box holds at least 2 sentences, got max_sentences={max_sentences}")
    scope = {chapter: results[chapter]} if chapter is not None else results
    claims = [c for r in scope.values() for c in r["claims"].values()]
    if not claims:
        raise ValueError("no claims to report")
    counts = claim_counts(claims)
    n = sum(counts.values())
    of = "claim" if n == 1 else "claims"
    # the family of the tests in scope, which must agree: the book's box is written from results
    # decided together (copkit.results.book_results), as the report's are
    family = family_size(scope)
    corrected = (f"; every p below is corrected for the book's {family} tested "
                 f"claim{'s' if family != 1 else ''} (Holm)"
                 if family and any(c.get("test") for c in claims) else "")
    if chapter is not None:
        out = [f"This chapter sets {n} of the paper's {of} beside its measurements: "
               f"{counts_phrase(counts)}{corrected}."]
    else:
        out = [f"The book sets {n} of the paper's {of} beside measurements on Fashion-MNIST: "
               f"{counts_phrase(counts)}{corrected}."]
        heads = claim_counts(c for c in claims if c.get("headline"))
        if sum(heads.values()):
            out.append(f"Of the {sum(heads.values())} claims the chapters mark as the ones that "
                       f"matter most, {counts_phrase(heads)}.")
    out += [_finish(s) for s in notes]
    said = len(out)
    for ch, cid, c in key_claims(results, chapter, headline_only=chapter is None):
        why = (chapter is not None and effect_text(cid, c.get("test")) is None
               and bool(c.get("why")))
        if said + 1 + why > max_sentences:
            if not why or said + 1 > max_sentences:
                continue
            why = False
        out.append(claim_sentence(cid, c, where=_where(ch, c, labels, chapter is None), why=why))
        said += 1 + why
    if said > max_sentences:
        raise ValueError(f"{said} sentences before any claim: more notes than a box holds "
                         f"({max_sentences})")
    return out


def admonition(sentences: Iterable[str], title: str = FINDINGS_TITLE,
               css_class: str = FINDINGS_CLASS) -> str:
    """Sentences as a MyST admonition of class ``css_class`` (one paragraph), for a Markdown page
    or a glued Markdown output.

    >>> print(admonition(["A holds.", "B fails."]))
    :::{admonition} What we found
    :class: findings
    <BLANKLINE>
    A holds. B fails.
    :::
    """
    body = " ".join(s.strip() for s in sentences)
    if not body:
        raise ValueError("an empty box")
    return f":::{{admonition}} {title}\n:class: {css_class}\n\n{body}\n:::"


def findings_box(results: Mapping[str, Mapping[str, Any]], chapter: str | None = None, *,
                 labels: set[str] | None = None, notes: Iterable[str] = (),
                 max_sentences: int = 6) -> str:
    """The "What we found" box of a chapter, or of the book when ``chapter`` is None: the
    sentences of :func:`findings_sentences` as a MyST admonition of class :data:`FINDINGS_CLASS`.
    """
    return admonition(findings_sentences(results, chapter, labels=labels, notes=notes,
                                         max_sentences=max_sentences))


def glue_box(text: str, key: str = GLUE_KEY) -> None:
    """Show a box (Markdown) where it is computed and glue it under ``key`` for the page's top,
    which pastes it with :data:`PASTE` (``myst_nb.glue``; the cell is tagged ``remove-cell`` so
    that the site shows the box once, at the top, with the numbers of the run that made the
    page). Without myst-nb (JupyterLab with only the ``lab`` extras) it is only shown."""
    from IPython.display import Markdown, display

    try:
        from myst_nb import glue
    except ImportError:
        display(Markdown(text))
        return
    glue(key, Markdown(text), display=True)
