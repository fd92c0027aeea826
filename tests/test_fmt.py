"""copkit.fmt: one rule for every number the book prints, and comparison sentences written from
their numbers (table-driven: each row is an input and what a reader must see)."""

import re

import numpy as np
import pytest

from copkit import fmt


@pytest.mark.parametrize("x, decimals, want", [
    (1710008.4, 0, "1,710,008"),
    (3.14159, 2, "3.14"),
    (-0.04, 1, "0.0"),            # no "-0.0"
    (-0.0, 2, "0.00"),
    (-0.049, 1, "0.0"),
    (-0.05001, 1, "-0.1"),
    (-12.345, 1, "-12.3"),
    (12345.678, 2, "12,345.68"),
    (0.0, 0, "0"),
    (None, 1, "–"),
    (float("nan"), 1, "–"),
    (float("inf"), 1, "–"),
])
def test_num(x, decimals, want):
    assert fmt.num(x, decimals) == want


@pytest.mark.parametrize("x, digits, want", [
    (358.4, 2, "358"),             # never fewer than the integer digits: not "3.6e+02"
    (449.6, 2, "450"),
    (0.01234, 2, "0.012"),
    (0.998, 2, "1.0"),             # not "1.00e+00"
    (1.0, 3, "1.00"),
    (150_700_000.0, 4, "150,700,000"),
    (22322432, 3, "22,322,432"),
    (0.00012, 2, "0.00012"),
    (1.494e-15, 2, "1.5e-15"),     # an extraordinary magnitude: short scientific form
    (5.13e-06, 2, "5.1e-6"),
    (-3.2e-5, 2, "-3.2e-5"),
    (2.5e17, 3, "2.50e17"),
    (0.0, 2, "0"),
    (-0.0, 2, "0"),
    (9.96, 2, "10"),
    (99.96, 3, "100"),
    (None, 2, "–"),
])
def test_sig(x, digits, want):
    assert fmt.sig(x, digits) == want


@pytest.mark.parametrize("x, decimals, want", [
    (0.6, 2, "+0.60"), (-0.0612, 2, "-0.06"), (-0.001, 2, "0.00"), (0.004, 2, "0.00"),
    (1234.5, 0, "+1,234"), (-0.04, 1, "0.0"), (None, 2, "–"),
])
def test_signed(x, decimals, want):
    assert fmt.signed(x, decimals) == want


@pytest.mark.parametrize("x, want", [(140.9312, "140.9"), (7.114, "7.1"), (12.0, "12.0"), (-0.01, "0.0")])
def test_fid_has_one_decimal(x, want):
    assert fmt.fid(x) == want


@pytest.mark.parametrize("p, want", [
    (0.0591, "0.059"), (0.92, "0.92"), (0.0496, "0.0496"), (0.0504, "0.0504"), (0.05, "0.050"),
    (0.00018, "0.00018"), (2.3e-5, "2.3e-5"), (1.0e-6, "1.0e-6"), (9.9e-7, "< 1e-6"),
    (1.8e-69, "< 1e-6"), (0.0, "< 1e-6"), (0.998, "1.0"), (1.0, "1.0"), (None, "–"),
])
def test_pvalue(p, want):
    assert fmt.pvalue(p) == want


def test_pvalue_outside_0_1_is_an_error():
    with pytest.raises(ValueError, match="lies in"):
        fmt.pvalue(1.2)


@pytest.mark.parametrize("x, decimals, want", [
    (0.8115, 1, "81.2%"), (0.8107, 1, "81.1%"), (0.22, 0, "22%"), (-0.0001, 1, "0.0%"),
    (1.0, 1, "100.0%"), (0.0713, 1, "7.1%"), (None, 1, "–"),
])
def test_share(x, decimals, want):
    assert fmt.share(x, decimals) == want


@pytest.mark.parametrize("seconds, want", [
    (0.4, "0.4 s"), (41.1, "41 s"), (189.3, "3.2 min"), (2178.7, "36 min"), (5400, "1.5 h"),
    (86400 * 5, "5.0 days"), (1_710_008 * 3600, "195 years"), (None, "–"),
])
def test_duration(seconds, want):
    assert fmt.duration(seconds) == want


def test_count_and_ordinal():
    assert fmt.count(70000) == "70,000" and fmt.count(12.0) == "12" and fmt.count(None) == "–"
    with pytest.raises(ValueError):
        fmt.count(1.5)
    assert [fmt.ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 102, 111)] == \
        ["1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "102nd", "111th"]


def test_no_function_ever_prints_minus_zero_or_plus_exponents():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0, 1e-3, 300), rng.normal(0, 1, 300),
                             rng.normal(0, 1e6, 300),
                             10.0 ** rng.uniform(-20, 20, 300) * rng.choice([-1, 1], 300)])
    for v in values:
        for text in (fmt.num(v, 1), fmt.num(v, 0), fmt.sig(v, 2), fmt.sig(v, 4), fmt.signed(v, 2),
                     fmt.share(v / 1e6), fmt.fid(v)):
            assert not re.search(r"-0(\.0*)?(?![\d.])", text), (v, text)  # -0, -0.0, -0.00
            assert "e+" not in text and "e-0" not in text, (v, text)
        if 1e-4 <= abs(v) < 1e15:
            assert "e" not in fmt.sig(v, 2), v  # ordinary magnitudes: positional


# the differences the report printed as "-1.11e-16", "0.7800 ± 1.4e-16", "2.18e-15": float noise of
# equal measurements (0.78 - 0.78 in binary), against the scale of the numbers they stand among
KNEE_EFFECT = 0.7799999999999999 - 0.78


@pytest.mark.parametrize("x, scale, want", [
    (KNEE_EFFECT, 0.78, 0.0),
    (-1.3597399555105182e-16, 0.78, 0.0),       # the sd of three equal knees
    (2.1817134846620724e-15, 0.07, 0.0),        # a detectable effect made of that sd
    (-5e-13, 1.0, 0.0),                         # below 1e-12 of the scale
    (2e-12, 1.0, 2e-12),                        # above it: kept
    (1e-9, 0.78, 1e-9),                         # a small real difference is kept
    (0.5, 1e11, 0.5),                           # 0.5 beside 1e11: above 1e-12 of it
    (1.494e-15, None, 1.494e-15),               # no scale: its own; a measured residual stays
    (-3.0, 0.0, -3.0),
])
def test_snap_makes_float_noise_zero_relative_to_the_scale(x, scale, want):
    assert fmt.snap(x, scale) == want
    assert fmt.ZERO_TOL == 1e-12


def test_noise_prints_as_zero_without_a_sign_and_a_real_difference_as_itself():
    assert fmt.signed(KNEE_EFFECT, digits=2, scale=0.78) == "0"
    assert fmt.signed(KNEE_EFFECT, 3, scale=0.78) == "0.000"
    assert fmt.sig(-1.3597399555105182e-16, 2, scale=0.78) == "0"
    assert fmt.sig(2.1817134846620724e-15, 3, scale=0.07) == "0"
    assert fmt.num(-4e-14, 3, scale=0.07) == "0.000"
    # without a scale, or above the tolerance, the value prints as before
    assert fmt.signed(KNEE_EFFECT, digits=2) == "-1.1e-16"
    assert fmt.sig(1.494e-15) == "1.5e-15"
    assert fmt.signed(-2.5e-9, digits=2, scale=0.78) == "-2.5e-9"
    assert fmt.signed(-0.0612, scale=0.78) == "-0.06"
    assert fmt.sig(0.7799999999999999, 4, scale=0.78) == "0.7800"


def test_no_snapped_value_ever_prints_minus_zero():
    rng = np.random.default_rng(1)
    scales = 10.0 ** rng.uniform(-6, 6, 200)
    for scale in scales:
        for v in (-scale * 1e-13, -scale * 1e-16, -scale * 9.9e-13, scale * 1e-14):
            for text in (fmt.sig(v, 2, scale=scale), fmt.sig(v, 4, scale=scale),
                         fmt.signed(v, digits=3, scale=scale), fmt.signed(v, 2, scale=scale),
                         fmt.num(v, 1, scale=scale)):
                assert not text.startswith(("-", "+")) and "e" not in text, (v, scale, text)
                assert float(text) == 0.0, (v, scale, text)


# ---------------------------------------------------------------------------------------------
# Comparison sentences


@pytest.mark.parametrize("x, y, want", [
    (0.8107, 0.8115, "own order (81.1%) is below the fixed order (81.2%)"),
    (0.8124, 0.8107, "own order (81.2%) is above the fixed order (81.1%)"),
    # 81.149% and 81.151% differ when printed (81.1%, 81.2%): the words follow the printed values
    (0.81149, 0.81151, "own order (81.1%) is below the fixed order (81.2%)"),
    (0.81149, 0.81141,
     "own order (81.1%) is equal to the fixed order (81.1%) to the printed precision"),
])
def test_compare_writes_the_order_the_numbers_have(x, y, want):
    assert fmt.compare("own order", x, "the fixed order", y) == want


def test_compare_words_and_better():
    assert fmt.compare("CMAR", 199.94, "MAR", 170.02, fmt.fid, words=("higher than", "lower than"),
                       better="lower") == "CMAR (199.9) is higher than MAR (170.0), worse"
    assert (fmt.compare("CViT", 0.72, "ViT", 0.70, better="higher")
            == "CViT (72.0%) is above ViT (70.0%), better")
    with pytest.raises(ValueError, match="missing"):
        fmt.compare("a", None, "b", 1.0)


def test_comparison_errors_catches_a_sentence_whose_order_disagrees_with_its_numbers():
    # Chapter 5's sentence as the issue found it: the numbers swapped against the words.
    assert fmt.comparison_errors("own order (81.1%) is above the fixed order (81.2%)") == \
        ["(81.1%) is above the fixed order (81.2%)"]
    assert fmt.comparison_errors("A (3.0) is equal to B (3.1)") == ["(3.0) is equal to B (3.1)"]
    assert (fmt.comparison_errors("A (-2.0) is lower than B (-1.0); C (1,200) is more than D "
                                  "(999)") == [])
    assert fmt.comparison_errors("no comparison here (81.1%)") == []


def test_every_sentence_compare_writes_passes_the_check_and_its_opposite_does_not():
    rng = np.random.default_rng(1)
    for _ in range(500):
        x, y = rng.uniform(0, 1, 2)
        for show in (fmt.share, fmt.fid, lambda v: fmt.num(v, 2), lambda v: fmt.sig(v, 2)):
            text = fmt.compare("A", x, "B", y, show)
            assert fmt.comparison_errors(text) == [], text
            if " is above " in text:
                assert fmt.comparison_errors(text.replace(" is above ", " is below ")) != []
            elif " is below " in text:
                assert fmt.comparison_errors(text.replace(" is below ", " is above ")) != []


# The camera-photo sentence of Chapter 1 (issue 27): its table moved greedy-reversed from 4th to 2nd
# place, and the text said "the ranking of the orders is the same".
FASHION = {"greedy": -215.8, "random": -128.6, "raster": -56.5, "greedy reversed": -40.4,
           "anti-greedy": -0.7}
PHOTO = {"greedy": -405.9, "greedy reversed": -402.1, "random": -381.5, "raster": -323.7,
         "anti-greedy": -313.2}


def test_ranking_moves_names_every_move_of_chapter_1s_photo_table():
    text = fmt.ranking_moves(FASHION, PHOTO)
    assert text == ("greedy and anti-greedy keep their places (1st, 5th); greedy reversed moves "
                    "from 4th to 2nd place, random from 2nd to 3rd, raster from 3rd to 4th")
    assert "same" not in text


def test_ranking_moves_says_same_only_when_it_is():
    assert fmt.ranking_moves(FASHION, {k: v * 2 for k, v in FASHION.items()}) == \
        "the ranking is the same (greedy, random, raster, greedy reversed, anti-greedy)"
    # ties on the printed values share a place
    assert fmt.ranking_moves({"a": 1.0, "b": 2.0}, {"a": 1.01, "b": 1.04},
                             show=lambda v: fmt.num(v, 1)) == \
        "a keeps its place (1st); b moves from 2nd to 1st place"
    assert fmt.ranking_moves({"a": 1.0, "b": 2.0}, {"a": 2.0, "b": 1.0}, lower_first=False) == \
        "a moves from 2nd to 1st place, b from 1st to 2nd"
    with pytest.raises(ValueError, match="different entries"):
        fmt.ranking_moves({"a": 1.0}, {"b": 1.0})


def test_tally():
    assert fmt.tally({"inside": 5, "on the edge": 4, "on the background": 1}, of=10) == \
        "5 of 10 inside, 4 on the edge and 1 on the background"
    assert fmt.tally({"inside": 10, "on the edge": 0}, of=10) == "10 of 10 inside"
    assert fmt.tally({"inside": 0}, zeros=True) == "0 inside"
    with pytest.raises(ValueError, match="sum to 9"):
        fmt.tally({"a": 4, "b": 5}, of=10)
    assert fmt.tally([]) == "none"


def test_by_sign_chooses_the_words_from_the_sign_printed_beside_them():
    assert fmt.by_sign(1.4, "raise", "do not raise") == "raise"
    assert fmt.by_sign(0.0, "raise", "do not raise") == "do not raise"
    assert fmt.by_sign(-5.7, "helps", "does not help") == "does not help"
    with pytest.raises(ValueError):
        fmt.by_sign(float("nan"), "a", "b")


# --- Chapter 5's two sentences that contradicted their numbers (issue 27), written from them now


def test_the_own_versus_fixed_order_sentence_keeps_each_number_with_its_order():
    """The committed Chapter 5 wrote "81.2% against 81.1%" for own against fixed order while its
    table had own 81.1 and fixed 81.2: the sentence must name own first and print its number."""
    from copkit.curves import order_gain_text

    text = order_gain_text(82.885, 82.953, own_top1=81.07, fixed_top1=81.17, ratio=0.78)
    assert fmt.comparison_errors(text) == []
    own, fixed = text.index("own order (81.1%)"), text.index("fixed order (81.2%)")
    assert own < fixed and "(81.1%) is below" in text
    assert "own order (82.9) is below" in text and "a gain of -0.1 AuC points" in text
    # the other way round, the words turn with the numbers
    flipped = order_gain_text(83.5, 82.0, own_top1=81.9, fixed_top1=80.2, ratio=0.78)
    assert "(83.5) is above" in flipped and "(81.9%) is above" in flipped
    assert "a gain of +1.5" in flipped and fmt.comparison_errors(flipped) == []


def test_the_knee_sentence_says_the_grid_holds_the_papers_ratio_when_it_does():
    """The committed sentence said the ratio grid "steps by up to 0.083" beside a knee of 0.825
    for every seed, although 0.78 was on the grid: it blamed the grid for a difference the grid
    did not make."""
    from copkit.curves import knee_text

    grid = [0.0, 0.0825, 0.165, 0.2475, 0.3, 0.33, 0.4125, 0.495, 0.5, 0.5775, 0.66, 0.7425,
            0.78, 0.825, 0.9075, 0.99]
    text = knee_text([0.825, 0.825, 0.825], grid, 0.78)
    assert "steps by up to" not in text
    assert "(0.82) is above the paper's (0.78)" in text
    assert "0.78 is itself a point of our ratio grid" in text and "between 0.74 and 0.82" in text
    assert fmt.comparison_errors(text) == []
    # a grid without 0.78: the sentence names its nearest points instead
    coarse = knee_text([0.66, 0.66], [0.0, 0.33, 0.66, 0.99], 0.78)
    assert "no point at 0.78, its nearest are 0.66 and 0.99" in coarse
    assert "(0.66) is below the paper's (0.78)" in coarse
    # a knee on the paper's ratio, a range over the seeds, and no knee at all
    assert knee_text([0.78], grid, 0.78).endswith(
        "(0.78) to the printed precision; 0.78 is a point of our ratio grid.")
    spread = knee_text([0.66, 0.9075, float("nan")], grid, 0.78)
    assert "between 0.66 and 0.91" in spread and "none for 1 seed(s)" in spread
    assert "their mean (0.78)" in spread
    assert "finds no knee" in knee_text([float("nan")], grid, 0.78)
    with pytest.raises(ValueError):
        knee_text([], grid, 0.78)


# Chapter 2's temperature sentence (issue 27): it said "L_c and its gradient on the masks fade",
# while along the path the temperature took (0.100 -> 0.0846 at weight 0.01) L_c fell by 5% and
# the gradient norm on the masks rose (0.0198 -> 0.0212), and over the figure's whole range of
# temperatures (down to 0.042) it rose by half.
def test_trend_never_calls_a_flat_or_rising_curve_a_fall():
    assert fmt.trend("its gradient norm", 0.019783, 0.021152) == \
        "its gradient norm stays within 10% (from 0.0198 to 0.0212)"
    assert fmt.trend("its gradient norm", 0.019783, 0.030875) == \
        "its gradient norm rises by 56% (from 0.0198 to 0.0309)"
    assert fmt.trend("L_c", 1.3416, 1.2765, flat=0.01) == "L_c falls by 5% (from 1.34 to 1.28)"
    assert fmt.trend("tau", 0.0846, 0.08457, lambda v: fmt.num(v, 3)) == "tau stays at 0.085"
    assert fmt.trend("x", 0.0, -2.0) == "x falls from 0 to -2.00"
    for a, b in [(1.0, 0.5), (0.5, 1.0), (-1.0, -3.0), (2.0, 2.05)]:
        text = fmt.trend("y", a, b)
        assert ("falls" in text) == (b < a and abs(b - a) >= 0.1 * abs(a))
        assert ("rises" in text) == (b > a and abs(b - a) >= 0.1 * abs(a))
    with pytest.raises(ValueError, match="missing"):
        fmt.trend("y", float("nan"), 1.0)


def test_a_narrow_interval_is_printed_with_the_decimals_that_tell_its_ends_apart():
    """Chapter 3's paired test printed "+0.02 (95% interval +0.02 to +0.02)": an interval that
    reads as a point. The ends now print apart, and a wide interval keeps its two decimals."""
    from copkit.results import test_text

    row = {"test": "paired t", "n": 2000, "unit": "test images", "effect": 0.0212,
           "ci": [0.0193, 0.0231], "p": 1e-9}
    assert "+0.021 (95% interval +0.019 to +0.023)" in test_text(row)
    wide = {**row, "effect": 0.6, "ci": [-0.06, 1.26]}
    assert "+0.60 (95% interval -0.06 to +1.26)" in test_text(wide)
    same = {**row, "effect": 0.5, "ci": [0.5, 0.5]}  # a degenerate interval: no endless search
    assert "+0.50 (95% interval +0.50 to +0.50)" in test_text(same)
    for lo, hi in ((0.0193, 0.0231), (-1e-5, 2e-5), (0.123456, 0.123457)):
        d = fmt.interval_decimals(lo, hi)
        assert fmt.num(lo, d) != fmt.num(hi, d) or d == 6
