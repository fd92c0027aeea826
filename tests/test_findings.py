"""copkit.findings: readable claim names and the "What we found" box, on results with planted
verdicts and effects, and on the committed book/results."""

import re
from pathlib import Path

import pytest

from copkit import findings, fmt, stats
from copkit.results import book_results, read_results

ROOT = Path(__file__).resolve().parents[1]
BOOK = read_results(ROOT / "book" / "results")


def _test(effect, lo, hi, p_holm, n=3, paper_effect=None, **extra):
    return {"test": "paired t", "effect": effect, "ci": [lo, hi], "n": n, "unit": "seeds",
            "p_holm": p_holm, "family": 9, "paper_effect": paper_effect, **extra}


def _planted():
    """Two chapters whose claims' verdicts and effects are known."""
    return {
        "01_a": {"claims": {
            "eq1.order_invariant": {"verdict": "not reproduced", "exact": True, "headline": True,
                                    "why": "The sum is the same for 8 orders.",
                                    "section": "ch1-eq1"},
            "def1.order_matters": {"verdict": "reproduced", "headline": True, "why": "w",
                                   "test": _test(87.21, 83.53, 90.9, 4.7e-68, n=100)},
        }},
        "05_b": {"claims": {
            "table5.cvit.top1@78": {"verdict": "inconclusive", "headline": True, "why": "w",
                                    "section": "ch5-table5",
                                    "test": _test(12.78, 10.0, 15.56, 0.0509, paper_effect=3.3)},
            "fig4.top22_on_object": {"verdict": "negligible", "why": "w",
                                     "test": _test(0.0079, 0.0039, 0.0119, 0.003, n=2000,
                                                   smallest=0.05)},
            "table5.rvit.auc": {"verdict": "reproduced", "why": "w",
                                "test": _test(7.75, 6.75, 8.75, 0.0207, paper_effect=13.7)},
            "table5.vit.auc": {"verdict": "reproduced", "why": "w",
                               "test": {**_test(7.75, 6.75, 8.75, 0.0207),
                                        "alias_of": "table5.rvit.auc"}},
            "table5.cvit.top1@0": {"verdict": "partly", "why": "w",
                                   "test": _test(-0.04, -1.47, 1.38, 0.68, expect="equal",
                                                 partial="the 95% interval within 3 points")},
            "table5.vit.top1@0": {"verdict": "not testable", "why": "Not comparable."},
        }},
    }


def test_counts_take_an_alias_once_and_follow_the_verdict_order():
    counts = findings.claim_counts(c for r in _planted().values() for c in r["claims"].values())
    # 8 claims, one an alias of another: 7 counted
    assert sum(counts.values()) == 7
    assert counts["reproduced"] == 2 and counts["negligible"] == 1
    assert counts["not reproduced"] == 1 and counts["not testable"] == 1
    assert list(counts)[:len(stats.VERDICTS)] == list(stats.VERDICTS)
    phrase = findings.counts_phrase(counts)
    for said in ("2 reproduced", "1 reproduced in part", "1 too small to matter",
                 "1 contradicted", "1 undecided"):
        assert said in phrase
    assert phrase.count(",") == 4 and " and 1 " in phrase  # six kinds, as a list is written


def test_every_verdict_has_words_and_a_failure_says_it_fails():
    for v in stats.VERDICTS:
        assert v in findings.VERDICT_LABELS and v in findings.COUNT_WORDS
        c = {"verdict": v, "test": _test(1.0, 0.5, 1.5, 0.01, smallest=0.2)}
        assert findings.verdict_text(c) != v
    assert findings.verdict_text({"verdict": "negligible",
                                  "test": _test(0.01, 0.0, 0.02, 0.001, smallest=0.05)}
                                 ).startswith("fails: the effect is too small to matter")
    assert findings.verdict_text({"verdict": "not reproduced",
                                  "test": _test(-2.0, -3.0, -1.0, 0.01)}).startswith("fails")
    assert findings.verdict_text({"verdict": "inconclusive", "test": _test(1, None, None, None)}
                                 ) == "undecided (its test gives no p)"


def _printed(sentence: str) -> tuple[float, float, float]:
    m = re.search(rf" is ({fmt._NUM})[^(]*\(95% interval ({fmt._NUM}) to ({fmt._NUM})\)",
                  sentence)
    assert m, sentence
    return tuple(fmt._value(g) for g in m.groups())


def test_the_effect_and_interval_print_the_planted_numbers_in_the_claims_units():
    r = _planted()["05_b"]["claims"]
    text = findings.effect_text("table5.cvit.top1@78", r["table5.cvit.top1@78"]["test"])
    assert text == ("CViT's top-1 minus RViT's is +12.8 points (95% interval +10.0 to +15.6) "
                    "over 3 seeds, the paper's +3.3 points")
    # a share difference is printed in points: 0.0079 -> +0.8
    assert _printed(findings.effect_text("fig4.top22_on_object",
                                         r["fig4.top22_on_object"]["test"])) == (0.8, 0.4, 1.2)
    # a claim without a test, or without a described effect, has none
    assert findings.effect_text("table5.vit.top1@0", None) is None
    assert findings.effect_text("no.such.claim", _test(1, 0, 2, 0.1)) is None


def test_an_interval_whose_ends_differ_never_prints_as_a_point():
    # at the claim's own precision both ends would print "+1.2" (one decimal, or two
    # significant figures): they get the decimals that tell them apart
    for name in (findings.ClaimName("x", "y", decimals=1), findings.ClaimName("x", "y")):
        assert name.interval({"effect": 1.236, "ci": [1.234, 1.238]}) == "+1.23 to +1.24"
    # a share in points: 0.01234 and 0.01238 are +1.234 and +1.238 points
    share = findings.ClaimName("x", "y", scale=100.0, decimals=1)
    assert share.interval({"effect": 0.01236, "ci": [0.01234, 0.01238]}) == "+1.23 to +1.24"
    # an interval that is a point stays one
    assert share.interval({"effect": 0.5, "ci": [0.5, 0.5]}) == "+50.0 to +50.0"


def test_the_book_box_refuses_tests_corrected_over_different_families():
    results = _planted()
    results["05_b"]["claims"]["table5.rvit.auc"]["test"]["family"] = 27
    with pytest.raises(ValueError, match="families of \\[9, 27\\]"):
        findings.findings_sentences(results)
    # a chapter's box speaks of its own tests, which its run decided together
    assert "the book's 9 tested claims" in findings.findings_sentences(results, "01_a")[0]


def test_float_noise_in_an_effect_prints_as_zero():
    knee = {"test": "one-sample t", "effect": 0.7799999999999999 - 0.78, "ci": [None, None],
            "n": 3, "unit": "seeds", "margin": 0.07, "mde_family": 2.1817134846620724e-15}
    text = findings.effect_text("knee.cvit.mask_ratio", knee)
    assert text == "our knee minus the paper's, as a mask ratio is 0 (no interval) over 3 seeds"
    assert findings.effect_cell("knee.cvit.mask_ratio", knee) == "0"
    # a real small effect is still written
    assert findings.effect_cell("knee.specific_to_cvit", {"effect": 0.065, "ci": [-0.053, 0.18]}
                                ) == "+0.065 (-0.053 to +0.18)"


def test_effect_cells_and_ours_print_fids_to_one_decimal_and_shares_as_percentages():
    cell = findings.effect_cell("table3.cmar.cfg_scale", {"effect": 9.65, "ci": [-7.49, 26.79]})
    assert cell == "+9.7 FID (-7.5 to +26.8)"
    assert findings.effect_cell("fig4.top22_on_object", {"effect": 0.181, "ci": [0.146, 0.215]}
                                ) == "+18.1 points (+14.6 to +21.5)"
    assert findings.effect_cell("table5.vit.top1@0", None) == fmt.MISSING
    assert findings.ours_text("sec3.3.generation_order",
                              {"(a) class mean": {"mean": 227.569, "std": 2.81, "n": 3}}
                              ) == "(a) class mean: 227.6 ± 2.8 (n=3)"
    assert findings.ours_text("dag.acyclic", {"0.5": {"mutual_share": 0.7079}}) == \
        "0.5: (mutual share 70.8%)"


def test_a_small_value_is_not_printed_as_zero():
    fid = findings.CLAIM_NAMES["table2.mar_c_vs_mar.fid_cfg"]
    assert fid.show(-0.041) == "-0.041 FID" and fid.show(20.11) == "+20.1 FID"
    assert fid.show(0.0) == "0.0 FID" and fid.show(None) == fmt.MISSING


def test_a_chapter_box_leads_with_its_counts_then_failures_then_what_holds():
    results = _planted()
    sentences = findings.findings_sentences(results, "05_b")
    assert sentences[0].startswith("This chapter sets 5 of the paper's claims beside its "
                                   "measurements: ")
    assert sentences[0].endswith("; every p below is corrected for the book's 9 tested claims "
                                 "(Holm).")
    names = [s.split(":")[0] for s in sentences[1:]]
    # the headline first, then the failure, what holds, what holds in part; no alias, nothing
    # untestable
    assert names == [findings.claim_name(c) for c in ("table5.cvit.top1@78",
                                                      "fig4.top22_on_object", "table5.rvit.auc",
                                                      "table5.cvit.top1@0")]
    assert "{ref}`ch5-table5`" in sentences[1] and "(see " in sentences[1]
    assert "fails: the effect is too small to matter" in sentences[2]
    for s in sentences:
        assert fmt.comparison_errors(s) == []
    box = findings.findings_box(results, "05_b")
    assert box.startswith(":::{admonition} What we found\n:class: findings\n\n")
    assert box.endswith("\n:::") and " ".join(sentences) in box


def test_the_counts_sentence_counts_what_the_planted_chapter_holds():
    counts = findings.claim_counts(_planted()["05_b"]["claims"].values())
    first = findings.findings_sentences(_planted(), "05_b")[0]
    assert first.startswith(f"This chapter sets {sum(counts.values())} of the paper's claims")
    assert f"{counts['reproduced']} reproduced," in first


def test_a_claim_without_a_test_brings_its_reason_and_the_box_stops_at_six_sentences():
    results = _planted()
    sentences = findings.findings_sentences(results, "01_a")
    assert sentences[1] == ("Eq. 1, the paper's objective, depends on the order of the patches "
                            "(paper Eq. 1): fails, by an exact computation (see {ref}`ch1-eq1`). "
                            "The sum is the same for 8 orders.")
    # a section the site does not have is not linked
    assert "{ref}" not in findings.findings_sentences(results, "01_a", labels=set())[1]
    many = {"01_a": {"claims": {f"c{i}": {"verdict": "not reproduced", "exact": True,
                                          "why": f"Reason {i}."} for i in range(9)}}}
    got = findings.findings_sentences(many, "01_a")
    # counts + two claims with their reasons (2 each) + one without: 6
    assert len(got) == 4 and sum(1 + ("Reason" in s) for s in got) == 6
    assert findings.findings_sentences(many, "01_a", max_sentences=2)[1].endswith(
        "fails, by an exact computation.")


def test_the_book_box_counts_every_chapter_and_its_headlines_and_links_chapters():
    results = _planted()
    sentences = findings.findings_sentences(results)
    assert sentences[0].startswith("The book sets 7 of the paper's claims")
    assert sentences[1] == ("Of the 3 claims the chapters mark as the ones that matter most, "
                            "1 reproduced, 1 contradicted and 1 undecided.")
    # headlines only: where the paper fails, what holds, what is undecided; each names its chapter
    assert [s.split(":")[0] for s in sentences[2:]] == [
        findings.claim_name(c) for c in ("eq1.order_invariant", "def1.order_matters",
                                         "table5.cvit.top1@78")]
    assert "(Chapter 1, {ref}`ch1-eq1`)" in sentences[2]
    assert "({doc}`Chapter 1 <01_a>`)" in sentences[3]
    assert all(fmt.comparison_errors(s) == [] for s in sentences)


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="no results for chapter"):
        findings.findings_box(_planted(), "09_none")
    with pytest.raises(ValueError, match="empty box"):
        findings.admonition([])
    with pytest.raises(ValueError, match="starts with its number"):
        findings.chapter_number("report")


def test_every_claim_of_the_book_has_a_readable_name():
    ids = {cid for r in BOOK.values() for cid in r["claims"]}
    assert ids and sorted(ids - set(findings.CLAIM_NAMES)) == []
    for cid in ids:
        name = findings.claim_name(cid)
        assert cid not in name and name[0].isupper()
        c = next(r["claims"][cid] for r in BOOK.values() if cid in r["claims"])
        if c.get("test") and not c["test"].get("alias_of"):
            assert findings.CLAIM_NAMES[cid].effect, f"{cid}: say what its effect measures"


@pytest.mark.parametrize("chapter", [None, *BOOK])
def test_the_committed_books_boxes_say_their_results(chapter):
    # the book's box speaks of the files decided together, as the report and the intro read them
    results = book_results(BOOK)[0] if chapter is None else BOOK
    sentences = findings.findings_sentences(results, chapter)
    box = findings.findings_box(results, chapter)
    assert fmt.comparison_errors(box) == []
    assert 2 <= len(sentences) <= 6
    scope = results if chapter is None else {chapter: results[chapter]}
    claims = {cid: c for r in scope.values() for cid, c in r["claims"].items()}
    # the counts: each claim once, whatever the chapters wrote twice
    primaries = [c for c in claims.values() if not (c.get("test") or {}).get("alias_of")]
    assert f" {len(primaries)} of the paper's" in sentences[0]
    # every effect printed is the stored one in the claim's units, to its printed precision
    for s in sentences[1:]:
        if " (95% interval " not in s:
            continue
        cid = next(cid for cid in claims if s.startswith(findings.claim_name(cid) + ":"))
        entry, t = findings.CLAIM_NAMES[cid], claims[cid]["test"]
        for shown, stored in zip(_printed(s), [t["effect"], *t["ci"]]):
            assert abs(shown - entry.scale * stored) <= 0.051 * max(1, abs(shown)), (cid, s)
        # and the verdict it says is the stored one
        assert findings.verdict_text(claims[cid]) in s


def test_the_report_flags_another_commit_a_later_run_and_a_page_from_another_run():
    from copkit.results import run_flags

    results = {"01_a": {"commit": "abc", "written": "2026-12-02T07:00:00+0000"},
               "02_b": {"commit": "old", "written": "2026-12-02T07:00:00+0000"},
               "03_c": {"commit": "abc", "written": "2026-12-02T09:00:00+0000"},
               "04_d": {"commit": "abc", "written": "2026-12-02T07:00:00+0000"}}
    executed = {"01_a": "2026-12-02T07:00:03+00:00", "02_b": "2026-12-02T07:00:03+00:00",
                "03_c": "2026-12-02T09:00:03+00:00", "04_d": "2026-12-02T06:00:00+00:00"}
    flags = run_flags(results, "abc", "2026-12-02T08:00:00+00:00", executed)
    assert flags["01_a"] == []
    assert flags["02_b"] == ["another commit (old)"]
    assert flags["03_c"] == ["ran after this page started"]
    assert flags["04_d"] == ["its page comes from another run than its results file (the page "
                             "ended 1.0 h before the file was written)"]


def test_a_chapter_run_from_uncommitted_changes_is_not_called_another_commit():
    from copkit.results import run_flags

    sha, other = "c2c41e65eb2bedea99ff", "ded15c4e1fbd0000"
    results = {"01_a": {"commit": f"{sha}-dirty"}, "02_b": {"commit": sha},
               "03_c": {"commit": f"{other}-dirty"}}
    for page in (sha, f"{sha}-dirty"):
        flags = run_flags(results, page, "2026-12-02T08:00:00+00:00")
        assert flags["01_a"] == ["run from uncommitted changes on top of c2c41e65eb2b"]
        assert flags["02_b"] == []  # the commit the page's own changes sit on
        assert flags["03_c"] == ["another commit (ded15c4e1fbd with uncommitted changes)"]
