"""[report] section."""
from __future__ import annotations

from dataclasses import dataclass

from ..schema import field_


@dataclass
class ReportConfig:
    title_fa: str = field_("پاسخ تمرین شمارهٔ ۴", "title on the cover page")
    smooth_window: int = field_(20, "moving-average window of the smoothed loss curve", min=1)
    n_example_images: int = field_(6, "example dataset images shown in the dataset section", min=0)
