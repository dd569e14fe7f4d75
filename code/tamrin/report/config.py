"""[report] section."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..schema import field_


@dataclass
class ReportConfig:
    title_fa: str = field_("مدل زبانی–بصری PaliGemma و تطبیق جریان (Flow Matching)",
                           "assignment title on the cover page (under «تمرین شمارهٔ …»)")
    date_fa: Optional[str] = field_(None, "date on the cover; empty = the Jalali date the latest result was produced")
    smooth_window: int = field_(20, "moving-average window of the smoothed loss curve (capped at a fifth of the steps)",
                                min=1)
    n_example_images: int = field_(6, "example dataset images shown in the dataset section", min=1, max=12)
    bib_style: str = field_("ieee", "Typst/CSL bibliography style", choices=("ieee", "apa", "chicago-author-date",
                                                                           "american-physics-society"))
