"""Persian number and date formatting for the report: Persian digits (U+06F0–U+06F9), the Persian decimal separator
«٫» (U+066B) and percent sign «٪» (U+066A), as Persian typesetting expects."""
from __future__ import annotations

import math
from datetime import date, datetime

_TO_PERSIAN = str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹")
_SEPARATORS = {".": "\u066b", ",": "\u066c"}  # ٫ ٬


def to_persian_digits(text: str) -> str:
    """Replace ASCII digits by Persian ones, '.' between digits by «٫» and ',' by «٬»."""
    return "".join(_SEPARATORS[ch] if ch in _SEPARATORS and 0 < i < len(text) - 1 and text[i - 1].isdigit()
                   and text[i + 1].isdigit() else ch for i, ch in enumerate(text)).translate(_TO_PERSIAN)


def latin_number(value: float | int, decimals: int | None = None, grouping: bool = False) -> str:
    """A finite number as text with Latin digits, the one formatting rule of prose and formulas: ints as they are,
    floats with `decimals` places (4 significant digits when None), "," between thousands when `grouping`.
    Raises ValueError where that would need an exponent (the caller says how to write it instead)."""
    sep = "," if grouping else ""
    if decimals is None and isinstance(value, int):
        return f"{value:{sep}d}"
    if decimals is None:
        text = f"{value:{sep}.4g}"
        if "e" in text:
            raise ValueError(f"{value!r} would need an exponent: give decimals (fa(x, 2)) or use the `sci` filter")
        return text
    return f"{value:{sep}.{decimals}f}"


def typst_number(value: float, digits: int = 2) -> str:
    """A float as Typst math with Latin digits: `0.075`, or `1.8 dot 10^(-10)` for very small or large magnitudes
    (`digits` + 1 significant digits, `digits` in the mantissa)."""
    if value == 0 or 1e-3 <= abs(value) < 1e4:
        return f"{value:.{digits + 1}g}"
    mantissa, exp = f"{value:.{digits - 1}e}".split("e")
    return f"{mantissa} dot 10^({int(exp)})"


def fa(value: float | int | str, decimals: int | None = None, grouping: bool = False) -> str:
    """A number in Persian digits: `fa(0.7346, 2)` → «۰٫۷۳»; ints keep no decimals unless asked; `grouping` adds
    thousands separators («۱٬۲۳۴٬۵۶۷»); a negative number gets a minus sign (U+2212), not a hyphen."""
    if isinstance(value, str):
        return to_persian_digits(value)
    if isinstance(value, bool) or value is None:
        raise TypeError(f"fa() needs a number, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        return "—" if math.isnan(value) else ("∞" if value > 0 else "−∞")
    return to_persian_digits(latin_number(value, decimals, grouping).replace("-", "\u2212"))  # only a leading sign


# U+2067 RIGHT-TO-LEFT ISOLATE + U+061C ARABIC LETTER MARK … U+2069: a Persian number with its percent sign reads
# the same everywhere. Without them the bidi algorithm puts «٪» on the left of the digits after a Persian letter
# (the digits turn Arabic-number class) and on the right in a table cell or after Latin text (European class).
_RTL_NUMBER = ("\u2067\u061c", "\u2069")


def percent(value: float, decimals: int = 1) -> str:
    """A number that already is a percentage: `percent(84.5)` → «۸۴٫۵٪», «٪» on the left of the digits in every
    context (a right-to-left isolate)."""
    return _RTL_NUMBER[0] + fa(value, decimals) + "\u066a" + _RTL_NUMBER[1]  # ٪


def pct(value: float, decimals: int = 1) -> str:
    """A fraction as a Persian percentage: `pct(0.734)` → «۷۳٫۴٪» (see `percent`)."""
    return percent(100.0 * value, decimals)


def plus_minus(mean: float, std: float, decimals: int = 3) -> str:
    """«mean ± std» in Persian digits as one left-to-right run (U+2066 … U+2069): in a right-to-left line the
    two numbers would otherwise swap sides and read «std ± mean»."""
    return "\u2066" + fa(mean, decimals) + " ± " + fa(std, decimals) + "\u2069"


def jalali_date(day: date | datetime) -> str:
    """«۶ آذر ۱۴۰۴» for a Gregorian date (jdatetime does the calendar arithmetic and names the month)."""
    import jdatetime

    j = jdatetime.date.fromgregorian(date=day if not isinstance(day, datetime) else day.date())
    return f"{fa(j.day)} {j.j_months_fa[j.month - 1]} {fa(j.year)}"
