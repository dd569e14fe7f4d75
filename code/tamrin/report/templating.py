"""The Jinja2 environment of the report: delimiters that never collide with Typst, strict undefined
variables, and output escaping for Typst.

Delimiters: `⟦ expr ⟧`, `⟦% stmt %⟧`, `⟦# comment #⟧` — the mathematical white brackets U+27E6/U+27E7
have no meaning in Typst, so template syntax and Typst syntax can never be confused.

Escaping: autoescape is on, but the escaping is Typst's, not HTML's. `finalize` turns every printed value
into an object whose `__html__` returns the Typst-safe text, so markupsafe's `escape` keeps it as is:
- `str` → every Typst-special character backslash-escaped (`typst_text.escape_markup`);
- `Raw` / macro output / included templates → printed unchanged (trusted Typst source);
- `int` → Persian digits; `float` → an error (say how: `fa(x, 2)`, `pct`, `sci`, or `num` in code);
- `None`, `bool` → an error (a template printing them is a bug).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

from ..contract.persian import fa, pct, percent, plus_minus
from .typst_text import Raw, assignment, code_number, escape_markup, sci, typst_string

DELIMITERS = dict(variable_start_string="⟦", variable_end_string="⟧",
                  block_start_string="⟦%", block_end_string="%⟧",
                  comment_start_string="⟦#", comment_end_string="#⟧")


class _Escaped:
    """Already-escaped Typst text; markupsafe.escape() calls `__html__` and keeps the result."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __html__(self) -> str:
        return self.text

    def __str__(self) -> str:
        return self.text


class TemplateValueError(jinja2.TemplateError):
    """A value a template tried to print that has no single right rendering."""


@jinja2.pass_eval_context
def finalize(eval_ctx: Any, value: Any) -> Any:
    """Every printed value as Typst-safe text. It takes the evaluation context (unused) because Jinja folds a
    constant output (`⟦ 3 ⟧`, `⟦ "a&b" ⟧`) at compile time, HTML-escaped and past `finalize`, unless finalize
    needs the runtime context (jinja2/compiler.py, CodeGenerator.visit_Output): so every value comes here."""
    if hasattr(value, "__html__"):  # Raw, Markup (macro output), _Escaped
        return value
    if isinstance(value, bool) or value is None:
        raise TemplateValueError(f"template printed {value!r}: branch on it with ⟦% if %⟧ instead of printing it")
    if isinstance(value, int):
        return _Escaped(fa(value))
    if isinstance(value, float):
        raise TemplateValueError(f"template printed the float {value!r} unformatted: use ⟦ x | fa(2) ⟧, "
                                 "⟦ x | pct ⟧, ⟦ x | sci ⟧ (markup) or ⟦ x | num ⟧ (Typst code)")
    if isinstance(value, str):
        return _Escaped(escape_markup(value))
    raise TemplateValueError(f"template printed a {type(value).__name__} ({str(value)[:60]!r}); print one field of it")


class ReportEnvironment(jinja2.Environment):
    """`a.b` on a dict looks the key up first, so result keys such as `items` or `values` are not
    shadowed by dict methods."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, dict) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)


def _typ(value: Any) -> Raw:
    return value if isinstance(value, Raw) else Raw(escape_markup(str(value)))


def _fa(value: Any, decimals: int | None = None, grouping: bool = False) -> str:
    return fa(value, decimals, grouping)


def _raw(value: str) -> Raw:
    return Raw(value)


FILTERS = {"fa": _fa, "pct": pct, "typ": _typ, "tstr": typst_string, "num": code_number, "sci": sci,
           "raw": _raw, "eq": assignment, "pm": plus_minus, "percent": percent}


def bytecode_cache(directory: Path) -> jinja2.BytecodeCache:
    """Compiled templates kept between runs (compiling them costs ~0.5 s). Jinja checks each template's
    source checksum; the folder is keyed by this module's source, which decides how templates compile."""
    import hashlib

    tag = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]
    folder = Path(directory) / f"jinja-{tag}"
    folder.mkdir(parents=True, exist_ok=True)
    return jinja2.FileSystemBytecodeCache(str(folder))


def make_environment(templates_dir: Path, cache_dir: Path | None = None) -> ReportEnvironment:
    env = ReportEnvironment(
        loader=jinja2.FileSystemLoader(str(templates_dir)),
        bytecode_cache=bytecode_cache(cache_dir) if cache_dir is not None else None,
        undefined=jinja2.StrictUndefined,
        autoescape=True,
        finalize=finalize,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        **DELIMITERS,
    )
    env.filters.update(FILTERS)
    return env
