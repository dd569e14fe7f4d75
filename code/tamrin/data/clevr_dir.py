"""The official CLEVR v1.0 folder: `questions/CLEVR_<split>_questions.json` + `images/<split>/CLEVR_<split>_*.png`.

The train questions file is ~0.5 GB of JSON (several GB of memory if loaded whole), so it is streamed (ijson) in
two passes: count the usable questions of every image (the denominator of `data.fraction`), then read the
questions of the images first in a seeded hash order whose counts cover the target plus a reserve for unreadable
images. The stage keeps questions in that order up to the target: an exact number of questions, not a Binomial
number of images.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import TamrinError
from .cleaning import classify
from ..contract.facts import ANSWERS, normalize_answer

# Images selected beyond the target, as a share of it: covers missing or corrupt image files (the official
# folder has none; a damaged copy may).
RESERVE = 0.25


@dataclass
class ClevrImage:
    image_id: str
    path: Path
    qas: list[dict[str, Any]] = field(default_factory=list)  # {question, answer, qtype}


@dataclass
class ClevrSelection:
    images: list[ClevrImage]  # in rank order; the stage keeps their questions until the target is reached
    questions_read: int  # every question of the chosen splits: the denominator of data.fraction
    off_vocabulary: int
    target: int


def iter_questions(path: Path) -> Iterator[dict]:
    """Yield the objects of the top-level `"questions": [...]` array without loading the whole file."""
    import ijson

    n = 0
    try:
        with open(path, "rb") as f:
            for q in ijson.items(f, "questions.item", use_float=True):
                n += 1
                yield q
    except ijson.JSONError as e:
        why = " ".join(str(e).split())
        raise TamrinError(f"{path} is truncated or not valid JSON after {n} questions ({why}): download it again") from None
    if n == 0:
        raise TamrinError(f"{path} has no \"questions\" array (or an empty one): is it a CLEVR v1.0 questions file?")


def image_rank(seed: int, image_id: str) -> float:
    """A seeded, uniform-looking number in [0, 1) per image: the subset takes images in this order."""
    h = hashlib.sha256(f"tamrin-clevr:{seed}:{image_id}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2 ** 64


def image_id_of(q: dict, split: str) -> tuple[str, str]:
    filename = q.get("image_filename") or f"CLEVR_{split}_{int(q['image_index']):06d}.png"
    return Path(filename).stem, filename


def select(root: Path, splits: list[str], seed: int, target_of: Callable[[int], int],
           progress: Any = None) -> ClevrSelection:
    """Count (pass 1), choose the smallest-hash images covering `target_of(questions read)` questions plus a
    reserve, and read their questions, classified by their programs (pass 2)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise TamrinError(f"data.path {str(root)!r} is not a folder: point it at the official CLEVR_v1.0 folder "
                          "(the one holding questions/ and images/)")
    files = [(split, root / "questions" / f"CLEVR_{split}_questions.json") for split in splits]
    for _, qfile in files:
        if not qfile.is_file():
            found = sorted(p.name for p in (root / "questions").glob("*.json")) if (root / "questions").is_dir() else []
            raise TamrinError(f"missing {qfile}: data.path must be the CLEVR_v1.0 folder "
                              f"(questions files found: {', '.join(found) or 'none'})")
    usable: dict[str, int] = {}
    read = off_vocab = 0
    for split, qfile in files:
        for q in iter_questions(qfile):
            read += 1
            if progress is not None:
                progress.update(1)
            if normalize_answer(str(q.get("answer", ""))) in ANSWERS:
                image_id = image_id_of(q, split)[0]
                usable[image_id] = usable.get(image_id, 0) + 1
            else:
                off_vocab += 1  # the official test split has no answers: it never gets here with one
    target = target_of(read)
    wanted: dict[str, ClevrImage | None] = {}  # in rank order
    covered = 0
    for image_id in sorted(usable, key=lambda i: image_rank(seed, i)):
        if covered >= math.ceil(target * (1 + RESERVE)):
            break
        wanted[image_id] = None
        covered += usable[image_id]
    for split, qfile in files:
        for q in iter_questions(qfile):
            image_id, filename = image_id_of(q, split)
            answer = normalize_answer(str(q.get("answer", "")))
            if image_id in wanted and answer in ANSWERS:
                img = wanted[image_id] = wanted[image_id] or ClevrImage(image_id, root / "images" / split / filename)
                img.qas.append({"question": q["question"].strip(), "answer": answer,
                                "qtype": classify(q["question"], answer, q.get("program"))})
    return ClevrSelection([im for im in wanted.values() if im is not None], read, off_vocab, target)
