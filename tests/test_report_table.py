"""The cells of the report's claim tables (chapters/06_report.py builds them from
copkit.findings.effect_cell, ours_text and copkit.results.readable) follow the book's number rule
on every claim of the committed book/results: FIDs to one decimal, shares as percentages, no
float noise or scientific notation for ordinary numbers, no dict or list reprs."""

import re
from pathlib import Path

import pytest

from copkit import findings, fmt
from copkit.results import (
    base_model_numbers,
    book_results,
    effect_scale,
    read_results,
    readable,
)

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


def test_base_model_numbers_are_written_as_people_write_them():
    """The report's table of base models: counts stay counts (not 100,000.0%), a spread over seeds
    sits beside its mean and the per-seed lists are not shown, a relative change is a percentage,
    and a replicate CoMAE is held to its model's aim."""
    line = base_model_numbers("mar", {
        "val_loss": 0.08391, "samples": 1000, "pr_k": 3, "seeds": [0, 1, 2],
        "fid_cfg": 151.43, "fid_cfg_sd": 17.61, "fid_cfg_seeds": [140.0, 150.0, 164.3],
        "class_agreement_nocfg": 0.693, "is_ok": True})
    assert line == ("val_loss 0.0839; samples 1,000; pr_k 3; fid_cfg 151.4 ± 17.6 (misses ≤ 30); "
                    "class_agreement_nocfg 69.3% (misses ≥ 70%)")
    replicate = base_model_numbers("comae0_s2", {"val_L_r": 1.3051,
                                                 "val_L_r_change_last_fifth": 0.0541})
    assert replicate == "val_L_r 1.31; val_L_r_change_last_fifth 5.4% (misses < 2%)"
    assert base_model_numbers("comae_photo", {"val_L_r_change_last_fifth": 0.019}) == (
        "val_L_r_change_last_fifth 1.9% (meets < 2%)")
