"""The cells of the report's claim tables (chapters/06_report.py builds them from
copkit.findings.effect_cell, ours_text and copkit.results.readable) follow the book's number rule
on every claim of the committed book/results: FIDs to one decimal, shares as percentages, no
float noise or scientific notation for ordinary numbers, no dict or list reprs."""

import re
from pathlib import Path

import pytest

from copkit import findings, fmt
from copkit.results import book_results, effect_scale, read_results, readable

ROOT = Path(__file__).resolve().parents[1]
BOOK, _ = book_results(read_results(ROOT / "book" / "results"))
CLAIMS = [(cid, c) for r in BOOK.values() for cid, c in r["claims"].items()]
# scientific form is for tiny magnitudes only (residuals of exact identities measured down to
# rounding, tolerances such as 1e-6: copkit.fmt.sig below TINY), never for an ordinary number
SCIENTIFIC = re.compile(r"(?<![\w.])[-+]?\d(?:\.\d+)?e[-+]?\d+")
NUMBER = re.compile(r"(?<![\w.])[-+]?\d[\d,]*(?:\.\d+)?(?:e-?\d+)?%?")


def _numbers(text: str) -> list[str]:
    """The printed numbers of a cell, leaving out counts "(n=3)" and keys such as "2.0:"."""
    text = re.sub(r"\(n=[\d,]+\)", "", text)
    text = re.sub(r"(?:^|; |\()[^:;()]*: ", " ", text)  # "CFG 2.0: 222.8" -> " 222.8"
    return NUMBER.findall(text)


def test_the_committed_book_has_claims_of_every_kind():
    fids = [cid for cid, _ in CLAIMS if findings.claim_format(cid).is_fid]
    assert len(CLAIMS) > 30 and len(fids) >= 5


@pytest.mark.parametrize("cid, c", CLAIMS, ids=[cid for cid, _ in CLAIMS])
def test_every_claims_cells_follow_the_number_rule(cid, c):
    effect = findings.effect_cell(cid, c.get("test"))
    ours = findings.ours_text(cid, c["ours"])
    paper = readable(c["paper"])
    for cell in (effect, ours, paper):
        assert not re.search(r"[{}\[\]]|': |\": ", cell), (cid, cell)  # no reprs
        assert not re.search(r"(?<![\w.])-0(?:\.0*)?(?![\d.])", cell), (cid, cell)  # no -0
    # no scientific notation in an effect; in ours only for tiny magnitudes
    assert "e-" not in effect and "e+" not in effect, (cid, effect)
    for tok in SCIENTIFIC.findall(ours):
        assert abs(float(tok)) < fmt.TINY, (cid, tok, ours)
    if findings.claim_format(cid).is_fid:
        # FIDs and FID differences to one decimal
        for tok in _numbers(effect) + _numbers(ours):
            assert re.fullmatch(r"[-+]?[\d,]+\.\d", tok), (cid, tok, effect, ours)


def test_shares_are_percentages_in_ours():
    shares = [(cid, part) for cid, c in CLAIMS
              for part in re.split(r"; |, |\(", findings.ours_text(cid, c["ours"]))
              if re.match(r"[\w ]*\b(share|rate)\b[^:]*:? ", part)]
    assert shares
    for cid, part in shares:
        assert "%" in part, (cid, part)


def test_the_knee_claims_print_no_float_noise():
    knee = dict(CLAIMS)["knee.cvit.mask_ratio"]
    t = knee["test"]
    assert abs(t["effect"]) < 1e-12  # the stored float noise the report printed as -1.11e-16
    assert findings.effect_cell("knee.cvit.mask_ratio", t) == "0"
    entry = findings.claim_format("knee.cvit.mask_ratio")
    assert entry.show(t["mde_family"], unit=False, relative_to=effect_scale(t)) == "0"
    assert findings.ours_text("knee.cvit.mask_ratio", knee["ours"]).startswith("0.78 ± 0 (n=3)")
    assert fmt.MISSING not in findings.effect_cell("knee.specific_to_cvit",
                                                   dict(CLAIMS)["knee.specific_to_cvit"]["test"])
