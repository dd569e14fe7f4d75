"""The derivation record every check produces, and the exact-zero test for sympy residuals."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import sympy as sp


@dataclass
class Derivation:
    """One checked claim: its statement and steps as Typst math, the residual of its check, and the verdict."""

    name: str  # stable id, e.g. "thm3_conditional_field"
    title: str  # one English line
    part: str  # assignment part it answers: "2.1" (FM = CFM gradients) or "2.2" (u_t of Theorem 3)
    statement_typst: str
    steps_typst: list[str]
    step_notes: list[str]  # one English justification per step (same length as steps_typst)
    residual: float  # what the check measured: 0 for an exact symbolic identity, else the numeric discrepancy
    tolerance: float  # passed ⇔ residual <= tolerance (0 for symbolic identities)
    passed: bool
    method: str  # how it was checked
    assumptions: list[dict[str, Any]] = field(default_factory=list)  # {typst, text, enters_at_step}
    numeric: dict[str, Any] | None = None  # numbers behind a numeric check

    def __post_init__(self) -> None:
        if len(self.steps_typst) != len(self.step_notes):
            raise ValueError(f"{self.name}: {len(self.steps_typst)} steps but {len(self.step_notes)} notes")

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


def symbolic(name: str, title: str, part: str, statement: str, steps: list[tuple[str, str]],
             residual_exprs: list[sp.Expr], method: str, **extra: Any) -> Derivation:
    """A derivation whose check is that every expression of `residual_exprs` is identically zero."""
    residual = max(symbolic_residual(e) for e in residual_exprs)
    return Derivation(name=name, title=title, part=part, statement_typst=statement,
                      steps_typst=[s for s, _ in steps], step_notes=[n for _, n in steps],
                      residual=residual, tolerance=0.0, passed=residual == 0.0, method=method, **extra)
