"""[derive] section: the sympy and numeric checks of the flow-matching derivations (question 2, parts 1–2)."""
from __future__ import annotations

from dataclasses import dataclass

from ..schema import field_


@dataclass
class DeriveConfig:
    numeric_samples: int = field_(20000, "Monte-Carlo samples for the numeric checks of the derivations", min=1000)
