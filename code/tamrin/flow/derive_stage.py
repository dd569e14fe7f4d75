"""Stage `derive`: question 2, parts 1–2 — the sympy-checked derivations and their numeric checks
→ results/derive/derivations.json.

Cheap (seconds) and separate from the `flow` experiment, so editing a proof's wording (in the templates) or its
check never retrains a flow run. The file is a JSON list, in report order, of `derivations.Derivation` records
(numbers and Typst math only; the typed model is the results contract). A record that fails its check, or whose
Typst math does not compile, fails the stage with one line naming it.
"""
from __future__ import annotations

import logging
from typing import Any

from .. import contract
from ..errors import TamrinError
from . import numeric_checks
from .derivations import Derivation, theorem2, theorem3
from .typst_math import compile_check


def build(numeric_samples: int, log: logging.Logger) -> list[Derivation]:
    """Part 2.1 (symbolic + Monte Carlo), then part 2.2 (symbolic + ODE)."""
    records: list[Derivation] = []
    for label, make in (("Theorem 2 (sympy)", theorem2),
                        ("Theorem 2 (Monte Carlo)", lambda: [numeric_checks.check_gradients(numeric_samples)]),
                        ("Theorem 3 (sympy)", theorem3),
                        ("Theorem 3 (ODE)", lambda: [numeric_checks.check_paths(max(1000, numeric_samples // 5))])):
        made = make()
        log.info(f"{label}: " + ", ".join(f"{r.name} {'passed' if r.passed else 'FAILED'}" for r in made))
        records += made
    return records


def check_derivations(records: list[Any]) -> None:
    """Raise TamrinError naming every derivation that failed its check or whose Typst math does not compile."""
    import typst

    failed = [r for r in records if not r.passed]
    if failed:
        names = "; ".join(f"{r.name} (residual {r.residual:g} > tolerance {r.tolerance:g}, {r.check})" for r in failed)
        raise TamrinError(f"derive: derivation check failed: {names} — the derivation or its check is wrong; "
                          "fix code/tamrin/flow before building the report")
    bad_typst = {}
    for r in records:
        try:
            compile_check([r.statement_typst, *r.steps_typst, *[a["typst"] for a in r.assumptions]])
        except typst.TypstError as e:
            bad_typst[r.name] = str(e).splitlines()[0] if str(e) else type(e).__name__
    if bad_typst:
        names = "; ".join(f"{n}: {msg}" for n, msg in bad_typst.items())
        raise TamrinError(f"derive: Typst math of a derivation does not compile: {names} — fix the printer or step")


def run(ctx: Any) -> None:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the numeric checks' small float64 MLP runs fastest on one thread
    try:
        records = build(ctx.section("derive").numeric_samples, ctx.log)
    finally:
        torch.set_num_threads(threads)
    check_derivations(records)
    contract.write(ctx.out_dir, "derive/derivations.json", [r.to_json() for r in records])
    ctx.log.info(f"derivations: {len(records)} passed")
    ctx.extra["derivations_passed"] = len(records)
