"""Python values as Typst source, through the report's Jinja2 environment: delimiters `⟦ expr ⟧`, `⟦% stmt %⟧`,
`⟦# comment #⟧` (the white brackets U+27E6/U+27E7 mean nothing in Typst, so the two syntaxes never collide), and
Typst's escaping instead of HTML's. A `str` from the results is data, never markup; `Raw`, macro output and
included templates are trusted Typst source; an `int` prints in Persian digits; a float, `None` or a bool is an
error (the template must say how to print it).
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from ..contract.persian import fa, latin_number, pct, percent, plus_minus, typst_number

DELIMITERS = dict(variable_start_string="⟦", variable_end_string="⟧",
                  block_start_string="⟦%", block_end_string="%⟧",
                  comment_start_string="⟦#", comment_end_string="#⟧")

# Characters with a meaning somewhere in Typst markup (emphasis, code, math, labels, references, lists,
# headings, comments, smart quotes, escapes, shorthands). A backslash before any of them prints it as is.
_MARKUP_SPECIAL = set("\\#*_`$<>@[]~/=-+'\":.{}")
_WS = re.compile(r"\s+")
_RELATIONS = {"=": "=", "≈": "approx", "approx": "approx", "<": "<", ">": ">", "<=": "<=", ">=": ">=",
              "≤": "<=", "≥": ">="}


class Raw(str):
    """A string that is already Typst source: templates print it without escaping."""

    def __html__(self) -> str:  # markupsafe protocol: the Jinja environment keeps it as is
        return str(self)


def escape_markup(text: str) -> str:
    """`text` as literal Typst markup: special characters escaped, line breaks folded to spaces."""
    return "".join("\\" + ch if ch in _MARKUP_SPECIAL else ch for ch in _WS.sub(" ", str(text)))


def typst_string(text: str) -> Raw:
    """A Typst string literal (for code positions such as `image(⟦ path | tstr ⟧)`)."""
    escapes = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t"}
    return Raw('"' + "".join(escapes.get(ch) or (f"\\u{{{ord(ch):x}}}" if ord(ch) < 0x20 else ch)
                             for ch in str(text)) + '"')


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


def _check_number(value: Any, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} needs a number, got {value!r}")


def math_number(value: float | int, decimals: int | None = None, grouping: bool = False) -> str:
    """A number as Typst math source with Latin digits (every formula of the report uses Latin digits);
    grouped digits are one upright string, so the commas get no math spacing: `"2,923,466,480"`."""
    _check_number(value, "a formula")
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
    _check_number(value, "num")
    return Raw(repr(value) if isinstance(value, int) else f"{value:.6g}")


def derivation_number(value: float | int) -> Raw:
    """A number as Typst math (Latin digits): 0.05, 500, `4.2 dot 10^(-4)` for small or large magnitudes."""
    _check_number(value, "mathnum")
    if isinstance(value, int) or float(value).is_integer() and abs(value) < 1e6:
        return Raw(str(int(value)))
    return Raw(typst_number(value))


def fixed(value: float, decimals: int) -> Raw:
    """`decimals` places as Typst math (Latin digits; a minus sign is math's)."""
    if not math.isfinite(value):
        raise ValueError(f"fixed() of a non-finite number {value!r}")
    return Raw(f"{value:.{decimals}f}")


class TemplateValueError(jinja2.TemplateError):
    """A value a template tried to print that has no single right rendering."""


@jinja2.pass_eval_context
def finalize(eval_ctx: Any, value: Any) -> Any:
    """Every printed value as Typst-safe text. It takes the evaluation context (unused) because Jinja folds a
    constant output (`⟦ 3 ⟧`, `⟦ "a&b" ⟧`) at compile time, HTML-escaped and past `finalize`, unless finalize
    needs the runtime context (jinja2/compiler.py, CodeGenerator.visit_Output): so every value comes here."""
    if hasattr(value, "__html__"):  # Raw, Markup (macro output, or already escaped)
        return value
    if isinstance(value, bool) or value is None:
        raise TemplateValueError(f"template printed {value!r}: branch on it with ⟦% if %⟧ instead of printing it")
    if isinstance(value, int):
        return Markup(fa(value))
    if isinstance(value, float):
        raise TemplateValueError(f"template printed the float {value!r} unformatted: use ⟦ x | fa(2) ⟧, "
                                 "⟦ x | pct ⟧, ⟦ x | sci ⟧ (markup) or ⟦ x | num ⟧ (Typst code)")
    if isinstance(value, str):
        return Markup(escape_markup(value))
    raise TemplateValueError(f"template printed a {type(value).__name__} ({str(value)[:60]!r}); print one field of it")


class ReportEnvironment(jinja2.Environment):
    """`a.b` on a dict looks the key up first, so result keys such as `items` or `values` are not
    shadowed by dict methods."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, dict) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)


FILTERS = {"fa": fa, "pct": pct, "typ": lambda v: v if isinstance(v, Raw) else Raw(escape_markup(str(v))),
           "tstr": typst_string, "num": code_number, "sci": sci, "raw": Raw, "eq": assignment, "pm": plus_minus,
           "percent": percent, "mathnum": derivation_number, "fixed": fixed}


def make_environment(templates_dir: Path, cache_dir: Path | None = None) -> ReportEnvironment:
    """With `cache_dir`, compiled templates are kept between runs (compiling costs ~0.5 s), in a folder keyed by
    this module's source, which decides how they compile (Jinja checks each template's source checksum)."""
    cache = None
    if cache_dir is not None:
        import hashlib

        folder = Path(cache_dir) / f"jinja-{hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]}"
        folder.mkdir(parents=True, exist_ok=True)
        cache = jinja2.FileSystemBytecodeCache(str(folder))
    env = ReportEnvironment(loader=jinja2.FileSystemLoader(str(templates_dir)), bytecode_cache=cache,
                            undefined=jinja2.StrictUndefined, autoescape=True, finalize=finalize, trim_blocks=True,
                            lstrip_blocks=True, keep_trailing_newline=True, **DELIMITERS)
    env.filters.update(FILTERS)
    return env
