"""One way to write every number the book prints, and comparisons that cannot contradict them.

The rules, one function each:

- :func:`num`: a fixed number of decimals, thousands separators (``1,710,008``), never ``-0.0``
  (a value that rounds to zero is written without a sign);
- :func:`snap`: float noise to zero: a value below :data:`ZERO_TOL` times the ``scale`` of the
  numbers it stands among (``0.78 - 0.78 = -1.1e-16``) is 0; :func:`num`, :func:`sig` and
  :func:`signed` take that ``scale`` and print such a value as ``0``, never ``-0``;
- :func:`sig`: a number of significant figures, but never fewer than its integer digits
  (``358`` rather than ``3.6e+02``), in positional notation for ordinary magnitudes and in a
  short scientific form (``1.5e-15``) only below :data:`TINY` or from :data:`HUGE` up;
- :func:`signed`: a difference, with its sign (``+0.60``, ``-0.06``, ``0.00``);
- :func:`fid`: an FID, to one decimal (seed-to-seed spreads are several points);
- :func:`pvalue`: a p-value, to two significant figures, or ``< 1e-6``;
- :func:`share`: a share of a whole as a percentage (``81.2%``);
- :func:`count`: a count, with thousands separators;
- :func:`duration`: seconds as a reader says them (``41 s``, ``3.2 min``, ``1.5 h``, ``195 years``);
- :func:`minutes`: seconds as minutes with one decimal, for a column of run times;
- :func:`ordinal`: ``1st``, ``2nd``, ``3rd``, ``4th``.

Every function writes a missing value (``None`` or NaN) as :data:`MISSING`.

Sentences that compare numbers are written from them, so that their order and wording cannot
disagree with what they print: :func:`compare` ("A (81.2%) is above B (81.1%)", or "equal to
the printed precision"), :func:`ranking_moves` (how the places of a ranking change between two
settings), :func:`tally` ("5 inside, 4 on the edge and 1 on the background"), :func:`by_sign`
(the words for a difference, chosen by its sign), :func:`trend` ("falls by 28% (from 1.34 to
0.96)"). :func:`comparison_errors` reads any sentence and lists the comparisons whose words
contradict their own numbers.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, Iterable, Mapping

__all__ = ["MISSING", "TINY", "HUGE", "P_FLOOR", "ZERO_TOL", "snap", "num", "sig", "signed", "fid",
           "interval_decimals", "pvalue", "share",
           "count", "counted", "duration", "minutes", "ordinal", "listing", "between", "compare", "comparison_errors",
           "ranking_moves", "tally", "by_sign", "trend"]

#: A missing value (None, NaN) is written as this en dash.
MISSING = "–"
#: Below this magnitude :func:`sig` writes a number in scientific form (``5.1e-6``).
TINY = 1e-4
#: From this magnitude up :func:`sig` writes a number in scientific form (``1.2e15``).
HUGE = 1e15
#: Below this a p-value is written ``< 1e-6``.
P_FLOOR = 1e-6
#: A value below this share of the scale of the numbers it stands among is float noise
#: (:func:`snap`): doubles carry about 16 significant digits, so a difference of two equal
#: measurements comes out near 1e-16 of them, and a real difference is far above 1e-12 of them.
ZERO_TOL = 1e-12


def _missing(x: Any) -> bool:
    if x is None:
        return True
    try:
        return not math.isfinite(float(x))
    except (TypeError, ValueError):
        raise TypeError(f"not a number: {x!r}") from None


def _unsigned_zero(text: str) -> str:
    """``-0.00`` -> ``0.00``: a value that rounds to zero has no sign."""
    if text.startswith(("-", "+")) and not any(ch in "123456789" for ch in text.split("e")[0]):
        return text[1:]
    return text


def snap(x: float, scale: float | None) -> float:
    """``x``, or 0.0 where ``|x|`` is below :data:`ZERO_TOL` times ``|scale|``, the magnitude of
    the numbers ``x`` stands among (the two values it is the difference of, the mean beside an
    sd, the margin of a test): float noise such as ``0.78 - 0.78 = -1.1e-16`` is no difference.
    Without a ``scale`` a number is its own scale and is kept: a residual of ``1.5e-15`` measured
    on its own is a measurement, not noise.

    >>> snap(-1.1102230246251565e-16, 0.78), snap(2.0e-9, 0.78), snap(1.5e-15, None)
    (0.0, 2e-09, 1.5e-15)
    """
    x = float(x)
    if scale is None or not math.isfinite(float(scale)):
        return x
    return 0.0 if abs(x) < ZERO_TOL * abs(float(scale)) else x


def num(x: float | None, decimals: int = 1, *, scale: float | None = None) -> str:
    """``x`` with ``decimals`` decimals and thousands separators; never ``-0.0``; float noise
    relative to ``scale`` is 0 (:func:`snap`).

    >>> num(1710008.4, 0), num(3.14159, 2), num(-0.04), num(-12.345, 1), num(None)
    ('1,710,008', '3.14', '0.0', '-12.3', '–')
    """
    if _missing(x):
        return MISSING
    if decimals < 0:
        raise ValueError(f"decimals must be >= 0, got {decimals}")
    return _unsigned_zero(f"{snap(float(x), scale):,.{decimals}f}")


def _exponent(x: float, digits: int) -> int:
    """The power of ten of ``x`` once rounded to ``digits`` significant figures (0.998 -> 0 at
    2)."""
    e = math.floor(math.log10(abs(x)))
    if abs(round(abs(x), digits - 1 - e)) >= 10.0 ** (e + 1):
        e += 1
    return e


def _scientific(x: float, digits: int) -> str:
    mantissa, exp = f"{x:.{digits - 1}e}".split("e")
    return _unsigned_zero(f"{mantissa}e{int(exp)}")


def sig(x: float | None, digits: int = 2, *, scale: float | None = None) -> str:
    """``x`` to ``digits`` significant figures, but never fewer than its integer digits, with
    thousands separators; in scientific form (``1.5e-15``, no ``+`` or leading zeros in the
    exponent) only when ``|x|`` is below :data:`TINY` or at least :data:`HUGE`. Float noise
    relative to ``scale`` (:func:`snap`) is ``0``.

    >>> sig(358.4), sig(0.01234), sig(0.998), sig(150_700_000.0, 4), sig(1.494e-15), sig(0.0)
    ('358', '0.012', '1.0', '150,700,000', '1.5e-15', '0')
    >>> sig(-0.00012), sig(5.13e-06), sig(2.5e17, 3), sig(1.36e-16, scale=0.78)
    ('-0.00012', '5.1e-6', '2.50e17', '0')
    """
    if _missing(x):
        return MISSING
    if digits < 1:
        raise ValueError(f"digits must be >= 1, got {digits}")
    x = snap(float(x), scale)
    if x == 0:
        return "0"
    if abs(x) < TINY or abs(x) >= HUGE:
        return _scientific(x, digits)
    return num(x, max(0, digits - 1 - _exponent(x, digits)))


def signed(x: float | None, decimals: int = 2, *, digits: int | None = None,
           scale: float | None = None) -> str:
    """A difference with its sign, ``decimals`` decimals (or ``digits`` significant figures, as
    :func:`sig`); zero (to that precision, or float noise relative to ``scale``: :func:`snap`)
    has none.

    >>> signed(0.6), signed(-0.0612), signed(-0.001), signed(1234.5, 0), signed(-0.04123, digits=2)
    ('+0.60', '-0.06', '0.00', '+1,234', '-0.041')
    >>> signed(-1.1102230246251565e-16, digits=2, scale=0.78)
    '0'
    """
    if _missing(x):
        return MISSING
    text = num(x, decimals, scale=scale) if digits is None else sig(x, digits, scale=scale)
    return text if text.startswith("-") or _value(text) == 0 else "+" + text


def interval_decimals(lo: float | None, hi: float | None, decimals: int = 2, most: int = 6) -> int:
    """The decimals at which an interval's two ends print apart: ``decimals``, or more (up to
    ``most``) where ``decimals`` would print both ends the same, as in "+0.02 to +0.02".

    >>> interval_decimals(-0.06, 1.26), interval_decimals(0.0193, 0.0231), interval_decimals(1, 1)
    (2, 3, 2)
    """
    if _missing(lo) or _missing(hi) or float(lo) == float(hi):
        return decimals
    for d in range(decimals, most + 1):
        if num(lo, d) != num(hi, d):
            return d
    return most


def fid(x: float | None) -> str:
    """An FID (or any score whose seed-to-seed spread is several units), to one decimal.

    >>> fid(140.9312), fid(7.114)
    ('140.9', '7.1')
    """
    return num(x, 1)


def pvalue(p: float | None) -> str:
    """A p-value: two significant figures (three where two would print ``0.05`` for a p that is
    not 0.05, so that a p just under the level does not read as one on it), ``< 1e-6`` below
    :data:`P_FLOOR`.

    >>> pvalue(0.0591), pvalue(0.0496), pvalue(0.00018), pvalue(1.8e-69), pvalue(0.998), pvalue(0.05)
    ('0.059', '0.0496', '0.00018', '< 1e-6', '1.0', '0.050')
    >>> pvalue(2.3e-5)
    '2.3e-5'
    """
    if _missing(p):
        return MISSING
    p = float(p)
    if not 0 <= p <= 1:
        raise ValueError(f"a p-value lies in [0, 1], got {p}")
    if p < P_FLOOR:
        return "< 1e-6"
    shown = sig(p, 2)
    return sig(p, 3) if _value(shown) == 0.05 and p != 0.05 else shown


def share(x: float | None, decimals: int = 1) -> str:
    """A share of a whole (0.8115) as a percentage (``81.2%``).

    >>> share(0.8115), share(0.22, 0), share(-0.0001), share(1.0)
    ('81.2%', '22%', '0.0%', '100.0%')
    """
    if _missing(x):
        return MISSING
    return num(100 * float(x), decimals) + "%"


def count(n: int | float | None) -> str:
    """A count, with thousands separators.

    >>> count(70000), count(12.0)
    ('70,000', '12')
    """
    if _missing(n):
        return MISSING
    if float(n) != int(n):
        raise ValueError(f"a count is a whole number, got {n}")
    return f"{int(n):,}"


def counted(n: int | float, unit: str) -> str:
    """A count of a plural ``unit`` ("seeds", "images"), the unit made singular for one.

    >>> counted(1, "seeds"), counted(2000, "images"), counted(1, "")
    ('1 seed', '2,000 images', '1')
    """
    if int(n) == 1 and unit.endswith("s"):
        unit = unit[:-1]
    return f"{count(n)} {unit}".rstrip()


def duration(seconds: float | None) -> str:
    """Seconds as a reader says them: seconds below a minute, minutes below an hour (one
    decimal below ten), hours below two days, days below a year, years beyond.

    >>> duration(41.1), duration(189.3), duration(2178.7), duration(5400), duration(86400 * 5)
    ('41 s', '3.2 min', '36 min', '1.5 h', '5.0 days')
    >>> duration(1_710_008 * 3600)
    '195 years'
    """
    if _missing(seconds):
        return MISSING
    s = float(seconds)
    if s < 60:
        return f"{num(s, 0 if s >= 10 else 1)} s"
    if s < 3600:
        m = s / 60
        return f"{num(m, 1 if m < 10 else 0)} min"
    if s < 2 * 86400:
        return f"{num(s / 3600, 1)} h"
    if s < 365.25 * 86400:
        return f"{num(s / 86400, 1)} days"
    years = s / (365.25 * 86400)
    return f"{sig(years, 2)} years"


def minutes(seconds: float | None, decimals: int = 1) -> str:
    """Seconds as minutes, one decimal, without a unit (for a column headed "min"): every page
    that prints a run time in minutes prints it this way, so that two pages cannot round one
    time differently.

    >>> minutes(2178.7), minutes(13.9), minutes(4857.0)
    ('36.3', '0.2', '81.0')
    """
    return MISSING if _missing(seconds) else num(float(seconds) / 60, decimals)


def ordinal(n: int) -> str:
    """``1st``, ``2nd``, ``3rd``, ``4th``, ..., ``11th``, ``21st``.

    >>> [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22)]
    ['1st', '2nd', '3rd', '4th', '11th', '12th', '13th', '21st', '22nd']
    """
    if 10 <= n % 100 <= 20:
        return f"{n}th"
    return f"{n}{ {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th') }"


# ---------------------------------------------------------------------------------------------
# Sentences written from their numbers

#: The words :func:`compare` uses, and :func:`comparison_errors` reads: (larger, smaller).
COMPARE_WORDS = {"above": "below", "higher than": "lower than", "larger than": "smaller than",
                 "more than": "less than", "better than": "worse than"}
_EQUAL = "equal to"


def compare(a: str, x: float, b: str, y: float, show: Callable[[float], str] = share, *,
            words: tuple[str, str] = ("above", "below"), better: str | None = None) -> str:
    """A sentence comparing two numbers, written from them: "A (81.2%) is above B (81.1%)".

    ``show`` prints each number (a function of this module); the comparison is made on the
    printed values, so that what the reader sees always agrees with the words: where both
    print alike, the sentence says they are "equal to the printed precision". ``words`` is the
    pair (larger, smaller). ``better`` ("higher" or "lower") adds whether A is the better one,
    as a clause.

    >>> compare("own order", 0.8107, "the fixed order", 0.8115)
    'own order (81.1%) is below the fixed order (81.2%)'
    >>> compare("CMAR", 199.94, "MAR", 170.02, fid, words=("higher than", "lower than"), better="lower")
    'CMAR (199.9) is higher than MAR (170.0), worse'
    >>> compare("greedy", -215.81, "random", -215.79, lambda v: num(v, 1))
    'greedy (-215.8) is equal to random (-215.8) to the printed precision'
    """
    sx, sy = show(x), show(y)
    if sx == MISSING or sy == MISSING:
        raise ValueError(f"cannot compare a missing value: {a} {sx}, {b} {sy}")
    vx, vy = _value(sx), _value(sy)
    if vx == vy:
        return f"{a} ({sx}) is {_EQUAL} {b} ({sy}) to the printed precision"
    larger, smaller = words
    text = f"{a} ({sx}) is {larger if vx > vy else smaller} {b} ({sy})"
    if better is not None:
        if better not in ("higher", "lower"):
            raise ValueError(f"better must be 'higher' or 'lower', got {better!r}")
        text += ", better" if (vx > vy) == (better == "higher") else ", worse"
    return text


_NUM = r"[-+\u2212]?\d[\d,]*(?:\.\d+)?(?:e-?\d+)?%?"


def _value(text: str) -> float:
    """The number a printed value stands for (``81.2%`` -> 81.2, ``1,234`` -> 1234, ``< 1e-6`` ->
    1e-6)."""
    m = re.search(_NUM, text)
    if m is None:
        raise ValueError(f"no number in {text!r}")
    return float(m.group(0).replace(",", "").replace("\u2212", "-").rstrip("%"))


_ALL_WORDS = ("|".join(re.escape(w) for pair in COMPARE_WORDS.items() for w in pair) + "|"
              + re.escape(_EQUAL))
_COMPARISON = re.compile(rf"\(\s*(?P<x>{_NUM})\s*\)\s+is\s+(?P<word>{_ALL_WORDS})\s+[^()]*?\(\s*(?P<y>{_NUM})\s*\)")


def comparison_errors(text: str) -> list[str]:
    """The comparisons in ``text`` whose words contradict their own numbers: every "X (a) is
    above / below / higher than / ... / equal to Y (b)" where a and b, as printed, do not stand
    in that relation. An empty list means every comparison agrees with its numbers.

    >>> comparison_errors("own order (81.2%) is above the fixed order (81.1%); CMAR (199.9) is lower than MAR (170.0)")
    ['(199.9) is lower than MAR (170.0)']
    """
    smaller_of = dict(COMPARE_WORDS)
    bad = []
    for m in _COMPARISON.finditer(text):
        x, y, word = _value(m.group("x")), _value(m.group("y")), m.group("word")
        ok = (x == y if word == _EQUAL else x > y if word in smaller_of else x < y)
        if not ok:
            bad.append(m.group(0))
    return bad


def ranking_moves(first: Mapping[str, float], second: Mapping[str, float], *,
                  lower_first: bool = True, show: Callable[[float], str] | None = None) -> str:
    """How the places of the same entries change from one ranking to another, as a sentence.

    ``first`` and ``second`` hold one value per entry (e.g. the prefix-curve areas of the
    orders on two data sets); each ranking puts the lowest first (``lower_first``, else the
    highest). With ``show``, entries are ranked by their printed values, and those that print
    alike share a place. The sentence names the entries that keep their place and every move.

    >>> ranking_moves({"greedy": -215.8, "random": -128.6, "raster": -56.5, "reversed": -40.4},
    ...               {"greedy": -405.9, "reversed": -402.1, "random": -381.5, "raster": -323.7})
    'greedy keeps its place (1st); reversed moves from 4th to 2nd place, random from 2nd to 3rd, raster from 3rd to 4th'
    >>> ranking_moves({"a": 1.0, "b": 2.0}, {"a": 5.0, "b": 7.0})
    'the ranking is the same (a, b)'
    """
    if set(first) != set(second):
        raise ValueError(f"the rankings hold different entries: {sorted(set(first) ^ set(second))}")
    place_a, place_b = _places(first, lower_first, show), _places(second, lower_first, show)
    names = sorted(first, key=lambda k: (place_a[k], k))
    if all(place_a[k] == place_b[k] for k in names):
        return f"the ranking is the same ({', '.join(names)})"
    kept = [k for k in names if place_a[k] == place_b[k]]
    moved = [k for k in sorted(names, key=lambda k: (place_b[k], k)) if place_a[k] != place_b[k]]
    parts = []
    if kept:
        where = ", ".join(f"{ordinal(place_a[k])}" for k in kept)
        parts.append(f"{listing(kept)} "
                     f"{'keeps its place' if len(kept) == 1 else 'keep their places'} ({where})")
    moves = [f"{k} {'moves ' if i == 0 else ''}from {ordinal(place_a[k])} to {ordinal(place_b[k])}"
             + (" place" if i == 0 else "") for i, k in enumerate(moved)]
    parts.append(", ".join(moves))
    return "; ".join(parts)


def _places(values: Mapping[str, float], lower_first: bool,
            show: Callable[[float], str] | None) -> dict[str, int]:
    """Competition ranking (1, 2, 2, 4) of the values, on their printed form when ``show`` is
    given."""
    key = {k: (_value(show(v)) if show else float(v)) for k, v in values.items()}
    sign = 1 if lower_first else -1
    return {k: 1 + sum(sign * key[o] < sign * key[k] for o in key) for k in key}


def listing(items: Iterable[str]) -> str:
    """Items as a reader lists them: "a", "a and b", "a, b and c".

    >>> listing(["a"]), listing(["a", "b"]), listing(["a", "b", "c"])
    ('a', 'a and b', 'a, b and c')
    """
    items = list(items)
    if not items:
        raise ValueError("nothing to list")
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def between(lo: float, hi: float, show: Callable[[float], str] = share) -> str:
    """A range as a reader says it, "between 96% and 100%", or the one value when both ends print
    the same ("100%", never "between 100% and 100%").

    >>> between(0.958, 1.0, lambda x: share(x, 0)), between(0.999, 1.0, lambda x: share(x, 0))
    ('between 96% and 100%', '100%')
    """
    a, b = show(lo), show(hi)
    return a if a == b else f"between {a} and {b}"


def tally(counts: Mapping[str, int] | Iterable[tuple[str, int]], *, of: int | None = None,
          zeros: bool = False) -> str:
    """Counts as a phrase, in the given order: "5 inside, 4 on the edge and 1 on the background".

    ``of`` adds the whole to the first count ("5 of 10 inside, ..."), and is checked against the
    sum; counts of 0 are left out unless ``zeros``.

    >>> tally({"inside the garment": 5, "on its edge": 4, "on the background": 1}, of=10)
    '5 of 10 inside the garment, 4 on its edge and 1 on the background'
    >>> tally([("kept", 3), ("dropped", 0)])
    '3 kept'
    """
    items = list(counts.items() if isinstance(counts, Mapping) else counts)
    total = sum(n for _, n in items)
    if of is not None and total != of:
        raise ValueError(f"the counts sum to {total}, not {of}")
    shown = [(what, n) for what, n in items if n or zeros]
    if not shown:
        return f"0 of {of}" if of is not None else "none"
    words = [f"{count(n)}{f' of {count(of)}' if i == 0 and of is not None else ''} {what}"
             for i, (what, n) in enumerate(shown)]
    return listing(words)


def by_sign(x: float, positive: str, otherwise: str) -> str:
    """The words for a difference ``x``: ``positive`` when it is above 0, ``otherwise`` when it is
    0 or below ("raise" / "do not raise"), so that a verb cannot disagree with the sign printed
    beside it.

    >>> by_sign(1.4, "helps", "does not help"), by_sign(-5.7, "helps", "does not help")
    ('helps', 'does not help')
    """
    if _missing(x):
        raise ValueError(f"no sign to read from {x!r}")
    return positive if float(x) > 0 else otherwise


def trend(what: str, first: float, last: float, show: Callable[[float], str] = lambda v: sig(v, 3),
          *, flat: float = 0.1) -> str:
    """How a quantity changed from ``first`` to ``last``, as a phrase written from the two
    numbers: "L_c falls by 5% (from 1.34 to 1.27)", "... rises by 8% (...)", or, when the
    relative change is below ``flat`` or both print alike, "... stays within 10% (...)" or
    "... stays at 0.085". The words never claim a fall that the numbers do not show.

    >>> trend("L_c", 1.3416, 0.9620)
    'L_c falls by 28% (from 1.34 to 0.962)'
    >>> trend("the gradient norm", 0.019783, 0.021152)
    'the gradient norm stays within 10% (from 0.0198 to 0.0212)'
    >>> trend("the gradient norm", 0.019783, 0.030875, flat=0.05)
    'the gradient norm rises by 56% (from 0.0198 to 0.0309)'
    """
    if _missing(first) or _missing(last):
        raise ValueError(f"cannot describe a change with a missing value: {first}, {last}")
    if not 0 <= flat < 1:
        raise ValueError(f"flat is a share in [0, 1), got {flat}")
    sa, sb = show(first), show(last)
    if sa == sb:
        return f"{what} stays at {sa}"
    if first == 0:
        return f"{what} {'rises' if last > 0 else 'falls'} from {sa} to {sb}"
    rel = (last - first) / abs(first)
    if abs(rel) < flat:
        return f"{what} stays within {share(flat, 0)} (from {sa} to {sb})"
    return f"{what} {'rises' if rel > 0 else 'falls'} by {share(abs(rel), 0)} (from {sa} to {sb})"
