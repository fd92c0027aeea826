"""copkit.stats against truths it does not compute itself: scipy's tests and intervals, Holm by
closed testing over every subset, published sample sizes, the noncentral t by its definition,
and simulations whose rates have a known value (each with its binomial error)."""

import itertools
import json
import math

import numpy as np
import pytest
from scipy import integrate, optimize
from scipy import stats as st

from copkit.stats import (
    Partial,
    bootstrap_ci,
    claim_row,
    detectable_effect,
    equivalence,
    fill,
    holm,
    min_detectable_effect,
    one_sample,
    paired,
    power,
    verdict,
    welch,
)


def within(rate: float, expected: float, draws: int, k: float = 3.0) -> bool:
    """Is an observed rate within k binomial standard errors of the expected one?"""
    return abs(rate - expected) <= k * math.sqrt(expected * (1 - expected) / draws)


# --- Holm ---------------------------------------------------------------------------------------

def test_holm_hand_worked():
    # Sorted: d .005 x4 = .02, a .01 x3 = .03, c .03 x2 = .06, b .04 x1 = .04 -> running max .06.
    adj = holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.005, "e": float("nan"), "f": None})
    assert adj["a"] == pytest.approx(0.03) and adj["b"] == pytest.approx(0.06)
    assert adj["c"] == pytest.approx(0.06) and adj["d"] == pytest.approx(0.02)
    assert math.isnan(adj["e"]) and math.isnan(adj["f"])  # untested: out of the family (m = 4), NaN
    assert holm({"x": 0.6, "y": 0.7}) == {"x": 1.0, "y": 1.0}  # capped at 1
    assert holm({"x": 0.02, "y": 0.02}) == {"x": 0.04, "y": 0.04}
    assert holm({"only": 0.013}) == {"only": 0.013}
    with pytest.raises(ValueError):
        holm({"x": 1.2})


def _holm_by_closed_testing(p: list[float]) -> list[float]:
    """Holm is the closed test of Bonferroni tests: H_i's adjusted p is the largest Bonferroni p,
    min(1, |S| * min_{j in S} p_j), over every intersection S that contains i."""
    idx = [i for i, v in enumerate(p) if not math.isnan(v)]
    out = [float("nan")] * len(p)
    for i in idx:
        others = [j for j in idx if j != i]
        out[i] = max(min(1.0, (len(s) + 1) * min([p[i]] + [p[j] for j in s]))
                     for r in range(len(others) + 1) for s in itertools.combinations(others, r))
    return out


def test_holm_matches_closed_testing_over_all_subsets():
    rng = np.random.default_rng(1)
    for _ in range(150):
        m = int(rng.integers(1, 8))
        p = np.round(rng.uniform(0, 0.3, m) ** rng.uniform(0.5, 3), 2)  # ties and small values
        p[rng.uniform(size=m) < 0.15] = np.nan
        keys = [f"c{i}" for i in range(m)]
        adj = holm(dict(zip(keys, p.tolist())))
        np.testing.assert_allclose([adj[k] for k in keys], _holm_by_closed_testing(p.tolist()),
                                   rtol=1e-12, atol=0, equal_nan=True)


def test_holm_matches_statsmodels_when_installed():
    multipletests = pytest.importorskip("statsmodels.stats.multitest").multipletests
    p = np.random.default_rng(2).uniform(0, 0.2, 12)
    adj = holm({str(i): v for i, v in enumerate(p)})
    np.testing.assert_allclose([adj[str(i)] for i in range(12)], multipletests(p, method="holm")[1])


# --- tests and their intervals ------------------------------------------------------------------

def test_welch_paired_one_sample_agree_with_scipy():
    rng = np.random.default_rng(3)
    for n_a, n_b in [(2, 2), (3, 5), (5, 5), (10, 4)]:
        a, b = rng.normal(1, 1, n_a), rng.normal(0, 2, n_b)
        r, ref = welch(a, b), st.ttest_ind(a, b, equal_var=False)
        assert r.test == "welch t" and r.n == (n_a, n_b) and r.unit == "seeds"
        assert (r.p == pytest.approx(ref.pvalue, rel=1e-10)
                and r.effect == pytest.approx(a.mean() - b.mean()))
        assert r.ci == pytest.approx(tuple(ref.confidence_interval(0.95)), rel=1e-9)
        b = a - rng.normal(0.5, 1, n_a)
        r, ref = paired(a, b, unit="test images"), st.ttest_rel(a, b)
        assert r.test == "paired t" and r.unit == "test images"
        assert (r.p == pytest.approx(ref.pvalue, rel=1e-10)
                and r.effect == pytest.approx((a - b).mean()))
        assert r.ci == pytest.approx(tuple(ref.confidence_interval(0.95)), rel=1e-9)
        r, ref = one_sample(a, 0.7), st.ttest_1samp(a, 0.7)
        assert (r.p == pytest.approx(ref.pvalue, rel=1e-10)
                and r.effect == pytest.approx(a.mean() - 0.7))
        assert r.ci == pytest.approx(tuple(np.array(ref.confidence_interval(0.95)) - 0.7), rel=1e-9)


def test_pairing_sees_a_shift_that_welch_misses():
    # Five seeds with a large seed-to-seed spread, each measured two ways, the second 0.1 lower.
    seeds = np.array([70.0, 74.0, 71.5, 76.0, 72.5])
    noise = np.array([0.02, -0.01, 0.015, -0.02, 0.0])
    a, b = seeds, seeds - 0.1 + noise
    assert paired(a, b).p < 0.001
    assert welch(a, b).p > 0.9


def test_no_spread_or_one_run_is_untested():
    for r in (welch([1.0], [2.0, 3.0]), paired([1.0, 2.0], [0.0, 1.0]), one_sample([5.0], 4.0),
              paired([1.0], [0.0], method="sign-flip")):
        assert math.isnan(r.p) and all(math.isnan(c) for c in r.ci)
    assert verdict("higher", paired([1.0, 2.0], [0.0, 1.0]), float("nan")) == "inconclusive"
    with pytest.raises(ValueError):
        paired([1.0, 2.0], [1.0])
    with pytest.raises(ValueError):
        welch([1.0, float("nan")], [1.0, 2.0])


def test_t_intervals_cover_the_true_difference_at_the_nominal_rate():
    rng = np.random.default_rng(4)
    draws = 2000
    # paired: 4 seeds, the true mean difference 0.3; one-sample: 3 seeds against 10.
    a = rng.normal(5.0, 2.0, (draws, 4))
    b = a - 0.3 + rng.normal(0, 0.5, (draws, 4))
    cover = np.mean([lo <= 0.3 <= hi for lo, hi in (paired(x, y).ci for x, y in zip(a, b))])
    assert within(cover, 0.95, draws)
    v = rng.normal(10.0, 1.0, (draws, 3))
    cover = np.mean([lo <= 0.0 <= hi for lo, hi in (one_sample(x, 10.0).ci for x in v)])
    assert within(cover, 0.95, draws)
    # Welch: unequal sizes and spreads (its interval is approximate: allow a little more).
    a, b = rng.normal(1.0, 1.0, (draws, 3)), rng.normal(0.0, 3.0, (draws, 8))
    cover = np.mean([lo <= 1.0 <= hi for lo, hi in (welch(x, y).ci for x, y in zip(a, b))])
    assert within(cover, 0.95, draws, k=4)


def test_bootstrap_over_test_images_covers_at_about_the_nominal_rate():
    rng = np.random.default_rng(5)
    draws = 300
    x = rng.exponential(1.0, (draws, 80))  # skewed per-image scores, true mean 1
    cover = np.mean([(iv.low <= 1.0 <= iv.high) for iv in
                     (bootstrap_ci(v, n_boot=1000, seed=i, unit="test images")
                      for i, v in enumerate(x))])
    assert 0.89 <= cover <= 0.985  # percentile bootstrap at n = 80: nominal up to a small skew bias


def test_bootstrap_resamples_what_it_says():
    rng = np.random.default_rng(6)
    n = 2000
    base = rng.normal(0, 3, n)  # a per-image difficulty both models share
    a, b = base + rng.normal(0.2, 0.5, n), base + rng.normal(0, 0.5, n)
    pairs = bootstrap_ci(np.column_stack([a, b]), n_boot=2000, seed=0, unit="test images")
    assert pairs.resampled == "test images" and pairs.estimate == pytest.approx((a - b).mean())
    t = paired(a, b).ci  # rows kept whole: the interval of the paired differences
    assert (pairs.low == pytest.approx(t[0], abs=0.01)
            and pairs.high == pytest.approx(t[1], abs=0.01))
    indep = bootstrap_ci((a, b), n_boot=2000, seed=0, unit="seeds")  # each side on its own
    w = welch(a, b).ci
    assert (indep.low == pytest.approx(w[0], abs=0.03)
            and indep.high == pytest.approx(w[1], abs=0.03))
    assert indep.high - indep.low > 4 * (pairs.high - pairs.low)
    # The record says which interval it carries; the same seed gives the same interval.
    r = paired(a, b, ci="bootstrap", unit="test images", n_boot=2000)
    assert r.ci_method == "percentile bootstrap over test images" and r.p == paired(a, b).p
    assert r.ci == paired(a, b, ci="bootstrap", unit="test images", n_boot=2000).ci
    median = bootstrap_ci(a, lambda s: np.median(s, axis=1), n_boot=500, unit="test images")
    assert (median.estimate == pytest.approx(np.median(a))
            and median.low < np.median(a) < median.high)
    with pytest.raises(ValueError):
        bootstrap_ci(a, unit="")


def test_sign_flip_matches_scipy_permutation_test():
    rng = np.random.default_rng(7)
    for n in (5, 7, 10):
        a, b = rng.normal(0.8, 1, n), rng.normal(0, 1, n)
        ref = st.permutation_test((a - b,), np.mean, permutation_type="samples", n_resamples=np.inf)
        r = paired(a, b, method="sign-flip")
        assert r.test == "paired sign-flip" and r.p == pytest.approx(ref.pvalue, rel=1e-12)
    # Beyond 16 pairs: random flips, close to scipy's own random flips.
    a, b = rng.normal(0.4, 1, 30), rng.normal(0, 1, 30)
    ref = st.permutation_test((a - b,), np.mean, permutation_type="samples", n_resamples=20000,
                              random_state=1)
    assert paired(a, b, method="sign-flip").p == pytest.approx(ref.pvalue, abs=0.015)


def test_sign_flip_cannot_reject_with_three_seeds_and_its_interval_inverts_the_test():
    r = paired([3.0, 2.0, 5.0], [0.0, 0.1, 0.2], method="sign-flip")
    assert r.p == 0.25 and r.ci == (-math.inf, math.inf)  # 2 / 2**3: no 3 seeds can do better
    # No spread is no obstacle to flipping signs: 7 equal positive differences give 2 / 2**7.
    assert paired(np.full(7, 2.0), np.ones(7), method="sign-flip").p == pytest.approx(2 / 2**7)
    # while the t-test has no spread to use
    assert math.isnan(paired(np.full(7, 2.0), np.ones(7)).p)
    rng = np.random.default_rng(8)
    a, b = rng.normal(1.0, 1.0, 9), np.zeros(9)
    lo, hi = paired(a, b, method="sign-flip").ci
    assert lo < (a - b).mean() < hi
    eps = 1e-6 * (hi - lo)
    # just inside: not rejected; just outside: rejected
    for edge, inward in ((lo, eps), (hi, -eps)):
        assert paired(a - (edge + inward), b, method="sign-flip").p >= 0.05
        assert paired(a - (edge - inward), b, method="sign-flip").p < 0.05


# --- verdicts on planted data -------------------------------------------------------------------

def test_a_true_effect_at_large_n_is_reproduced():
    rng = np.random.default_rng(9)
    for _ in range(20):
        base = rng.normal(0.7, 0.1, 500)  # per-image accuracy of one model, two ways
        a, b = base + rng.normal(0.02, 0.05, 500), base
        r = paired(a, b, unit="test images")
        assert verdict("higher", r, r.p) == "reproduced"
        assert verdict("lower", r, r.p) == "not reproduced"


def test_a_zero_effect_is_inconclusive():
    rng = np.random.default_rng(10)
    # The check: 200 draws, 5 seeds a side, one claim tested alone at alpha = 0.05.
    # Inconclusive is then exactly 95% in expectation; allow the draws' binomial error.
    a, b = rng.normal(0, 1, (200, 5)), rng.normal(0, 1, (200, 5))
    verdicts = [verdict("lower", r, r.p) for r in (welch(x, y) for x, y in zip(a, b))]
    assert "partly" not in verdicts
    assert (within(verdicts.count("inconclusive") / 200, 0.95, 200)
            and verdicts.count("inconclusive") >= 181)
    # Calibration on more draws: 95% inconclusive, a false "reproduced" alpha / 2 = 2.5%.
    a, b = rng.normal(0, 1, (4000, 4)), rng.normal(0, 1, (4000, 4))
    verdicts = [verdict("higher", r, r.p) for r in (paired(x, y) for x, y in zip(a, b))]
    assert within(verdicts.count("inconclusive") / 4000, 0.95, 4000)
    assert within(verdicts.count("reproduced") / 4000, 0.025, 4000)


def test_a_non_significant_sign_is_never_partly_nor_not_reproduced():
    # The p-values behind main's "partly" (right sign) and "not reproduced" (wrong sign).
    for p, sign in [(0.92, -1), (0.66, -1), (0.49, -1), (0.41, -1), (0.65, 1), (0.58, 1), (0.57, 1),
                    (0.21, 1), (0.16, 1)]:
        rec = {"effect": 0.1 * sign, "ci": [0.1 * sign - 0.5, 0.1 * sign + 0.5]}
        assert verdict("lower", rec, p) == "inconclusive"
    # Planted: zero effects whose test lands at p >= 0.85, whatever the sign.
    rng = np.random.default_rng(11)
    a, b = rng.normal(0, 1, (3000, 3)), rng.normal(0, 1, (3000, 3))
    recs = [r for r in (paired(x, y) for x, y in zip(a, b)) if r.p >= 0.85]
    assert len(recs) > 100 and {r.effect > 0 for r in recs} == {True, False}
    for r in recs:
        for expect in ("lower", "higher"):
            for crit in (None, Partial.ci_beyond(0.0, expect), Partial.ci_beyond(0.0, "lower"),
                         Partial.ci_beyond(0.0, "higher")):
                assert verdict(expect, r, r.p, partial=crit) == "inconclusive"


def test_an_opposite_significant_effect_is_not_reproduced():
    rng = np.random.default_rng(12)
    a, b = rng.normal(10.0, 0.2, 5), rng.normal(9.0, 0.2, 5)  # a is higher; the claim said lower
    r = welch(a, b)
    assert r.p < 1e-4 and verdict("lower", r, r.p) == "not reproduced"
    assert verdict("lower", r, 0.2) == "inconclusive"  # the same effect, not significant after Holm


def test_a_stated_partial_criterion_gives_partly_only_when_it_holds():
    rng = np.random.default_rng(13)
    # The claim: top-1 reaches the paper's 78 (expect "higher" than 78), partly if within 2 points
    # (the criterion is on the effect, ours minus 78).
    within2 = Partial.ci_within(-2.0, 2.0, "within 2 points of the paper's 78")
    close, far = one_sample(rng.normal(77.0, 0.2, 5),
                            78.0), one_sample(rng.normal(72.0, 0.2, 5), 78.0)
    assert close.p < 0.05 and far.p < 0.05 and close.effect < 0 and far.effect < 0
    assert verdict("higher", close, close.p, partial=within2) == "partly"
    assert verdict("higher", close, close.p) == "not reproduced"
    assert verdict("higher", far, far.p, partial=within2) == "not reproduced"
    # A significant right direction is "reproduced" whatever the partial criterion says.
    above = one_sample(rng.normal(79.0, 0.2, 5), 78.0)
    assert verdict("higher", above, above.p, partial=within2) == "reproduced"
    # A right direction clear of zero by its own interval, but not after Holm: partly only with
    # the criterion stated.
    rec = {"effect": -0.5, "ci": [-0.8, -0.2]}
    assert verdict("lower", rec, 0.2) == "inconclusive"
    assert verdict("lower", rec, 0.2, partial=Partial.ci_beyond(0.0, "lower")) == "partly"
    assert verdict("lower", rec, 0.2, partial=Partial.ci_beyond(-0.5, "lower")) == "inconclusive"
    # Read back from a results file: the criterion's evaluated truth value.
    assert verdict("lower", rec, 0.2, partial=True) == "partly"
    assert verdict("lower", rec, 0.2, partial=False) == "inconclusive"
    assert not Partial.ci_beyond(0.0, "lower")({"effect": -0.5, "ci": [None, None]})
    with pytest.raises(TypeError):  # a bare callable is not a stated criterion
        verdict("lower", rec, 0.2, partial=lambda r: r["effect"] < 0)
    with pytest.raises(ValueError):
        verdict("smaller", rec, 0.2)
    assert verdict("lower", None, None) == "not testable"


def test_equivalence_p_is_tost_inside_the_margin_and_a_doubled_one_sided_p_outside():
    rng = np.random.default_rng(18)
    branches = set()
    for shift in (0.0, 0.1, -0.15, 0.5, -0.6, 0.25, -0.28):
        a = rng.normal(0, 1, 8)
        b = a - shift - rng.normal(0, 0.2, 8)
        d = a - b
        r = equivalence(paired(a, b), 0.3)
        if abs(d.mean()) <= 0.3:
            branches.add("inside")
            truth = max(st.ttest_1samp(d, -0.3, alternative="greater").pvalue,
                        st.ttest_1samp(d, 0.3, alternative="less").pvalue)
        else:
            branches.add("outside")
            one = (st.ttest_1samp(d, 0.3, alternative="greater") if d.mean() > 0
                   else st.ttest_1samp(d, -0.3, alternative="less"))
            truth = min(1.0, 2 * one.pvalue)
        assert (r.p == pytest.approx(truth, rel=1e-10) and r.margin == 0.3
                and r.effect == pytest.approx(d.mean()))
    assert branches == {"inside", "outside"}
    assert math.isnan(equivalence(one_sample([1.0], 1.0), 0.1).p)
    with pytest.raises(ValueError):
        equivalence(paired(a, b, method="sign-flip"), 0.3)
    with pytest.raises(ValueError):
        equivalence(paired(a, b), 0.0)


def test_equal_within_a_margin_on_planted_data():
    rng = np.random.default_rng(19)
    base = rng.normal(0, 1, 400)  # per test image, two ways
    same = equivalence(paired(base + rng.normal(0, 0.5, 400), base, unit="test images"), 0.3)
    apart = equivalence(paired(base + 1.0 + rng.normal(0, 0.5, 400), base, unit="test images"), 0.3)
    few = equivalence(paired(rng.normal(0, 1, 3), rng.normal(0, 1, 3)), 0.3)
    assert verdict("equal", same, same.p) == "reproduced"
    assert verdict("equal", apart, apart.p) == "not reproduced"
    assert verdict("equal", few, few.p) == "inconclusive"
    # an 'equal' claim needs its margin; a direction does not take one
    with pytest.raises(ValueError):
        verdict("equal", paired(base + 0.1, base), 0.01)
    with pytest.raises(ValueError):
        verdict("lower", same, same.p)
    rows = {"sec6.damping": claim_row(same, expect="equal")}
    out = fill(json.loads(json.dumps(rows, allow_nan=False)))
    assert out["sec6.damping"]["verdict"] == "reproduced" and out["sec6.damping"]["margin"] == 0.3


def test_equivalence_error_rates_at_the_edges():
    rng = np.random.default_rng(20)
    draws, n = 2000, 10
    # True effect on the margin (not equal): "reproduced" at most alpha of the time.
    d = rng.normal(0.3, 1.0, (draws, n))
    v = [verdict("equal", r, r.p) for r in (equivalence(paired(x, np.zeros(n)), 0.3) for x in d)]
    assert v.count("reproduced") / draws <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / draws)
    # True effect zero, a hair's margin (equal): "not reproduced" at most alpha, whichever edge.
    d = rng.normal(0.0, 1.0, (draws, n))
    v = [verdict("equal", r, r.p) for r in (equivalence(paired(x, np.zeros(n)), 0.01) for x in d)]
    assert v.count("not reproduced") / draws <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / draws)


# --- the smallest effect that matters: "negligible" ---------------------------------------------

def test_negligible_is_the_interval_inside_the_smallest_effect_that_matters():
    rng = np.random.default_rng(30)
    base = rng.normal(0.7, 0.1, 2000)
    tiny = paired(base + rng.normal(0.005, 0.02, 2000), base, unit="test images")
    lo, hi = tiny.ci
    assert tiny.p < 1e-6 and 0 < lo < hi < 0.02  # significant, and far below 0.05
    # Without a margin the tiny effect "reproduces"; with the margin it does not matter.
    assert verdict("higher", tiny, tiny.p) == "reproduced"
    assert verdict("higher", tiny, tiny.p, smallest=0.05) == "negligible"
    assert verdict("lower", tiny, tiny.p, smallest=0.05) == "negligible"  # whatever its sign
    # Checked before "partly": a weaker criterion cannot lift an effect that does not matter.
    assert verdict("higher", tiny, tiny.p, partial=True, smallest=0.05) == "negligible"
    # The interval reaches past the margin: not negligible, and too small to reproduce.
    between = (tiny.effect + hi) / 2  # above the effect, below the interval's top
    assert verdict("higher", tiny, tiny.p, smallest=between) == "inconclusive"
    # An effect beyond the margin still reproduces (and contradicts the other direction).
    big = paired(base + rng.normal(0.1, 0.02, 2000), base, unit="test images")
    assert verdict("higher", big, big.p, smallest=0.05) == "reproduced"
    assert verdict("lower", big, big.p, smallest=0.05) == "not reproduced"
    with pytest.raises(ValueError, match="positive"):
        verdict("higher", big, big.p, smallest=0.0)
    with pytest.raises(ValueError, match="equivalence margin"):
        verdict("equal", equivalence(big, 0.2), 0.01, smallest=0.05)


def test_negligible_rates_match_the_two_one_sided_tests():
    # Interval inside +-m is TOST at 0.025 a side: at a true effect on the margin, "negligible"
    # at most 2.5% of the time; at a true zero with a wide margin, nearly always.
    rng = np.random.default_rng(31)
    draws, n, m = 3000, 10, 0.5
    edge = [verdict("higher", r, r.p, smallest=m)
            for r in (paired(x, np.zeros(n)) for x in rng.normal(m, 1.0, (draws, n)))]
    assert edge.count("negligible") / draws <= 0.025 + 3 * math.sqrt(0.025 * 0.975 / draws)
    zero = [verdict("higher", r, r.p, smallest=3.0)
            for r in (paired(x, np.zeros(n)) for x in rng.normal(0.0, 1.0, (draws, n)))]
    # P(interval inside +-3) with sd 1, n 10: the t interval's half-width is below 3 - |mean|
    # almost surely; the exact rate by simulation of the same statistic, independently:
    x = rng.normal(0.0, 1.0, (200_000, n))
    half = st.t.ppf(0.975, n - 1) * x.std(axis=1, ddof=1) / math.sqrt(n)
    expected = float(np.mean(np.abs(x.mean(axis=1)) + half < 3.0))
    assert within(zero.count("negligible") / draws, expected, draws)


def test_fill_carries_the_smallest_effect_into_the_verdict():
    rng = np.random.default_rng(32)
    base = rng.normal(0.7, 0.1, 2000)
    tiny = paired(base + rng.normal(0.005, 0.02, 2000), base, unit="test images")
    rows = fill({"a": claim_row(tiny, expect="higher", smallest=0.05),
                 "b": claim_row(tiny, expect="higher")})
    assert rows["a"]["smallest"] == 0.05 and rows["a"]["verdict"] == "negligible"
    assert rows["b"]["smallest"] is None and rows["b"]["verdict"] == "reproduced"
    assert json.loads(json.dumps(rows)) == rows
    with pytest.raises(ValueError, match="equivalence margin"):
        claim_row(equivalence(tiny, 0.1), expect="equal", smallest=0.05)


# --- power --------------------------------------------------------------------------------------

def _power_by_definition(effect: float, n: int, alpha: float = 0.05) -> float:
    """Two-sided power of the one-sample t-test (sd 1) straight from T = (Z + ncp) / sqrt(V / df):
    integrate P(|Z + ncp| > t_c sqrt(V / df)) over V ~ chi2(df)."""
    df, ncp = n - 1, effect * math.sqrt(n)
    tc = st.t.ppf(1 - alpha / 2, df)

    def given_v(v: float) -> float:
        c = tc * math.sqrt(v / df)
        return (st.norm.sf(c - ncp) + st.norm.cdf(-c - ncp)) * st.chi2.pdf(v, df)

    return integrate.quad(given_v, 0, np.inf, limit=200)[0]


def test_min_detectable_effect_known_values():
    # n = 3 paired seeds, sd of the differences 1: solved independently from the t's definition.
    mde = min_detectable_effect(1.0, 3, paired=True)
    truth = optimize.brentq(lambda e: _power_by_definition(e, 3) - 0.8, 0.5, 10, xtol=1e-10)
    assert mde == pytest.approx(truth, rel=1e-6) and mde == pytest.approx(3.264, abs=1e-3)
    assert min_detectable_effect(2.0, 3, paired=True) == pytest.approx(2 * mde)
    # Cohen's tables: d = 0.5 at 80% power needs 64 per group (63.77), and 34 for one sample
    # (33.37).
    assert min_detectable_effect(1.0, 63) > 0.5 > min_detectable_effect(1.0, 64)
    assert (min_detectable_effect(1.0, 33,
                                  paired=True) > 0.5 > min_detectable_effect(1.0, 34, paired=True))
    # Large n: the normal approximation (z_.975 + z_.8) sd / sqrt(n); small n: well above it.
    z = st.norm.ppf(0.975) + st.norm.ppf(0.8)
    assert (min_detectable_effect(1.0, 5000,
                                  paired=True) == pytest.approx(z / math.sqrt(5000), rel=2e-3))
    assert mde > 1.9 * z / math.sqrt(3)
    assert min_detectable_effect(1.0, 1, paired=True) == math.inf
    assert power(mde, 1.0, 3, paired=True) == pytest.approx(0.8)


def test_min_detectable_effect_is_detected_80_percent_of_the_time():
    rng = np.random.default_rng(14)
    draws = 4000
    # paired, 5 seeds, sd of the differences 1.3, two-sided and one-sided
    for alternative, p_of in (("two-sided", lambda d: st.ttest_1samp(d, 0, axis=1).pvalue),
                              ("one-sided",
                               lambda d: st.ttest_1samp(d, 0, axis=1,
                                                        alternative="greater").pvalue)):
        e = min_detectable_effect(1.3, 5, paired=True, alternative=alternative)
        rate = np.mean(p_of(rng.normal(e, 1.3, (draws, 5))) < 0.05)
        assert within(rate, 0.8, draws)
    # two independent groups of 4 seeds, common sd 0.7 (Student's t, the design the power assumes)
    e = min_detectable_effect(0.7, 4)
    a, b = rng.normal(e, 0.7, (draws, 4)), rng.normal(0, 0.7, (draws, 4))
    assert within(np.mean(st.ttest_ind(a, b, axis=1).pvalue < 0.05), 0.8, draws)
    assert min_detectable_effect(0.7, (4, 4)) == pytest.approx(e)


def test_detectable_effect_of_a_measured_test_is_the_designs_min_detectable_effect():
    rng = np.random.default_rng(17)
    a = rng.normal(0, 1, 4)
    b = a - rng.normal(0.2, 0.4, 4)
    r = paired(a, b)
    assert (detectable_effect(r) == pytest.approx(min_detectable_effect((a - b).std(ddof=1), 4,
                                                                        paired=True)))
    assert detectable_effect(r.as_dict()) == pytest.approx(detectable_effect(r))
    # Welch with equal sizes and equal spreads has Student's df: the two-group design.
    x = np.array([0.0, 1.0, 2.0])
    assert detectable_effect(welch(x + 5, x)) == pytest.approx(min_detectable_effect(1.0, 3))
    assert detectable_effect(r, alpha=0.005) > detectable_effect(r)
    assert math.isnan(detectable_effect(paired(a, b, method="sign-flip")))
    # Welch's non-integer df, where scipy's nct.cdf gives NaN in the far tail.
    w = welch([0.1, 0.5, -0.3], [2.0, -1.0, 4.0, 0.5, 3.0, -2.5])
    assert w.df % 1 != 0 and 0 < detectable_effect(w) < math.inf


# --- claims of a book ---------------------------------------------------------------------------

def test_holm_across_a_book_of_null_claims_keeps_the_family_wise_error():
    rng = np.random.default_rng(15)
    books, m = 400, 20
    a, b = rng.normal(0, 1, (books, m, 5)), rng.normal(0, 1, (books, m, 5))
    any_reproduced = any_directional = any_uncorrected = 0
    for i in range(books):
        rows = {f"claim{j}": claim_row(paired(a[i, j], b[i, j]), expect=("lower", "higher")[j % 2])
                for j in range(m)}
        verdicts = [r["verdict"] for r in fill(rows).values()]
        any_reproduced += "reproduced" in verdicts
        any_directional += "reproduced" in verdicts or "not reproduced" in verdicts
        any_uncorrected += any(verdict(r["expect"], r, r["p"]) == "reproduced"
                               for r in rows.values())
    # Holm: any false directional verdict at most alpha (any false "reproduced" about alpha / 2).
    assert any_directional / books <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / books)
    assert any_reproduced / books <= 0.025 + 3 * math.sqrt(0.025 * 0.975 / books)
    # Without the correction the same books would claim something false about 40% of the time.
    assert within(any_uncorrected / books, 1 - 0.975 ** m, books)


def test_fill_counts_each_claim_once_and_is_json():
    rng = np.random.default_rng(16)
    base = rng.normal(0.6, 0.05, 5)
    rows = {
        "vit.auc": claim_row(paired(base + 0.03 + rng.normal(0, 0.005, 5), base), expect="higher"),
        "rvit.auc": claim_row(alias_of="vit.auc"),
        "table2.fid": claim_row(welch(rng.normal(10, 1, 3), rng.normal(10, 1, 3)), expect="lower",
                                partial=Partial.ci_beyond(2.0, "lower", "FID not worse by 2"),
                                paper_effect=-0.1),
        "fig9.one_seed": claim_row(one_sample([0.4], 0.5), expect="higher"),  # one run: no p
        "sec5.speed": claim_row(None, expect="higher"),  # not measured at this scale
    }
    assert (rows["table2.fid"]["partial_holds"] in (True, False)
            and rows["table2.fid"]["p_holm"] is None)
    out = fill(rows)
    assert list(out) == list(rows)
    p = holm({"vit.auc": rows["vit.auc"]["p"], "table2.fid": rows["table2.fid"]["p"]})
    assert out["vit.auc"]["family"] == 2 and out["vit.auc"]["p_holm"] == pytest.approx(p["vit.auc"])
    assert out["table2.fid"]["p_holm"] == pytest.approx(p["table2.fid"])
    # The paper's effect beside what our seeds could detect, alone and in the family of 2.
    fid = out["table2.fid"]
    assert fid["paper_effect"] == -0.1 and fid["mde"] == pytest.approx(detectable_effect(fid))
    assert fid["mde_family"] == pytest.approx(detectable_effect(fid, alpha=0.025))
    assert fid["mde_family"] > fid["mde"] > 0.1
    assert out["vit.auc"]["verdict"] == "reproduced"
    assert out["rvit.auc"] == dict(out["vit.auc"], alias_of="vit.auc")
    assert (out["fig9.one_seed"]["verdict"] == "inconclusive"
            and out["fig9.one_seed"]["p_holm"] is None)
    assert out["sec5.speed"]["verdict"] == "not testable"
    assert {"test", "p", "p_holm", "effect", "ci", "unit", "verdict"} <= set(out["table2.fid"])
    # Plain JSON (no NaN), and the same verdicts when read back from a results file.
    text = json.dumps(rows, allow_nan=False)
    assert fill(json.loads(text)) == json.loads(json.dumps(out, allow_nan=False))
    with pytest.raises(ValueError):
        fill({"a": claim_row(alias_of="b")})
    with pytest.raises(ValueError):
        fill({"a": rows["vit.auc"], "b": claim_row(alias_of="a"), "c": claim_row(alias_of="b")})
    with pytest.raises(ValueError):
        claim_row(welch([1.0, 2.0], [3.0, 4.0]), expect="higher", alias_of="a")


def test_variance_shares_recover_planted_components_and_sum_to_one():
    from copkit.stats import variance_shares

    rng = np.random.default_rng(3)
    i, k = 30, 6
    pos = rng.normal(0, 2.0, (1, 1, k))  # a shared pattern over positions
    img = rng.normal(0, 1.0, (i, 1, 1))
    inter = rng.normal(0, 0.5, (i, 1, k))  # image-specific patterns over positions
    x = 5.0 + pos + img + inter
    s = variance_shares(x, ("image", "target", "position"))
    assert sum(s.values()) == pytest.approx(1.0, abs=1e-12)
    assert (s["target"] == pytest.approx(0.0, abs=1e-12)
            and s["imagextarget"] == pytest.approx(0.0, abs=1e-12))
    assert s["imagextargetxposition"] == pytest.approx(0.0, abs=1e-12)
    # brute force: each share is the sum of squares of the centred planted term over the total
    c_pos, c_img = pos - pos.mean(), img - img.mean()
    c_inter = inter - inter.mean(0, keepdims=True) - inter.mean(2, keepdims=True) + inter.mean()
    total = ((x - x.mean()) ** 2).sum()
    assert s["position"] == pytest.approx((np.broadcast_to(c_pos
                                                           + (inter.mean(0, keepdims=True)
                                                              - inter.mean()), x.shape) ** 2).sum()
                                          / total)
    assert s["image"] == pytest.approx((np.broadcast_to(c_img
                                                        + (inter.mean(2, keepdims=True)
                                                           - inter.mean()), x.shape) ** 2).sum()
                                       / total)
    assert (s["imagexposition"] == pytest.approx((np.broadcast_to(c_inter, x.shape) ** 2).sum()
                                                 / total))
    with pytest.raises(ValueError, match="three-way"):
        variance_shares(np.zeros((3, 3)))


def test_replicates_equal_up_to_rounding_carry_no_spread():
    """Knees on a grid: three seeds at 0.825, one of them off by a rounding error. A t statistic
    over that error would be astronomically 'significant'; the test says it cannot judge."""
    from copkit.stats import equivalence

    knees = np.array([0.825, 0.825, 0.825 + 1e-16 * 5])
    r = one_sample(knees, 0.78)
    assert np.isnan(r.p) and r.effect == pytest.approx(0.045)
    assert np.isnan(equivalence(r, 0.07).p)
    assert verdict("equal", equivalence(r, 0.07), None) == "inconclusive"
    assert np.isnan(paired(knees, knees - 0.1).p)
    real = one_sample([0.80, 0.825, 0.85], 0.78)  # a real spread is still tested
    assert 0 < real.p < 1
