"""Turning Python values into safe Typst source.

Text that comes from results files (questions, answers, package names…) is data, never markup: the
`typ` filter backslash-escapes every character Typst markup gives a meaning to, so a question such as
`Is the *red* thing @ the #3 spot?` prints literally. `Raw` marks strings that already are trusted Typst
source (e.g. the flow stage's `statement_typst`), which pass through unchanged.
"""
from __future__ import annotations

import math
import re

from ..contract.persian import latin_number

# Characters with a meaning somewhere in Typst markup (emphasis, code, math, labels, references, lists,
# headings, comments, smart quotes, escapes, shorthands). A backslash before any of them prints it as is.
_MARKUP_SPECIAL = set("\\#*_`$<>@[]~/=-+'\":.{}")
_WS = re.compile(r"\s+")


class Raw(str):
    """A string that is already Typst source: templates print it without escaping."""

    def __html__(self) -> str:  # markupsafe protocol: the Jinja environment keeps it as is
        return str(self)


def escape_markup(text: str) -> str:
    """`text` as literal Typst markup: special characters escaped, line breaks folded to spaces."""
    text = _WS.sub(" ", str(text))
    return "".join("\\" + ch if ch in _MARKUP_SPECIAL else ch for ch in text)


def typst_string(text: str) -> Raw:
    """A Typst string literal (for code positions such as `image(⟦ path | str ⟧)`)."""
    out = ['"']
    for ch in str(text):
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20:
            out.append(f"\\u{{{ord(ch):x}}}")
        else:
            out.append(ch)
    out.append('"')
    return Raw("".join(out))


def sci(value: float, digits: int = 2) -> Raw:
    """A number as inline Typst math in scientific notation, `$1.23 times 10^(-12)$` (math stays LTR, Latin
    digits — as equations do). Zero prints as `$0$`."""
    if value == 0:
        return Raw("$0$")
    if not math.isfinite(value):
        return Raw("$oo$" if value > 0 else ("$-oo$" if value < 0 else "$\"NaN\"$"))
    exponent = math.floor(math.log10(abs(value)))
    mantissa = value / 10**exponent
    if round(abs(mantissa), digits) >= 10:  # 9.999 rounds up to 10.00
        mantissa, exponent = mantissa / 10, exponent + 1
    if exponent == 0:
        return Raw(f"${mantissa:.{digits}f}$")
    return Raw(f"${mantissa:.{digits}f} times 10^({exponent})$")


# U+2066 LEFT-TO-RIGHT ISOLATE … U+2069 POP DIRECTIONAL ISOLATE: the characters `en[…]` of style.typ wraps a run
# in, so that neutral characters at its edges keep their place inside a right-to-left line.
LRI, PDI = "\u2066", "\u2069"
_RELATIONS = {"=": "=", "≈": "approx", "approx": "approx", "<": "<", ">": ">", "<=": "<=", ">=": ">=",
              "≤": "<=", "≥": ">="}


def math_number(value: float | int, decimals: int | None = None, grouping: bool = False) -> str:
    """A number as Typst math source with Latin digits (every formula of the report uses Latin digits);
    grouped digits are one upright string, so the commas get no math spacing: `"2,923,466,480"`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"a formula needs a number, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        return "oo" if value > 0 else ("-oo" if value < 0 else '"NaN"')
    text = latin_number(value, decimals, grouping)
    sign, digits = ("-", text[1:]) if text.startswith("-") else ("", text)
    return sign + (f'"{digits}"' if "," in digits else digits)


def assignment(value: float | int, symbol: str, decimals: int | None = None, grouping: bool = False,
               rel: str = "=") -> Raw:
    """`symbol = value` as ONE inline formula, `$d_h = 256$`: a symbol in math beside a value in Persian text
    falls apart in a right-to-left line (the value lands on the other side of the symbol). `symbol` is Typst
    math source; `rel` one of = ≈ < > ≤ ≥."""
    if rel not in _RELATIONS:
        raise ValueError(f"unknown relation {rel!r}: use one of {', '.join(_RELATIONS)}")
    return Raw(f"${symbol} {_RELATIONS[rel]} {math_number(value, decimals, grouping)}$")


def code_number(value: float | int) -> Raw:
    """A number as Typst code (Latin digits), for layout positions such as `columns: ⟦ n | num ⟧`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"num needs a number, got {value!r}")
    return Raw(repr(value) if isinstance(value, int) else f"{value:.6g}")
