"""Verdicts a statistician would sign: tests, intervals, Holm's correction, power and claim rows.

A claim of the paper is tested once, by one of three tests that all return the same
:class:`Record` (``test``, ``p``, ``effect`` in the claim's units, and a 95% ``ci``):

- :func:`welch`       two independent sets of runs (different models, different seeds);
- :func:`paired`      the same model or seed measured two ways (a t-test on the per-seed or
  per-image differences, or an exact sign-flip test);
- :func:`one_sample`  our values against the paper's number.

:func:`equivalence` turns a t-test's record into a test of "equal within a margin", for claims
of no difference.

The book's p-values form one family: :func:`holm` adjusts them together, and :func:`verdict` turns
an effect and its adjusted p into "reproduced", "not reproduced" or "inconclusive" -- never from a
sign alone. "partly" needs a :class:`Partial` criterion written with the claim before measuring.
:func:`min_detectable_effect` says how large a true difference our number of seeds could see at
80% power, to set beside the paper's effect (:func:`detectable_effect`: the same for a measured
test, from its own standard error and degrees of freedom). :func:`claim_row` and :func:`fill` carry
all of this as plain JSON-able dicts: chapters write rows with raw p-values, the report fills
``p_holm`` and the verdict across the whole book, counting each claim once (an alias shares its
primary's test).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import numpy as np
from scipy import optimize
from scipy import stats as st

__all__ = [
    "EXPECT",
    "VERDICTS",
    "Interval",
    "Partial",
    "Record",
    "bootstrap_ci",
    "claim_row",
    "detectable_effect",
    "equivalence",
    "fill",
    "holm",
    "min_detectable_effect",
    "one_sample",
    "paired",
    "variance_shares",
    "power",
    "verdict",
    "welch",
]

#: What a claim can state about ``effect`` (the first set minus the second, or ours minus the
#: reference): "lower" wants effect < 0, "higher" wants effect > 0, "equal" wants it within a
#: margin stated with the claim (tested by :func:`equivalence`).
EXPECT = ("lower", "higher", "equal")
_SIDES = ("lower", "higher")
#: What :func:`verdict` and :func:`fill` can say. "not testable": no test was run (no record).
#: "negligible": the effect's 95% interval lies inside the smallest effect that would matter, stated
#: with a directional claim before measuring (:func:`verdict`): it does not support the paper.
VERDICTS = ("reproduced", "partly", "negligible", "not reproduced", "inconclusive", "not testable")

_NAN = float("nan")


@dataclass(frozen=True)
class Record:
    """The outcome of one test, in the same shape whatever the test.

    ``effect`` is a mean difference in the claim's units (first minus second, or ours minus the
    reference); ``ci`` its interval at ``confidence``, made by ``ci_method``; ``unit`` is what the
    replicates are ("seeds" or "test images"), ``n`` how many (a pair ``(n_a, n_b)`` for Welch).
    ``p`` is two-sided, NaN when the data cannot test anything (fewer than two replicates, or no
    spread at all, for a t-test). ``se`` and ``df`` are the t-test's standard error and degrees
    of freedom (NaN for the sign-flip test). ``margin`` is set by :func:`equivalence` only.
    """

    test: str
    p: float
    effect: float
    ci: tuple[float, float]
    n: int | tuple[int, int]
    unit: str
    ci_method: str
    confidence: float = 0.95
    se: float = _NAN
    df: float = _NAN
    margin: float = _NAN

    def as_dict(self) -> dict[str, Any]:
        """A plain JSON-able dict (NaN and infinities as ``None``, tuples as lists)."""
        return {"test": self.test, "p": _num(self.p), "effect": _num(self.effect),
                "ci": [_num(self.ci[0]), _num(self.ci[1])], "confidence": self.confidence,
                "ci_method": self.ci_method, "unit": self.unit,
                "n": list(self.n) if isinstance(self.n, tuple) else self.n, "se": _num(self.se),
                "df": _num(self.df), "margin": _num(self.margin)}


@dataclass(frozen=True)
class Interval:
    """A bootstrap interval: ``estimate`` (the statistic on the data), ``low`` and ``high``, and
    what was resampled (``resampled``: "seeds", "test images", ...)."""

    estimate: float
    low: float
    high: float
    confidence: float
    resampled: str
    n_boot: int
    method: str = "percentile bootstrap"


def _num(x: Any) -> Any:
    """A float for JSON: NaN and infinities become None."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _vec(x: Iterable[float] | float, name: str) -> np.ndarray:
    if not isinstance(x, (np.ndarray, list, tuple, float, int)):
        x = list(x)
    v = np.atleast_1d(np.asarray(x, dtype=float)).ravel()
    if v.size == 0:
        raise ValueError(f"{name} has no values")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name} has non-finite values")
    return v


def _unit(unit: str) -> str:
    if not isinstance(unit, str) or not unit.strip():
        raise ValueError("unit must say what the replicates are, e.g. 'seeds' or 'test images'")
    return unit


def _has_spread(se: float, scale: float) -> bool:
    """A standard error that is more than floating-point rounding of values of size ``scale``:
    replicates that are equal up to rounding (knees on a grid, identical runs) carry no spread,
    and a t statistic over a rounding error would be a huge, meaningless number."""
    return math.isfinite(se) and se > 1e-9 * max(1.0, abs(scale))


def _t_record(test: str, effect: float, se: float, df: float, n: int | tuple[int, int], unit: str,
              confidence: float, scale: float = 0.0) -> Record:
    """p and interval of a t statistic ``effect / se`` on ``df`` degrees of freedom; ``scale`` is
    the size of the values the effect came from (see :func:`_has_spread`)."""
    if not (df > 0 and _has_spread(se, max(abs(effect), abs(scale)))):
        # Fewer than two replicates, or every replicate identical: no spread to judge against.
        return Record(test, _NAN, float(effect), (_NAN, _NAN), n, unit, "t", confidence, float(se),
                      float(df))
    t = effect / se
    p = float(2 * st.t.sf(abs(t), df))
    half = float(st.t.ppf(0.5 + confidence / 2, df) * se)
    return Record(test, p, float(effect), (float(effect - half), float(effect + half)), n, unit,
                  "t", confidence, float(se), float(df))


def _with_bootstrap(rec: Record, data: Any, n_boot: int, seed: int) -> Record:
    iv = bootstrap_ci(data, n_boot=n_boot, seed=seed, unit=rec.unit, confidence=rec.confidence)
    return Record(rec.test, rec.p, rec.effect, (iv.low, iv.high), rec.n, rec.unit,
                  f"percentile bootstrap over {rec.unit}", rec.confidence, rec.se, rec.df)


def _check_ci(ci: str) -> None:
    if ci not in ("t", "bootstrap"):
        raise ValueError(f"ci must be 't' or 'bootstrap', got {ci!r}")


def welch(a: Iterable[float], b: Iterable[float], *, unit: str = "seeds", confidence: float = 0.95,
          ci: str = "t", n_boot: int = 10_000, seed: int = 0) -> Record:
    """Welch's t-test of mean(a) - mean(b) for two *independent* sets of runs.

    Use it when the two sides share nothing (different models trained on their own seeds); when
    the same model or seed is measured two ways use :func:`paired`, which removes the between-seed
    spread the two measurements share. The interval is Welch's t interval (Welch-Satterthwaite
    degrees of freedom), or with ``ci="bootstrap"`` a percentile bootstrap resampling each side
    on its own.

    >>> r = welch([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    >>> r.test, r.effect, round(r.p, 4)
    ('welch t', -3.0, 0.0213)
    """
    _check_ci(ci)
    a, b = _vec(a, "a"), _vec(b, "b")
    va = a.var(ddof=1) / a.size if a.size > 1 else _NAN
    vb = b.var(ddof=1) / b.size if b.size > 1 else _NAN
    se = math.sqrt(va + vb) if a.size > 1 and b.size > 1 else _NAN
    df = ((va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1))) if se > 0 else _NAN
    rec = _t_record("welch t", a.mean() - b.mean(), se, df, (a.size, b.size), _unit(unit),
                    confidence, max(np.abs(a).max(), np.abs(b).max()))
    return (_with_bootstrap(rec, (a, b), n_boot, seed) if ci == "bootstrap"
            and math.isfinite(rec.p) else rec)


def one_sample(values: Iterable[float], reference: float, *, unit: str = "seeds",
               confidence: float = 0.95, ci: str = "t", n_boot: int = 10_000,
               seed: int = 0) -> Record:
    """One-sample t-test of mean(values) - reference: our runs against the paper's number.

    Use it where the claim is the paper's value itself; ``effect`` is how far our mean is from it.

    >>> r = one_sample([4.1, 4.3, 4.2], 4.267)
    >>> r.test, round(r.effect, 3), round(r.p, 2)
    ('one-sample t', -0.067, 0.37)
    """
    _check_ci(ci)
    v = _vec(values, "values")
    reference = float(reference)
    se = float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else _NAN
    rec = _t_record("one-sample t", v.mean() - reference, se, v.size - 1, v.size, _unit(unit),
                    confidence, float(np.abs(v).max()))
    return (_with_bootstrap(rec, v - reference, n_boot, seed) if ci == "bootstrap"
            and math.isfinite(rec.p) else rec)


#: Up to this many pairs the sign-flip test enumerates every sign pattern
#: (:math:`2^{16} = 65{,}536`).
EXACT_FLIPS = 16


def _flip_signs(n: int, n_flips: int, seed: int) -> tuple[np.ndarray, bool]:
    if n <= EXACT_FLIPS:
        codes = np.arange(2 ** n)[:, None] >> np.arange(n)[None, :]
        return 1.0 - 2.0 * (codes & 1), True
    rng = np.random.default_rng(seed)
    s = rng.choice([-1.0, 1.0], size=(n_flips, n))
    return np.vstack([np.ones((1, n)), s]), False  # the observed pattern counts once


def _flip_p(d: np.ndarray, signs: np.ndarray) -> float:
    """Two-sided sign-flip p of the mean of d: the share of sign patterns whose |sum| is at
    least the observed |sum| (the observed pattern is among them)."""
    obs = abs(d.sum())
    stat = np.abs(signs @ d)
    return float(np.mean(stat >= obs - 1e-12 * max(1.0, np.abs(d).sum())))


def paired(a: Iterable[float], b: Iterable[float], *, method: str = "t", unit: str = "seeds",
           confidence: float = 0.95, ci: str = "t", n_boot: int = 10_000, seed: int = 0,
           n_flips: int = 20_000) -> Record:
    """Paired test of mean(a - b), where ``a[i]`` and ``b[i]`` are the same seed, model or test
    image measured two ways (ViT vs ViT+C on one trained model; CMAR vs the MAR seed it was tuned
    from). Pairing removes what the two measurements share, which Welch's test counts as noise.

    ``method="t"``: the paired t-test on the differences, with its t interval (``ci="bootstrap"``
    for a percentile bootstrap over the pairs instead).

    ``method="sign-flip"``: an exact permutation test of the same statistic (the mean difference),
    flipping the sign of each difference (all :math:`2^n` patterns up to :math:`n = 16`, else
    ``n_flips`` random ones with the observed one counted). It assumes only that the differences are
    symmetric about zero under the null, not that they are normal: with the 3-5 seeds of this book
    normality cannot be checked, and this test says plainly what the data alone can show. Its
    smallest possible p-value is :math:`2 / 2^n` (0.25 for 3 seeds, 0.0625 for 5), so below 6 pairs
    it can never reject at 0.05: only the t-test's normal assumption makes so few seeds significant.
    Its interval inverts the test (the shifts it does not reject, found by bisection), and is
    infinite when the test cannot reject at all.

    >>> paired([1.0, 2.0, 3.0], [0.5, 1.1, 2.6]).effect
    0.6
    >>> paired([1.0, 2.0, 3.0], [0.5, 1.1, 2.6], method="sign-flip").p
    0.25
    """
    _check_ci(ci)
    a, b = _vec(a, "a"), _vec(b, "b")
    if a.size != b.size:
        raise ValueError(f"paired test needs one b per a, got {a.size} and {b.size}")
    d = a - b
    effect = float(d.mean())
    unit = _unit(unit)
    if method == "t":
        se = float(d.std(ddof=1) / math.sqrt(d.size)) if d.size > 1 else _NAN
        rec = _t_record("paired t", effect, se, d.size - 1, d.size, unit, confidence,
                        max(np.abs(a).max(), np.abs(b).max()))
        if ci == "bootstrap" and math.isfinite(rec.p):
            rec = _with_bootstrap(rec, np.column_stack([a, b]), n_boot, seed)
        return rec
    if method != "sign-flip":
        raise ValueError(f"method must be 't' or 'sign-flip', got {method!r}")
    if ci != "t":
        raise ValueError("the sign-flip test carries its own interval (by inverting the test)")
    if d.size < 2:  # (no spread is no obstacle here: n equal, positive differences give 2 / 2**n)
        return Record("paired sign-flip", _NAN, effect, (_NAN, _NAN), d.size, unit,
                      "sign-flip inversion", confidence)
    signs, exact = _flip_signs(d.size, n_flips, seed)
    name = "paired sign-flip" + ("" if exact else f" ({n_flips} random flips)")
    p = _flip_p(d, signs)
    alpha = 1 - confidence
    lo, hi = -math.inf, math.inf
    # the smallest p any data can give (2 / 2**n when exact)
    floor = _flip_p(np.ones(d.size), signs)
    if floor < alpha:
        span = float(np.ptp(d)) + float(np.abs(d).max()) + 1.0

        def edge(direction: float) -> float:
            inside, outside = effect, effect + direction * span
            while _flip_p(d - outside, signs) >= alpha:  # widen until the test rejects
                outside = effect + 2 * (outside - effect)
            for _ in range(50):
                mid = 0.5 * (inside + outside)
                inside, outside = ((mid, outside) if _flip_p(d - mid, signs) >= alpha
                                   else (inside, mid))
            return inside

        lo, hi = edge(-1.0), edge(1.0)
    return Record(name, p, effect, (lo, hi), d.size, unit, "sign-flip inversion", confidence)


def equivalence(test_record: Record, margin: float) -> Record:
    """Turn a t-test's record into a test of "the effect lies within +-margin" (a claim of no
    difference: "matches the baseline", "leaves the order unchanged"), for ``expect="equal"``.

    ``margin`` is the largest difference that would still count as equal, in the effect's units,
    stated with the claim before measuring. The record's ``p`` becomes the p of the decision the
    data point to, so that :func:`verdict` reads it as it reads a sign:

    - ``|effect| <= margin``: the two one-sided tests (TOST) p, the larger of the p's of
      "effect > -margin" and "effect < +margin": small when the effect is shown inside the band;
    - ``|effect| > margin``: twice the one-sided p of "effect beyond the nearer edge": small when
      it is shown outside (doubled, as for the two-sided p of a direction, so that a true effect
      inside the band is declared outside at most ``alpha`` of the time, whichever edge).

    Effect, interval (the 95% t interval) and test are kept; ``test`` gains the margin.

    >>> r = equivalence(paired([1.0, 1.1, 0.9, 1.0, 1.05], [1.0, 1.0, 1.0, 1.02, 1.0]), 0.2)
    >>> r.test, round(r.p, 4), r.margin
    ('paired t, equal within 0.2', 0.0023, 0.2)
    """
    m = float(margin)
    if not m > 0:
        raise ValueError(f"margin must be positive, got {margin!r}")
    if test_record.ci_method == "sign-flip inversion":
        raise ValueError("equivalence needs a t-test's record (its standard error and degrees of "
                         "freedom)")
    se, df, e = test_record.se, test_record.df, test_record.effect
    if not (math.isfinite(df) and _has_spread(se, e)) or math.isnan(test_record.p):
        p = _NAN  # a t-test without spread: nothing to test, as for the record itself
    elif abs(e) <= m:
        p = max(float(st.t.sf((e + m) / se, df)), float(st.t.cdf((e - m) / se, df)))
    else:
        p = min(1.0, 2 * float(st.t.sf((abs(e) - m) / se, df)))
    return Record(f"{test_record.test}, equal within {m:g}", p, e, test_record.ci, test_record.n,
                  test_record.unit, test_record.ci_method, test_record.confidence, se, df, m)


def bootstrap_ci(data: Any, stat: Callable[..., np.ndarray] | None = None, *, n_boot: int = 10_000,
                 seed: int = 0, unit: str = "seeds", confidence: float = 0.95) -> Interval:
    """Percentile bootstrap interval of a statistic, resampling the units of variation.

    What is resampled (with replacement, ``n_boot`` times, from a generator seeded by ``seed``):

    - a 1-d array: its values (one per seed, or per test image); default statistic the mean;
    - a 2-d array ``(n, k)``: its rows, kept whole, as pairs measured on the same seed or image
      (``np.column_stack([a, b])``); default statistic the mean of ``a - b``;
    - a tuple ``(a, b)`` of 1-d arrays: each independently (two independent sets of runs);
      default statistic ``mean(a) - mean(b)``.

    ``stat`` must be vectorised: it receives the resamples stacked on a leading axis (shape
    ``(B, n)`` or ``(B, n, k)``, or two arrays ``(B, n_a)``, ``(B, n_b)`` for a tuple) and returns
    ``B`` values. ``unit`` names what the rows are ("seeds", "test images") and is carried into the
    result so the report can say it. With a handful of seeds the percentile interval is too narrow
    (3 seeds have only 10 distinct resamples); use the t interval there and the bootstrap over test
    images, where n is in the hundreds.

    >>> iv = bootstrap_ci(np.arange(100.0), n_boot=2000, unit="test images")
    >>> iv.resampled, iv.estimate, 43 < iv.low < 49.5 < iv.high < 56
    ('test images', 49.5, True)
    """
    _unit(unit)
    rng = np.random.default_rng(seed)
    if isinstance(data, tuple):
        if len(data) != 2:
            raise ValueError("a tuple of samples must hold exactly two")
        a, b = (_vec(x, "sample") for x in data)
        stat = stat or (lambda xa, xb: xa.mean(axis=1) - xb.mean(axis=1))
        est = float(np.asarray(stat(a[None], b[None])).reshape(-1)[0])
        chunk = max(1, 2_000_000 // (a.size + b.size))
        vals = []
        for start in range(0, n_boot, chunk):
            m = min(chunk, n_boot - start)
            vals.append(np.asarray(stat(a[rng.integers(0, a.size, (m, a.size))],
                                        b[rng.integers(0, b.size, (m, b.size))]), float).reshape(m))
    else:
        x = np.asarray(data, dtype=float)
        if x.ndim not in (1, 2) or x.shape[0] == 0 or not np.all(np.isfinite(x)):
            raise ValueError("data must be a non-empty, finite 1-d or 2-d array")
        if stat is None:
            if x.ndim == 1:
                def stat(s):
                    return s.mean(axis=1)
            elif x.shape[1] == 2:
                def stat(s):
                    return (s[..., 0] - s[..., 1]).mean(axis=1)
            else:
                raise ValueError("give stat for rows of more than two columns")
        est = float(np.asarray(stat(x[None])).reshape(-1)[0])
        n = x.shape[0]
        chunk = max(1, 2_000_000 // (n * (x.shape[1] if x.ndim == 2 else 1)))
        vals = []
        for start in range(0, n_boot, chunk):
            m = min(chunk, n_boot - start)
            vals.append(np.asarray(stat(x[rng.integers(0, n, (m, n))]), float).reshape(m))
    boots = np.concatenate(vals)
    lo, hi = np.quantile(boots, [0.5 - confidence / 2, 0.5 + confidence / 2])
    return Interval(est, float(lo), float(hi), confidence, unit, int(n_boot))


def variance_shares(x: Any, names: tuple[str, str, str] = ("a", "b", "c")) -> dict[str, float]:
    """How the variance of a complete three-way array splits into main effects and interactions.

    ``x`` (I, J, K) is decomposed as

    .. math::

        x_{ijk} = m + a_i + b_j + c_k + (ab)_{ij} + (ac)_{ik} + (bc)_{jk} + (abc)_{ijk},

    each term the mean over the other axes with the lower-order terms removed (the balanced ANOVA
    decomposition). The terms are orthogonal, so their sums of squares add up to the total: the
    shares returned, keyed by ``names`` joined with "x" ("a", "axb", "axbxc", ...), sum to 1.

    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(5, 1, 1)) + np.zeros((5, 4, 3))  # varies along the first axis only
    >>> round(variance_shares(x, ("image", "target", "position"))["image"], 12)
    1.0
    """
    x = np.asarray(x, dtype=float)
    if x.ndim != 3 or min(x.shape) < 1 or not np.all(np.isfinite(x)):
        raise ValueError(f"need a finite three-way array, got shape {x.shape}")
    m = x.mean()
    a = x.mean((1, 2), keepdims=True) - m
    b = x.mean((0, 2), keepdims=True) - m
    c = x.mean((0, 1), keepdims=True) - m
    ab = x.mean(2, keepdims=True) - m - a - b
    ac = x.mean(1, keepdims=True) - m - a - c
    bc = x.mean(0, keepdims=True) - m - b - c
    abc = x - m - a - b - c - ab - ac - bc
    total = float(((x - m) ** 2).sum())
    na, nb, nc = names
    terms = {na: a, nb: b, nc: c, f"{na}x{nb}": ab, f"{na}x{nc}": ac, f"{nb}x{nc}": bc,
             f"{na}x{nb}x{nc}": abc}
    if total == 0:
        return {k: 0.0 for k in terms}
    return {k: float((np.broadcast_to(t, x.shape) ** 2).sum() / total) for k, t in terms.items()}


def holm(pvalues: Mapping[str, float]) -> dict[str, float]:
    """Holm-Bonferroni adjusted p-values over one family of claims.

    Sorted ascending, the k-th smallest of m p-values is multiplied by m - k + 1, the running
    maximum taken (so the adjusted values keep the raw order) and capped at 1. A claim is then
    significant at family-wise error ``alpha`` when its adjusted p is below ``alpha``, whatever
    the other claims: the chance of any false claim across the whole book stays under ``alpha``.
    NaN (or None) marks an untested claim: it is left out of the family (m counts only tested
    claims) and its adjusted p is NaN.

    >>> adj = holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.005, "e": float("nan")})
    >>> {k: round(v, 6) for k, v in adj.items()}
    {'a': 0.03, 'b': 0.06, 'c': 0.06, 'd': 0.02, 'e': nan}
    """
    raw = {k: (_NAN if v is None else float(v)) for k, v in pvalues.items()}
    for k, v in raw.items():
        if not math.isnan(v) and not 0.0 <= v <= 1.0:
            raise ValueError(f"p-value of {k!r} is {v}, outside [0, 1]")
    tested = sorted((v, k) for k, v in raw.items() if not math.isnan(v))
    m = len(tested)
    out = {k: _NAN for k in raw}
    running = 0.0
    for i, (v, k) in enumerate(tested):
        running = max(running, min(1.0, (m - i) * v))
        out[k] = running
    return out


@dataclass(frozen=True)
class Partial:
    """A partial criterion, written with the claim before anything is measured.

    ``name`` is the sentence the report prints ("FID within 0.5 of the paper's"); ``holds`` decides
    it on the measured :class:`Record` (or its dict). Thresholds are in the units of ``effect``:
    for :func:`one_sample` that is ours minus the paper's number, so "within 2 points of the
    paper's 78" is ``Partial.ci_within(-2, 2)``.

    The interval is the claim's own 95% interval, not widened for the book's family as ``p_holm``
    is: "partly" is weaker evidence than "reproduced", as its name says, and a chapter should
    state few partial criteria. Build it with :meth:`ci_beyond` or
    :meth:`ci_within`, which ask the whole 95% interval to clear a line: a criterion that looks
    only at the sign of the effect would turn a coin flip into "partly", which is what this
    module exists to stop.
    """

    name: str
    holds: Callable[[Any], bool]

    def __call__(self, record: Record | Mapping[str, Any]) -> bool:
        lo, hi = _ci(record)
        if lo is None or hi is None or not (math.isfinite(lo) or math.isfinite(hi)):
            return False
        return bool(self.holds(record))

    @classmethod
    def ci_beyond(cls, threshold: float, side: str, name: str | None = None) -> Partial:
        """Holds when the whole interval lies below (``side="lower"``) or above (``"higher"``)
        ``threshold``: e.g. a right, significant direction where the claim was a larger effect."""
        if side not in _SIDES:
            raise ValueError(f"side must be one of {_SIDES}, got {side!r}")
        t = float(threshold)

        def holds(r: Any) -> bool:
            lo, hi = _ci(r)
            return (hi is not None and hi < t) if side == "lower" else (lo is not None and lo > t)

        return cls(name or f"95% interval {'below' if side == 'lower' else 'above'} {t:g}", holds)

    @classmethod
    def ci_within(cls, low: float, high: float, name: str | None = None) -> Partial:
        """Holds when the whole interval lies inside [low, high]: e.g. our value within a stated
        distance of the paper's number."""
        lo_t, hi_t = float(low), float(high)

        def holds(r: Any) -> bool:
            lo, hi = _ci(r)
            return lo is not None and hi is not None and lo_t <= lo and hi <= hi_t

        return cls(name or f"95% interval within [{lo_t:g}, {hi_t:g}]", holds)


def _get(record: Record | Mapping[str, Any], key: str) -> Any:
    return record.get(key) if isinstance(record, Mapping) else getattr(record, key)


def _ci(record: Record | Mapping[str, Any]) -> tuple[float | None, float | None]:
    ci = _get(record, "ci")
    if ci is None:
        return None, None
    lo, hi = ci
    return (None if lo is None or math.isnan(lo)
            else float(lo)), (None if hi is None or math.isnan(hi) else float(hi))


def verdict(expect: str, test_record: Record | Mapping[str, Any] | None, p_holm: float | None,
            alpha: float = 0.05, partial: Partial | bool | None = None,
            smallest: float | None = None) -> str:
    """The verdict on one claim, from its effect and its Holm-adjusted p.

    - "reproduced": the effect has the expected sign and ``p_holm < alpha``; for
      ``expect="equal"`` (a record from :func:`equivalence`), the effect lies within the margin
      and ``p_holm < alpha``;
    - "partly": not reproduced, but the claim's :class:`Partial` criterion, stated before
      measuring, holds on the record (``partial`` may also be that criterion's already-evaluated
      truth value, as read back from a results file). It comes before "not reproduced": a stated
      weaker form that holds is worth saying even where the full claim is contradicted;
    - "not reproduced": the opposite sign (for "equal": outside the margin) and ``p_holm < alpha``;
    - "inconclusive": otherwise -- whatever the sign, if the test is not significant after the
      correction (or could not be run: NaN p), the data do not decide;
    - "not testable": no record at all.

    ``smallest``, for a directional claim, is the smallest effect that would matter, in the effect's
    units, stated with the claim before measuring (e.g. 5 points of object share, 0.05 of Kendall
    tau). With it, "reproduced" and "not reproduced" also need ``|effect| >= smallest``, and a claim
    whose whole 95% interval lies strictly inside ``(-smallest, +smallest)`` is "negligible": an
    equivalence decision (the interval inside the band is the two one-sided tests at level 0.025
    each), checked before "partly", and counted as *not* supporting the paper. A significant effect
    of the right sign but below ``smallest``, whose interval still reaches past it, is
    "inconclusive" (unless its partial criterion holds).

    The two-sided p with the sign of the effect makes a false "reproduced" at most ``alpha / 2``
    likely per claim, and a false directional verdict of either kind at most ``alpha``. For an
    "equal" claim each of "reproduced" and "not reproduced" is wrong at most ``alpha`` of the time
    (see :func:`equivalence`). Holm's ``p_holm`` carries these bounds to the whole book.

    >>> r = {"effect": -0.3, "ci": [-0.9, 0.3]}
    >>> verdict("lower", r, 0.92), verdict("lower", r, 0.01), verdict("higher", r, 0.01)
    ('inconclusive', 'reproduced', 'not reproduced')
    >>> small = {"effect": 0.01, "ci": [0.004, 0.016]}  # significant, but far below what matters
    >>> verdict("higher", small, 0.001, smallest=0.05), verdict("higher", r, 0.01, smallest=0.5)
    ('negligible', 'inconclusive')
    """
    if expect not in EXPECT:
        raise ValueError(f"expect must be one of {EXPECT}, got {expect!r}")
    if test_record is None:
        return "not testable"
    effect = _get(test_record, "effect")
    p = _NAN if p_holm is None else float(p_holm)
    significant = effect is not None and math.isfinite(effect) and p < alpha
    margin = (_get(test_record, "margin") if isinstance(test_record, Record)
              or "margin" in test_record else None)
    if expect == "equal":
        if margin is None or not math.isfinite(margin):
            raise ValueError("an 'equal' claim needs a record from equivalence(), with its margin")
        if smallest is not None:
            raise ValueError("an 'equal' claim states its band as the equivalence margin, not as "
                             "smallest")
        right = significant and abs(effect) <= margin
        wrong = significant and abs(effect) > margin
    else:
        if margin is not None and math.isfinite(margin):
            raise ValueError("an equivalence record answers an 'equal' claim, not a direction")
        big = True
        if smallest is not None:
            m = float(smallest)
            if not (math.isfinite(m) and m > 0):
                raise ValueError(f"smallest (the smallest effect that would matter) must be a "
                                 f"positive number in the effect's units, got {smallest!r}")
            lo, hi = _ci(test_record)
            if lo is not None and hi is not None and -m < lo and hi < m:
                return "negligible"
            big = effect is not None and math.isfinite(effect) and abs(effect) >= m
        right = big and significant and (effect < 0 if expect == "lower" else effect > 0)
        wrong = big and significant and (effect > 0 if expect == "lower" else effect < 0)
    if right:
        return "reproduced"
    if partial is not None and not isinstance(partial, (bool, np.bool_, Partial)):
        raise TypeError("partial must be a Partial stated with the claim, or its evaluated truth "
                        "value")
    if ((partial(test_record) if isinstance(partial, Partial) else bool(partial))
        if partial is not None else False):
        return "partly"
    return "not reproduced" if wrong else "inconclusive"


def power(effect: float, sd: float, n: int | tuple[int, int], alpha: float = 0.05,
          paired: bool = False, alternative: str = "two-sided") -> float:
    """Power of the t-test to detect a true mean difference ``effect`` (exact, noncentral t).

    ``paired=True`` (or a one-sample test): ``n`` pairs whose differences have SD ``sd``, df
    n - 1. ``paired=False``: two groups of ``n`` runs each (or ``(n_a, n_b)``) with a common
    per-run SD ``sd``, Student's df n_a + n_b - 2 (Welch's test with equal variances is close).
    ``alternative``: "two-sided", or "one-sided" in the direction of the effect.

    >>> round(power(1.0, 1.0, 10, paired=True), 3)
    0.803
    """
    df, scale = _design(n, paired)
    if df < 1 or not sd > 0:
        return _NAN
    return _power_ncp(abs(float(effect)) / (float(sd) * scale), df, alpha, alternative)


def _power_ncp(ncp: float, df: float, alpha: float, alternative: str) -> float:
    """Power of a t-test on ``df`` degrees of freedom when the true effect is ``ncp`` standard
    errors."""
    if alternative == "two-sided":
        tc = st.t.ppf(1 - alpha / 2, df)
        # The lower tail as sf at -ncp (the same by symmetry): scipy's nct.cdf returns NaN far out
        # in the tail for non-integer df, such as Welch's.
        return float(st.nct.sf(tc, df, ncp) + st.nct.sf(tc, df, -ncp))
    if alternative == "one-sided":
        return float(st.nct.sf(st.t.ppf(1 - alpha, df), df, ncp))
    raise ValueError(f"alternative must be 'two-sided' or 'one-sided', got {alternative!r}")


@functools.lru_cache(maxsize=4096)
def _ncp_for(df: float, alpha: float, target: float, alternative: str) -> float:
    """The effect, in standard errors, that a t-test on ``df`` degrees of freedom detects with
    probability ``target``; infinite below one degree of freedom."""
    if not 0 < alpha < 1 or not alpha < target < 1:
        raise ValueError("need 0 < alpha < power < 1")
    if not df >= 1:
        return math.inf
    hi = 4.0
    while _power_ncp(hi, df, alpha, alternative) < target:
        hi *= 2
    return float(optimize.brentq(lambda c: _power_ncp(c, df, alpha, alternative) - target, 0.0, hi,
                                 xtol=1e-13, rtol=1e-13))


def _design(n: int | tuple[int, int], paired: bool) -> tuple[int, float]:
    if paired:
        if not isinstance(n, (int, np.integer)):
            raise ValueError("a paired design has one n (the number of pairs)")
        return int(n) - 1, 1 / math.sqrt(n) if n > 0 else _NAN
    na, nb = (n, n) if isinstance(n, (int, np.integer)) else n
    if na < 1 or nb < 1:
        return 0, _NAN
    return int(na + nb - 2), math.sqrt(1 / na + 1 / nb)


def min_detectable_effect(sd: float, n: int | tuple[int, int], alpha: float = 0.05,
                          power: float = 0.8, paired: bool = False,
                          alternative: str = "two-sided") -> float:
    """The smallest true mean difference this many seeds would detect with the given power.

    Solves :func:`power` (exact, via the noncentral t of ``scipy.stats.nct``) for the effect, with
    ``sd`` the seed-to-seed SD (of the differences if ``paired``). Set the result beside the
    paper's effect: if the paper's gain is smaller, our seeds could not have seen it, and an
    "inconclusive" says so rather than that the claim is false. Infinite with fewer than two runs.

    >>> round(min_detectable_effect(1.0, 3, paired=True), 3)
    3.264
    """
    df, scale = _design(n, paired)
    ncp = _ncp_for(float(df), float(alpha), float(power), alternative)
    return ncp if math.isinf(ncp) else float(ncp * float(sd) * scale)


def detectable_effect(test_record: Record | Mapping[str, Any], alpha: float = 0.05,
                      power: float = 0.8, alternative: str = "two-sided") -> float:
    """:func:`min_detectable_effect` for a measured t-test: the true effect its design (its
    degrees of freedom) would detect with the given power, if the spread were what we observed
    (its standard error). For Welch's test this uses Welch's degrees of freedom. The observed
    spread of 3-5 seeds is itself rough, so read it as an order of magnitude. NaN for tests
    without a standard error (the sign-flip test) or without spread.

    >>> r = paired([1.0, 2.0, 3.0], [0.5, 1.1, 2.6])
    >>> # in standard errors: 3.264 sd / sqrt(3) = 3.264 sqrt(3) se
    >>> round(detectable_effect(r) / r.se, 3)
    5.653
    """
    se, df = _get(test_record, "se"), _get(test_record, "df")
    if se is None or df is None or not (math.isfinite(se) and se > 0 and math.isfinite(df)):
        return _NAN
    return float(_ncp_for(float(df), float(alpha), float(power), alternative) * se)


def claim_row(test_record: Record | None = None, *, expect: str | None = None,
              partial: Partial | None = None, paper_effect: float | None = None,
              smallest: float | None = None, alias_of: str | None = None) -> dict[str, Any]:
    """One claim as a plain JSON-able dict, written when it is measured, before the book's family
    is known: the test, raw ``p``, ``effect`` with its ``ci`` and what the interval resampled or
    assumed, the expected direction, the partial criterion's name and whether it holds, and
    ``p_holm`` and ``verdict`` left ``None`` for :func:`fill`. ``paper_effect`` is the paper's
    effect in the same units (e.g. its FID gain), stored beside ``mde``, the effect our test could
    detect at 80% power at alpha = 0.05 (:func:`detectable_effect`); :func:`fill` adds
    ``mde_family``, the same at the Bonferroni level alpha / family, which is what Holm asks of
    the claim with the smallest p (and at most what it asks of any other).

    ``smallest``: for a directional claim, the smallest effect that would matter, stated before
    measuring (see :func:`verdict`: "negligible" when the interval lies inside it).

    ``alias_of="vit.auc"`` makes a row that only points at another claim which is the same test
    (``rvit.auc`` and ``vit.auc``): it is not counted again, and shares that claim's outcome.
    ``test_record=None`` with an ``expect`` is a claim that could not be tested here.

    >>> row = claim_row(welch([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]), expect="lower")
    >>> row["test"], row["effect"], row["p_holm"], row["verdict"]
    ('welch t', -3.0, None, None)
    """
    if alias_of is not None:
        if (test_record is not None or expect is not None or partial is not None
                or smallest is not None):
            raise ValueError("an alias carries nothing of its own: it shares its primary claim's "
                             "test")
        return {"alias_of": str(alias_of)}
    if expect not in EXPECT:
        raise ValueError(f"expect must be one of {EXPECT}, got {expect!r}")
    row: dict[str, Any] = {"test": None, "p": None, "effect": None, "ci": None, "confidence": None,
                           "ci_method": None, "unit": None, "n": None, "se": None, "df": None,
                           "margin": None}
    if test_record is not None:
        row.update(test_record.as_dict())
    if smallest is not None:
        if expect == "equal":
            raise ValueError("an 'equal' claim states its band as the equivalence margin "
                             "(equivalence(record, margin)), not as smallest")
        if not (math.isfinite(float(smallest)) and float(smallest) > 0):
            raise ValueError(f"smallest (the smallest effect that would matter) must be a positive "
                             f"number in the effect's units, got {smallest!r}")
    row.update({"expect": expect, "paper_effect": _num(paper_effect),
                "smallest": _num(float(smallest)) if smallest is not None else None,
                "mde": _num(detectable_effect(test_record)) if test_record is not None else None,
                "partial": partial.name if partial is not None else None,
                "partial_holds": (partial(test_record) if test_record is not None else False)
                if partial is not None else None,
                "p_holm": None, "verdict": None})
    return row


def fill(rows: Mapping[str, Mapping[str, Any]], alpha: float = 0.05) -> dict[str, dict[str, Any]]:
    """Fill ``p_holm``, ``family`` (how many tests the correction counted), ``mde_family`` (see
    :func:`claim_row`) and ``verdict`` for every claim of the book, from rows made by
    :func:`claim_row` (or read back from JSON).

    The family is every primary claim with a p-value; each is counted once. An alias row takes its
    primary's record and outcome, with ``alias_of`` kept so the report can show the link; an alias
    of an alias, or of a claim that is not there, is an error. Rows come back in the given order.

    >>> rows = {"vit.auc": claim_row(paired([0.74, 0.77, 0.73], [0.70, 0.72, 0.70]),
    ...                              expect="higher"),
    ...         "rvit.auc": claim_row(alias_of="vit.auc"),
    ...         "fig9.gap": claim_row(welch([1.2, 0.8, 1.1], [1.0, 1.1, 0.9]), expect="lower")}
    >>> out = fill(rows)
    >>> [(k, r["family"], round(r["p_holm"], 3), r["verdict"]) for k, r in out.items()]
    [('vit.auc', 2, 0.04, 'reproduced'), ('rvit.auc', 2, 0.04, 'reproduced'), ('fig9.gap', 2, 0.819, 'inconclusive')]
    """  # noqa: E501 - a doctest's expected output is one line
    primaries = {k: r for k, r in rows.items() if r.get("alias_of") is None}
    for k, r in rows.items():
        target = r.get("alias_of")
        if target is not None and target not in primaries:
            raise ValueError(f"claim {k!r} is an alias of {target!r}, which is not a primary claim "
                             "here")
    adjusted = holm({k: r.get("p") for k, r in primaries.items() if r.get("test") is not None})
    family = sum(not math.isnan(v) for v in adjusted.values())
    done: dict[str, dict[str, Any]] = {}
    for k, r in primaries.items():
        out = dict(r)
        if r.get("test") is None:
            out.update(p_holm=None, family=family, mde_family=None, verdict="not testable")
        else:
            ph = adjusted[k]
            mde = detectable_effect(r, alpha / family) if family else _NAN
            out.update(p_holm=_num(ph), family=family, mde_family=_num(mde),
                       verdict=verdict(r["expect"], r, ph, alpha, partial=r.get("partial_holds"),
                                       smallest=r.get("smallest")))
        done[k] = out
    return {k: (dict(done[r["alias_of"]], alias_of=r["alias_of"]) if r.get("alias_of") is not None
                else done[k])
            for k, r in rows.items()}
