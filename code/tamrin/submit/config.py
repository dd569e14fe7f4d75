"""[zip] section."""
from __future__ import annotations

from dataclasses import dataclass

from ..schema import field_


@dataclass
class ZipConfig:
    name_pattern: str = field_("HW1_{last_name_en}_{student_number}.zip",
                               "zip name; {…} are student.* keys (the assignment's wording says HW1)")
    include_adapter: bool = field_(False, "also pack the LoRA adapter")
    max_mb: float = field_(50.0, "refuse a zip larger than this many MB", min=0.1)
