"""Train/test split by image: all questions about one image land in the same split."""
from __future__ import annotations

import random
from collections import defaultdict


def test_target(n_questions: int, test_fraction: float, max_test: int) -> int:
    """How many test questions to aim for: the fraction of all questions, capped for evaluation time."""
    return min(int(round(n_questions * test_fraction)), max_test)


def split_by_image(records: list[dict], test_fraction: float, max_test: int, seed: int) -> tuple[list[dict], list[dict]]:
    """Shuffle the images (seeded) and move whole images into test until the target is reached without
    overshooting it; the rest is train. Record order inside each split follows the input order."""
    by_image: dict[str, int] = defaultdict(int)
    for r in records:
        by_image[r["image_id"]] += 1
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
