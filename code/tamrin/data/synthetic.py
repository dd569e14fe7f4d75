"""The synthetic source: CLEVR-like scenes rendered locally, each with template questions of rotating types.

Scene i of seed s is drawn from its own `random.Random` (seeded from s and i), so a scene does not depend on how
many scenes come before it and a build is reproducible scene by scene. Question types rotate across scenes so
that all 8 types appear equally often.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Iterator

from .questions import Question, SceneQuestions
from .render import png_bytes, render
from .scene import Scene, sample_scene
from ..contract.facts import QTYPES


@dataclass
class SyntheticScene:
    image_id: str
    scene: Scene
    png: bytes
    questions: list[Question]


def scene_rng(seed: int, index: int) -> random.Random:
    return random.Random(f"tamrin-synthetic:{seed}:{index}")


def scene_questions(scene: Scene, rng: random.Random, n: int, start: int) -> list[Question]:
    """n distinct questions; types rotate from QTYPES[start]; a type that fails in this scene is replaced by the next."""
    gen = SceneQuestions(scene, rng)
    out: list[Question] = []
    seen: set[str] = set()
    k = start
    attempts = 0
    while len(out) < n and attempts < n * 4:
        q = gen.ask(QTYPES[k % len(QTYPES)], avoid=seen)
        k += 1
        attempts += 1
        if q is not None:
            out.append(q)
            seen.add(q.question)
    return out


def make_scene(seed: int, index: int, *, image_size: int, questions_per_scene: int, min_objects: int,
               max_objects: int) -> SyntheticScene:
    rng = scene_rng(seed, index)
    scene = sample_scene(rng, index, min_objects, max_objects)
    questions = scene_questions(scene, rng, questions_per_scene, start=index * questions_per_scene)
    return SyntheticScene(image_id=f"synth_s{seed}_{index:06d}", scene=scene,
                          png=png_bytes(render(scene, image_size)), questions=questions)


def generate(seed: int, n_scenes: int, **kwargs) -> Iterator[SyntheticScene]:
    for i in range(n_scenes):
        yield make_scene(seed, i, **kwargs)
