"""[zip] section: the submission zip and the Colab/Kaggle notebook that goes into it."""
from __future__ import annotations

import dataclasses
import string
from dataclasses import dataclass

from ..errors import ConfigError
from ..schema import field_
from ..student import StudentConfig


@dataclass
class ZipConfig:
    name_pattern: str = field_("HW1_{last_name_en}_{student_number}.zip",
                               "zip name; {…} are student.* keys (the assignment's wording says HW1)")
    include_adapter: bool = field_(False, "also pack the LoRA adapter (results/finetune/adapter/)")
    max_mb: float = field_(50.0, "refuse a zip larger than this many MB (10^6 bytes)", min=0.1)
    notebook_repo_url: str = field_("", "git URL the notebook clones Tamrin from; empty = the notebook asks "
                                        "for an upload of the code (e.g. this zip)")
    notebook_batch_size: int = field_(4, "train.batch_size the notebook passes on a 16 GB T4", min=1)
    notebook_grad_accum: int = field_(4, "train.grad_accum the notebook passes on a T4", min=1)
    notebook_max_minutes: float = field_(150.0, "train.max_minutes the notebook passes (Colab/Kaggle GPU "
                                                "session limits)", min=1.0)

    def pattern_keys(self) -> list[str]:
        """The `student.*` keys named by `{…}` in name_pattern."""
        return [f for _, f, _, _ in string.Formatter().parse(self.name_pattern) if f]

    def validate(self) -> None:
        allowed = [f.name for f in dataclasses.fields(StudentConfig)]
        try:
            keys = self.pattern_keys()
        except ValueError as e:
            raise ConfigError(f"bad value for 'zip.name_pattern': {self.name_pattern!r} ({e}); "
                              "write e.g. HW1_{last_name_en}_{student_number}.zip") from None
        unknown = [k for k in keys if k not in allowed]
        if unknown:
            raise ConfigError(f"bad value for 'zip.name_pattern': {{{unknown[0]}}} is not a student key; "
                              f"allowed: {', '.join(allowed)}")
