"""The derivation record every check produces, and the exact-zero test for sympy residuals.

A record holds numbers and math only: the claim and its steps as Typst math, the residual of its check and the
verdict, the assumptions as Typst math with the step each enters at, and the numbers behind a numeric check.
The words of each record — its title, one justification per step, how it was checked, what each assumption
means — are Persian prose in the report's templates (templates/results/derivations_fa.toml), keyed by `name`;
the English `note` of each `Step` below stays in the code as the reason for that step.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import sympy as sp

CHECKS = ("sympy", "monte_carlo", "ode")


@dataclass
class Derivation:
    """One checked claim: its statement and steps as Typst math, the residual of its check, and the verdict."""

    name: str  # stable id, e.g. "thm3_conditional_field"; the templates' words are keyed by it
    part: str  # assignment part it answers: "2.1" (FM = CFM gradients) or "2.2" (u_t of Theorem 3)
    check: str  # how it was checked: one of CHECKS
    statement_typst: str
    steps_typst: list[str]
    residual: float  # what the check measured: 0 for an exact symbolic identity, else the numeric discrepancy
    tolerance: float  # passed ⇔ residual <= tolerance (0 for symbolic identities)
    passed: bool
    assumptions: list[dict[str, Any]] = field(default_factory=list)  # {typst, enters_at_step}
    numeric: dict[str, Any] | None = None  # numbers behind a numeric check
    params: dict[str, Any] = field(default_factory=dict)  # settings of a symbolic check the prose quotes

    def __post_init__(self) -> None:
        if self.check not in CHECKS:
            raise ValueError(f"{self.name}: check {self.check!r} is not one of {CHECKS}")
        for a in self.assumptions:
            if set(a) != {"typst", "enters_at_step"} or not 1 <= a["enters_at_step"] <= len(self.steps_typst):
                raise ValueError(f"{self.name}: assumption {a!r} needs typst and a step index 1..{len(self.steps_typst)}")

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


@dataclass(frozen=True)
class Step:
    """One step of a derivation: the Typst math and, for the reader of the code, why it holds (English)."""

    typst: str
    note: str


def symbolic(name: str, part: str, statement: str, steps: list[Step], residual_exprs: list[sp.Expr],
             **extra: Any) -> Derivation:
    """A derivation whose check is that every expression of `residual_exprs` is identically zero."""
    residual = max(symbolic_residual(e) for e in residual_exprs)
    return Derivation(name=name, part=part, check="sympy", statement_typst=statement,
                      steps_typst=[s.typst for s in steps], residual=residual, tolerance=0.0,
                      passed=residual == 0.0, **extra)
