"""All derivation records of question 2, in report order, each Typst-compiled before it is accepted."""
from __future__ import annotations

import logging

from . import numeric_checks, theorem2, theorem3
from .records import Derivation
from .typst_math import compile_check, compile_markup_check


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


def persian_markup(r: Derivation) -> list[str]:
    """The Persian fields of a record (Typst markup): title, step notes, method and assumption texts."""
    return [r.title_fa, *r.step_notes_fa, r.method_fa, *[a["text_fa"] for a in r.assumptions]]


def typst_errors(records: list[Derivation]) -> dict[str, str]:
    """name -> compiler message for every record whose Typst math or Persian markup does not compile (empty
    when all do)."""
    import typst

    errors = {}
    for r in records:
        snippets = [r.statement_typst, *r.steps_typst, *[a["typst"] for a in r.assumptions]]
        try:
            compile_check(snippets)
            compile_markup_check(persian_markup(r))
        except typst.TypstError as e:
            errors[r.name] = str(e).splitlines()[0] if str(e) else type(e).__name__
    return errors
