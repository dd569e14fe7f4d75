"""The Persian words of the flow derivations, kept in the templates and keyed by record name.

`templates/results/derivations_fa.toml` has one table per record of results/derive/derivations.json: `title`,
`steps` (one note per step of `steps_typst`), `method`, and `assumptions` (one text per assumption). Each string
is Typst markup and a Jinja template rendered with `d` = the record, so a note that quotes a number takes it from
the record. Editing these words re-renders the report only; no compute stage hashes them.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

from ..contract.persian import typst_number
from .lint import Finding, lint_template_source
from .typst_text import Raw

TEXT_FILE = "results/derivations_fa.toml"

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


def load(templates_dir: Path) -> dict[str, dict[str, Any]]:
    with open(Path(templates_dir) / TEXT_FILE, "rb") as f:
        return tomllib.load(f)


def drift(texts: dict[str, dict[str, Any]], records: list[dict[str, Any]]) -> list[Finding]:
    """A finding for every record without words, words without a record, and a count of notes that differs."""
    where = f"templates/{TEXT_FILE}"
    out = []
    names = {r["name"] for r in records}
    for name in sorted(set(texts) - names):
        out.append(Finding("derivation-text", where, f"[{name}] has no record in results/derive/derivations.json"))
    for r in records:
        t = texts.get(r["name"])
        if t is None:
            out.append(Finding("derivation-text", where, f"no [{r['name']}] table: the record has no Persian words"))
            continue
        missing = [k for k in ("title", "steps", "method") if k not in t]
        if missing:
            out.append(Finding("derivation-text", where, f"[{r['name']}] lacks {', '.join(missing)}"))
        for key, expected in (("steps", len(r["steps_typst"])), ("assumptions", len(r["assumptions"]))):
            got = len(t.get(key, []))
            if got != expected:
                out.append(Finding("derivation-text", where,
                                   f"[{r['name']}] has {got} {key} but the record has {expected}"))
    return out


def lint(texts: dict[str, dict[str, Any]]) -> list[Finding]:
    """The template lint (typed numbers, TODO) over every string."""
    out = []
    for name, t in texts.items():
        for key, value in t.items():
            for i, s in enumerate(value if isinstance(value, list) else [value]):
                out += lint_template_source(f"templates/{TEXT_FILE} [{name}].{key}[{i}]", s)
    return out


def math_number(value: float | int) -> Raw:
    """A number as Typst math (Latin digits): 0.05, 500, `4.2 dot 10^(-4)` for small or large magnitudes."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"mathnum needs a number, got {value!r}")
    if isinstance(value, int) or float(value).is_integer() and abs(value) < 1e6:
        return Raw(str(int(value)))
    return Raw(typst_number(value))


def fixed(value: float, decimals: int) -> Raw:
    """`decimals` places as Typst math (Latin digits; a minus sign is math's)."""
    if not math.isfinite(value):
        raise ValueError(f"fixed() of a non-finite number {value!r}")
    return Raw(f"{value:.{decimals}f}")


SEPARATOR = "\u241e"  # ␞: never in the prose; one template per record instead of one per string (faster)


def render(env: Any, texts: dict[str, dict[str, Any]], records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """name → {title, steps, method, assumptions} as trusted Typst markup, each string rendered with d = record."""
    sub = env.overlay()
    sub.filters = {**env.filters, "mathnum": math_number, "fixed": fixed}
    out = {}
    for r in records:
        t = texts[r["name"]]
        strings = [t["title"], t["method"], *t["steps"], *t.get("assumptions", [])]
        parts = [Raw(x) for x in str(sub.from_string(SEPARATOR.join(strings)).render(d=r)).split(SEPARATOR)]
        n = len(t["steps"])
        out[r["name"]] = {"title": parts[0], "method": parts[1], "steps": parts[2:2 + n], "assumptions": parts[2 + n:]}
    return out
