"""[data] section: where the CLEVR questions come from and how they are split."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..schema import field_


@dataclass
class DataConfig:
    source: str = field_("hub", "where questions come from", choices=("hub", "clevr_dir", "synthetic"))
    seed: int = field_(0, "seed for subset selection, generation and the train/test split")
    # hub
    hub_id: str = field_("HuggingFaceM4/the_cauldron", "dataset id on the Hugging Face hub")
    hub_config: str = field_("clevr", "dataset config (subset) name on the hub")
    hub_split: str = field_("train", "split streamed from the hub")
    image_column: str = field_("images", "column holding the image (or a list of images)")
    texts_column: str = field_("texts", "column holding the list of {user, assistant} QA pairs")
    fraction: float = field_(0.01, "fraction of the source's questions to keep (the assignment asks ≥ 1%)", min=0.0, max=1.0)
    max_questions: Optional[int] = field_(None, "cap on the number of questions (overrides fraction when smaller)", min=1)
    # clevr_dir
    path: str = field_("", "path to the official CLEVR_v1.0 folder (source = clevr_dir)")
    # synthetic
    n_scenes: int = field_(400, "synthetic scenes to generate (source = synthetic)", min=1)
    questions_per_scene: int = field_(5, "synthetic questions per scene", min=1)
    image_size: int = field_(224, "side of the saved PNG images in pixels", min=32, max=1024)
    # split
    test_fraction: float = field_(0.1, "share of questions (split by image) held out for test", min=0.0, max=0.9)
    max_test: int = field_(500, "cap on test questions, to bound evaluation time", min=1)
