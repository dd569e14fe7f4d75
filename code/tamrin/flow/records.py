"""The derivation record every check produces, and the exact-zero test for sympy residuals.

Each record carries its words twice: English (`title`, `step_notes`, `method`, assumption `text`) and academic
Persian for the report (`title_fa`, `step_notes_fa`, `method_fa`, assumption `text_fa`). The Persian fields are
Typst *markup*: Persian prose with every formula, symbol and Greek letter inside inline math `$…$` (the report's
text font, Vazirmatn, has no Greek), technical terms followed by their English name in parentheses at first
use, and numbers of the prose in Persian digits (`fa_digits`); numbers inside math stay Latin, like all math.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import sympy as sp


@dataclass
class Derivation:
    """One checked claim: its statement and steps as Typst math, the residual of its check, and the verdict."""

    name: str  # stable id, e.g. "thm3_conditional_field"
    title: str  # one English line
    title_fa: str  # the same in Persian (Typst markup)
    part: str  # assignment part it answers: "2.1" (FM = CFM gradients) or "2.2" (u_t of Theorem 3)
    statement_typst: str
    steps_typst: list[str]
    step_notes: list[str]  # one English justification per step (same length as steps_typst)
    step_notes_fa: list[str]  # the same in Persian (Typst markup), one per step
    residual: float  # what the check measured: 0 for an exact symbolic identity, else the numeric discrepancy
    tolerance: float  # passed ⇔ residual <= tolerance (0 for symbolic identities)
    passed: bool
    method: str  # how it was checked
    method_fa: str  # the same in Persian (Typst markup)
    assumptions: list[dict[str, Any]] = field(default_factory=list)  # {typst, text, text_fa, enters_at_step}
    numeric: dict[str, Any] | None = None  # numbers behind a numeric check

    def __post_init__(self) -> None:
        for notes in (self.step_notes, self.step_notes_fa):
            if len(self.steps_typst) != len(notes):
                raise ValueError(f"{self.name}: {len(self.steps_typst)} steps but {len(notes)} notes")
        for a in self.assumptions:
            if not {"typst", "text", "text_fa", "enters_at_step"} <= a.keys():
                raise ValueError(f"{self.name}: assumption {a.get('typst')!r} lacks typst/text/text_fa/enters_at_step")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def symbolic_residual(expr: sp.Expr) -> float:
    """0.0 when `expr` simplifies to exactly zero, else 1.0 (a symbolic identity either holds or it does not).

    `cancel(together(...))` is tried first (exact for rational functions of the atoms), then
    `cancel(expand(...))`, and `simplify` last (only for small expressions: on a false identity it can take
    very long).
    """
    reducers = [lambda e: sp.cancel(sp.together(e)), lambda e: sp.cancel(sp.expand(e))]
    if sp.count_ops(expr) < 400:
        reducers.append(sp.simplify)
    for reduce in reducers:
        if reduce(expr) == 0:
            return 0.0
    return 1.0


def fa_digits(value: Any) -> str:
    """Latin digits of `value` (a number or a string) as Persian digits, for numbers in Persian prose."""
    return str(value).translate(_PERSIAN_DIGITS)


def fa_int(n: int) -> str:
    """An integer in Persian digits with the Persian thousands separator: 10000 → ۱۰٬۰۰۰."""
    return fa_digits(f"{n:,}").replace(",", "٬")


_PERSIAN_DIGITS = str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹")


@dataclass(frozen=True)
class Step:
    """One step of a derivation: the Typst math, its English justification and the Persian one (markup)."""

    typst: str
    note: str
    note_fa: str


def step_lists(steps: list[Step]) -> dict[str, list[str]]:
    return {"steps_typst": [s.typst for s in steps], "step_notes": [s.note for s in steps],
            "step_notes_fa": [s.note_fa for s in steps]}


def symbolic(name: str, title: tuple[str, str], part: str, statement: str, steps: list[Step],
             residual_exprs: list[sp.Expr], method: tuple[str, str], **extra: Any) -> Derivation:
    """A derivation whose check is that every expression of `residual_exprs` is identically zero.
    `title` and `method` are (English, Persian) pairs."""
    residual = max(symbolic_residual(e) for e in residual_exprs)
    return Derivation(name=name, title=title[0], title_fa=title[1], part=part, statement_typst=statement,
                      **step_lists(steps), residual=residual, tolerance=0.0, passed=residual == 0.0,
                      method=method[0], method_fa=method[1], **extra)
