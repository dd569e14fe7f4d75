"""The official CLEVR v1.0 folder: `questions/CLEVR_<split>_questions.json` + `images/<split>/CLEVR_<split>_*.png`.

The train questions file is ~0.5 GB of JSON; loading it whole would take several GB of memory, so questions are
read one object at a time (`iter_questions`). The subset is chosen per image by a seeded hash (deterministic,
one pass): an image is kept when its hash falls below `fraction`; with `max_questions` the stage keeps the
images with the smallest hashes until that many questions (from readable images) are in.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ..errors import TamrinError
from .qtype import classify
from ..contract.facts import ANSWERS, normalize_answer

_CHUNK = 1 << 20


@dataclass
class ClevrImage:
    image_id: str
    path: Path
    qas: list[dict[str, Any]] = field(default_factory=list)  # {question, answer, qtype}
    rank: float = 0.0


def iter_questions(path: Path) -> Iterator[dict]:
    """Yield the objects of the top-level `"questions": [...]` array without loading the whole file."""
    decoder = json.JSONDecoder()
    with open(path, encoding="utf-8") as f:
        buf = ""
        # Find the start of the questions array.
        while True:
            chunk = f.read(_CHUNK)
            if not chunk:
                raise TamrinError(f"{path} has no \"questions\" array: is it a CLEVR v1.0 questions file?")
            buf += chunk
            key = buf.find('"questions"')
            if key >= 0:
                bracket = buf.find("[", key)
                if bracket >= 0:
                    buf = buf[bracket + 1:]
                    break
        eof = False
        while True:
            buf = buf.lstrip(" \t\r\n,")
            if buf.startswith("]"):
                return
            try:
                obj, end = decoder.raw_decode(buf)
            except json.JSONDecodeError:
                if eof:
                    raise TamrinError(f"{path} is truncated or not valid JSON") from None
                chunk = f.read(_CHUNK)
                eof = not chunk
                buf += chunk
                continue
            yield obj
            buf = buf[end:]


def image_rank(seed: int, image_id: str) -> float:
    """A seeded, uniform-looking number in [0, 1) per image: the subset is the images below `fraction`."""
    h = hashlib.sha256(f"tamrin-clevr:{seed}:{image_id}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2 ** 64


@dataclass
class ClevrSelection:
    images: list[ClevrImage]
    questions_read: int
    off_vocabulary: int


def select(root: Path, splits: list[str], fraction: float, seed: int, progress: Any = None) -> ClevrSelection:
    """Read the questions of `splits`, keep a seeded per-image subset (in hash order), classify each question
    by its program."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise TamrinError(f"data.path {str(root)!r} is not a folder: point it at the official CLEVR_v1.0 folder "
                          "(the one holding questions/ and images/)")
    images: dict[str, ClevrImage] = {}
    read = off_vocab = 0
    for split in splits:
        qfile = root / "questions" / f"CLEVR_{split}_questions.json"
        if not qfile.is_file():
            found = sorted(p.name for p in (root / "questions").glob("*.json")) if (root / "questions").is_dir() else []
            raise TamrinError(f"missing {qfile}: data.path must be the CLEVR_v1.0 folder "
                              f"(questions files found: {', '.join(found) or 'none'})")
        for q in iter_questions(qfile):
            read += 1
            if progress is not None:
                progress.update(1)
            filename = q.get("image_filename") or f"CLEVR_{split}_{int(q['image_index']):06d}.png"
            image_id = Path(filename).stem
            rank = image_rank(seed, image_id)
            if rank >= fraction:
                continue
            answer = normalize_answer(str(q.get("answer", "")))
            if answer not in ANSWERS:
                off_vocab += 1  # the official test split has no answers: it never gets here with one
                continue
            qtype = classify(q["question"], answer, q.get("program"))
            img = images.get(image_id)
            if img is None:
                img = images[image_id] = ClevrImage(image_id, root / "images" / split / filename, rank=rank)
            img.qas.append({"question": q["question"].strip(), "answer": answer, "qtype": qtype})
    # Smallest hash first: with data.max_questions the stage keeps a prefix of this order.
    return ClevrSelection(sorted(images.values(), key=lambda im: im.rank), read, off_vocab)
