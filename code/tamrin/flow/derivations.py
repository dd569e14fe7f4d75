"""All derivation records of question 2, in report order, and the check that their Typst math compiles."""
from __future__ import annotations

import logging

from . import numeric_checks, theorem2, theorem3
from .records import Derivation
from .typst_math import compile_check


def build(numeric_samples: int, log: logging.Logger | None = None) -> list[Derivation]:
    """Part 2.1 (symbolic + Monte Carlo), then part 2.2 (symbolic + ODE)."""
    steps = [
        ("Theorem 2 (sympy)", lambda: theorem2.derive()),
        ("Theorem 2 (Monte Carlo)", lambda: [numeric_checks.check_gradients(numeric_samples)]),
        ("Theorem 3 (sympy)", lambda: theorem3.derive()),
        ("Theorem 3 (ODE)", lambda: [numeric_checks.check_paths(max(1000, numeric_samples // 5))]),
    ]
    records: list[Derivation] = []
    for label, make in steps:
        made = make()
        if log is not None:
            log.info(f"{label}: " + ", ".join(f"{r.name} {'passed' if r.passed else 'FAILED'}" for r in made))
        records.extend(made)
    return records


def typst_errors(records: list[Derivation]) -> dict[str, str]:
    """name -> compiler message for every record whose Typst math does not compile (empty when all do)."""
    import typst

    errors = {}
    for r in records:
        try:
            compile_check([r.statement_typst, *r.steps_typst, *[a["typst"] for a in r.assumptions]])
        except typst.TypstError as e:
            errors[r.name] = str(e).splitlines()[0] if str(e) else type(e).__name__
    return errors
