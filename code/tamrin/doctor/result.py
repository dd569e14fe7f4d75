"""One check's outcome and the table they are printed in (pure)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

OK, WARN, FAIL, SKIP = "ok", "warn", "FAIL", "skip"


@dataclass
class Check:
    name: str
    status: str  # OK | WARN | FAIL | SKIP
    result: str  # what was found, one line
    fix: str = ""  # what to do (empty when nothing)
    details: list[str] = field(default_factory=list)  # extra lines printed under the table (samples, rows)


@dataclass
class Facts:
    """What earlier checks learned, for the later ones."""
    profile: str
    gpu: bool = False
    device_name: str = "cpu"
    hub_reachable: Optional[bool] = None
    hub_reason: str = ""
    model_access: Optional[bool] = None
    examples: list[dict] = field(default_factory=list)  # {image (PNG bytes), question, answer, qtype}
    data_seconds_per_row: Optional[float] = None
    questions_per_row: Optional[float] = None
    source: Any = None  # where the model loads from (hub id, folder, or the tiny base built here)
    processor: Any = None
    work_dir: Any = None
    estimate: Any = None


def render(checks: list[Check], width: int = 120) -> str:
    """A three-column table: check, result, what to do; then each check's detail lines."""
    name_w = max(len("check"), *(len(c.name) for c in checks))
    rows = [f"{'check':<{name_w}}  {'status':<6}  result — what to do", "-" * min(width, name_w + 40)]
    for c in checks:
        text = c.result + (f" — {c.fix}" if c.fix else "")
        rows.append(f"{c.name:<{name_w}}  {c.status:<6}  {text}")
    for c in checks:
        if c.details:
            rows.append("")
            rows.append(f"{c.name}:")
            rows.extend(f"  {line}" for line in c.details)
    return "\n".join(rows)


def can_start(checks: list[Check]) -> bool:
    return not any(c.status == FAIL for c in checks)
