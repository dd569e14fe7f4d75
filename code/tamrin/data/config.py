"""[data] section: where the CLEVR questions come from and how they are split."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..errors import ConfigError
from ..schema import field_
from .subset import CLEVR_TRAIN_QUESTIONS


@dataclass
class DataConfig:
    source: str = field_("hub", "where questions come from", choices=("hub", "clevr_dir", "synthetic"))
    seed: int = field_(0, "seed for subset selection, generation and the train/test split")
    # hub
    hub_id: str = field_("HuggingFaceM4/the_cauldron", "dataset id on the Hugging Face hub")
    hub_config: str = field_("clevr", "dataset config (subset) name on the hub")
    hub_split: str = field_("train", "split streamed from the hub")
    hub_layout: str = field_("texts", "row layout: 'texts' = a list of {user, assistant} turns per image "
                             "(the_cauldron); 'flat' = one question/answer per row", choices=("texts", "flat"))
    image_column: str = field_("images", "column holding the image (or a list of images)")
    texts_column: str = field_("texts", "column holding the list of {user, assistant} QA pairs (layout 'texts')")
    user_key: str = field_("user", "key of the question turn inside each texts item (layout 'texts')")
    assistant_key: str = field_("assistant", "key of the answer turn inside each texts item (layout 'texts')")
    question_column: str = field_("question", "column holding the question (layout 'flat')")
    answer_column: str = field_("answer", "column holding the answer (layout 'flat')")
    program_column: str = field_("", "column holding a CLEVR program, if the copy has one (layout 'flat')")
    shuffle_buffer: int = field_(1000, "rows held in memory to shuffle the hub stream (with shard-order shuffling)",
                                 min=1)
    fraction: float = field_(0.01, "fraction of the source's questions to keep (the assignment asks ≥ 1%)", min=0.0, max=1.0)
    margin: float = field_(0.02, "questions kept above the fraction, as a share of it (so ≥ 1% holds with room)",
                           min=0.0, max=1.0)
    source_questions: int = field_(CLEVR_TRAIN_QUESTIONS, "questions in the source split the fraction is a share "
                                   "of (source = hub; the official CLEVR v1.0 train split has 699,989; source = "
                                   "clevr_dir counts its own files)", min=1)
    max_questions: Optional[int] = field_(None, "cap on the number of questions (overrides fraction when smaller)", min=1)
    # clevr_dir
    path: str = field_("", "path to the official CLEVR_v1.0 folder (source = clevr_dir)")
    clevr_splits: list[str] = field_(["train"], "official question files to draw from (source = clevr_dir); "
                                     "the fraction applies to their questions", choices=("train", "val"))
    # synthetic
    n_scenes: int = field_(400, "synthetic scenes to generate (source = synthetic)", min=1)
    questions_per_scene: int = field_(5, "synthetic questions per scene", min=1, max=20)
    image_size: int = field_(224, "side of the synthetic PNG images in pixels (other sources keep their images)",
                             min=32, max=1024)
    min_objects: int = field_(3, "fewest objects in a synthetic scene", min=1, max=10)
    max_objects: int = field_(10, "most objects in a synthetic scene", min=1, max=10)
    # split
    test_fraction: float = field_(0.1, "share of questions (split by image) held out for test", min=0.0, max=0.9)
    max_test: int = field_(500, "cap on test questions, to bound evaluation time", min=1)

    def validate(self) -> None:
        if self.min_objects > self.max_objects:
            raise ConfigError(f"data.min_objects ({self.min_objects}) is above data.max_objects ({self.max_objects})")
        if self.source == "clevr_dir" and not self.path:
            raise ConfigError("data.source = 'clevr_dir' needs data.path: the official CLEVR_v1.0 folder "
                              "(e.g. --set data.path=/data/CLEVR_v1.0)")
        if self.source in ("hub", "clevr_dir") and self.fraction <= 0:
            raise ConfigError("data.fraction is 0, which keeps nothing: set it above 0 (the assignment asks ≥ 0.01; "
                              "data.max_questions caps the count further)")
