"""How many questions the subset keeps, and its train/test split by image.

The assignment asks for at least 1% of CLEVR. A share of *rows* (images) or a per-image coin flip only lands
near 1% of the *questions* — the official folder's per-image hash kept Binomial(70,000, 0.01) images, under 1%
about half the time. So the stages count kept questions (after duplicates, unknown types and unreadable
images are dropped) and stop at `ceil(fraction × source questions) × (1 + margin)`.
"""
from __future__ import annotations

import math
import random
from collections import Counter
from typing import Optional

# CLEVR v1.0: the train split has 70,000 images and 699,989 questions (https://cs.stanford.edu/people/jcjohns/clevr/).
# The hub copy is streamed, so its question count is not read; the share is stated against this official count.
CLEVR_TRAIN_QUESTIONS = 699_989


def question_target(fraction: float, source_questions: int, margin: float, cap: Optional[int] = None) -> int:
    """Questions to keep: `ceil(ceil(fraction · source) · (1 + margin))`, or `cap` (data.max_questions) when smaller."""
    target = math.ceil(math.ceil(fraction * source_questions) * (1 + margin))
    return min(target, cap) if cap is not None else target


def subset_stats(*, kept: int, source_questions: int, counted: bool, target: int, fraction: float, margin: float,
                 cap: Optional[int]) -> dict:
    """The stats.json block that states what share of the source was kept."""
    return {"fraction": fraction, "margin": margin, "max_questions": cap, "source_questions": source_questions,
            "source_questions_counted": counted, "target_questions": target, "questions": kept,
            "share": round(kept / source_questions, 6) if source_questions else None}


def test_target(n_questions: int, test_fraction: float, max_test: int) -> int:
    """How many test questions to aim for: the fraction of all questions, capped for evaluation time."""
    return min(int(round(n_questions * test_fraction)), max_test)


def planned_counts(d) -> tuple[int, int]:
    """(train, test) questions the data stage will produce with this [data] config `d` (before any skip; the
    official folder's count is taken as `data.source_questions` until its files are read)."""
    total = (d.n_scenes * d.questions_per_scene if d.source == "synthetic"
             else question_target(d.fraction, d.source_questions, d.margin, d.max_questions))
    n_test = test_target(total, d.test_fraction, d.max_test)
    return total - n_test, n_test


def split_by_image(records: list[dict], test_fraction: float, max_test: int, seed: int) -> tuple[list[dict], list[dict]]:
    """All questions about one image land in one split. The images are shuffled (seeded) and moved whole into
    test until the target is reached without overshooting it; record order inside each split is the input's."""
    by_image = Counter(r["image_id"] for r in records)
    images = sorted(by_image)
    random.Random(f"tamrin-split:{seed}").shuffle(images)
    target = test_target(len(records), test_fraction, max_test)
    test_images: set[str] = set()
    n_test = 0
    for image_id in images:
        if n_test >= target:
            break
        if n_test + by_image[image_id] <= target:
            test_images.add(image_id)
            n_test += by_image[image_id]
    train = [r for r in records if r["image_id"] not in test_images]
    test = [r for r in records if r["image_id"] in test_images]
    return train, test
