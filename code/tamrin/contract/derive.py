"""The derive stage's results file: results/derive/derivations.json."""
from __future__ import annotations

from typing import Any, Literal, Optional

from . import Strict


class Assumption(Strict):
    typst: str
    enters_at_step: int


class Derivation(Strict):
    """One record of results/derive/derivations.json (a JSON list, in report order)."""

    name: str
    part: Literal["2.1", "2.2"]
    check: Literal["sympy", "monte_carlo", "ode"]
    statement_typst: str
    steps_typst: list[str]
    residual: float
    tolerance: float
    passed: bool
    assumptions: list[Assumption]
    numeric: Optional[dict[str, Any]]
    params: dict[str, Any]


FILES = {"derive/derivations.json": list[Derivation]}
