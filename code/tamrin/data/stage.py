"""The `data` stage: questions from the configured source → results/data/: each image once as
images/<image_id>.png, train.jsonl, test.jsonl and stats.json (their layout: contract/data.py). A corrupt or missing
image is skipped and counted, never fatal; a source that yields no usable question is a one-line error.
"""
from __future__ import annotations

import io
import warnings
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from .. import contract
from ..errors import TamrinError
from ..contract.facts import QTYPES
from .subset import question_target, split_by_image, subset_stats, test_target

MAX_PIXELS = 40_000_000  # a CLEVR image is 480×320; anything far larger is not one


class BadImage(Exception):
    """An image that is missing, truncated or not decodable (the stage skips and counts it)."""


def to_png(data: bytes | None) -> bytes:
    """`data` fully decoded (catching truncation, which `verify()` alone misses): PNG input as is, other formats
    re-encoded as RGB PNG."""
    if not data:
        raise BadImage("no image bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                probe.verify()
            with Image.open(io.BytesIO(data)) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise BadImage(f"implausibly large image ({img.width}×{img.height})")
                img.load()
                if img.format == "PNG":
                    return bytes(data)
                buf = io.BytesIO()
                img.convert("RGB").save(buf, format="PNG", compress_level=3)
                return buf.getvalue()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombWarning,
            Image.DecompressionBombError) as e:
        raise BadImage(f"{type(e).__name__}: {e}") from None


class Collector:
    """Saves each image once and turns its QA pairs into records; counts whatever had to be skipped."""

    def __init__(self, out_dir: Path, log: Any) -> None:
        self.limit: Optional[int] = None  # the subset's question target: counted on questions actually kept
        self.images_dir = out_dir / "images"
        self.images_dir.mkdir(parents=True, exist_ok=True)
        self.log = log
        self.records: list[dict] = []
        self.skipped: Counter = Counter()
        self._questions: dict[str, set[str]] = {}  # image id -> its questions kept (saved images only)

    @property
    def full(self) -> bool:
        return self.limit is not None and len(self.records) >= self.limit

    def add(self, image_id: str, data: Optional[bytes], qas: list[dict], source: str, trusted_png: bool = False) -> None:
        if not qas or self.full:
            return
        if image_id not in self._questions:
            try:
                png = data if trusted_png and data else to_png(data)
            except BadImage as e:
                kind = "missing_image" if data is None else "corrupt_image"
                self.skipped[kind] += 1
                self.skipped["questions_of_skipped_images"] += len(qas)
                if self.skipped[kind] <= 5:  # a few examples in the log, the rest only counted
                    self.log.warning(f"skipped {kind.replace('_', ' ')} {image_id} ({e}); its {len(qas)} questions dropped")
                return
            (self.images_dir / f"{image_id}.png").write_bytes(png)
            self._questions[image_id] = set()
        seen = self._questions[image_id]
        for qa in qas:
            if self.full:
                break
            if qa["qtype"] not in QTYPES:
                self.skipped["unknown_qtype"] += 1
                continue
            if qa["question"] in seen:
                self.skipped["duplicate_question"] += 1
                continue
            seen.add(qa["question"])
            self.records.append({"id": f"{image_id}_q{len(seen) - 1:02d}", "image": f"images/{image_id}.png",
                                 "question": qa["question"], "answer": qa["answer"], "qtype": qa["qtype"],
                                 "image_id": image_id, "source": source})


def _bar(items: Any, desc: str, unit: str, total: Optional[int] = None) -> tqdm:
    return tqdm(items, total=total, desc=desc, unit=unit, mininterval=0.5, dynamic_ncols=True, leave=False)


# A collector returns the stats.json block on its source and the source's question count that data.fraction is a
# share of (None for synthetic scenes): counted in the official folder, declared in the config for the hub.
def collect_synthetic(cfg: Any, col: Collector) -> tuple[dict, Optional[int]]:
    from .synthetic import make_scene

    for i in _bar(range(cfg.n_scenes), "synthetic scenes", "scene"):
        s = make_scene(cfg.seed, i, image_size=cfg.image_size, questions_per_scene=cfg.questions_per_scene,
                       min_objects=cfg.min_objects, max_objects=cfg.max_objects)
        col.add(s.image_id, s.png, [asdict(q) for q in s.questions], "synthetic", trusted_png=True)
    return {"kind": "synthetic", "scenes": cfg.n_scenes, "image_size": cfg.image_size,
            "objects_per_scene": [cfg.min_objects, cfg.max_objects]}, None


def collect_clevr_dir(cfg: Any, col: Collector) -> tuple[dict, Optional[int]]:
    from .clevr_dir import select

    with _bar(None, "reading CLEVR questions (2 passes)", "q") as bar:
        sel = select(Path(cfg.path), list(cfg.clevr_splits), cfg.seed,
                     lambda n: question_target(cfg.fraction, n, cfg.margin, cfg.max_questions), bar)
    col.limit = sel.target
    col.skipped["off_vocabulary"] += sel.off_vocabulary
    for im in _bar(sel.images, "copying CLEVR images", "img"):
        if col.full:
            break
        try:
            data: Optional[bytes] = im.path.read_bytes()
        except OSError:
            data = None
        col.add(im.image_id, data, im.qas, f"CLEVR_v1.0:{im.path.parent.name}")
    return {"kind": "clevr_dir", "path": str(cfg.path), "splits": list(cfg.clevr_splits),
            "questions_read": sel.questions_read, "images_selected": len(sel.images)}, sel.questions_read


def collect_hub(cfg: Any, col: Collector) -> tuple[dict, Optional[int]]:
    from .hub import HubCounts, iter_images, load_stream

    ds = load_stream(cfg)
    counts = HubCounts()
    label = f"{cfg.hub_id}:{cfg.hub_config}" if cfg.hub_config else cfg.hub_id
    col.limit = question_target(cfg.fraction, cfg.source_questions, cfg.margin, cfg.max_questions)
    with _bar(None, f"streaming {label}", "q", total=col.limit) as bar:
        for image_id, data, qas in iter_images(ds, cfg, counts):
            before = len(col.records)
            col.add(image_id, data, qas, label)
            bar.update(len(col.records) - before)
            if col.full:
                break
    col.skipped["off_vocabulary"] += counts.off_vocabulary
    col.skipped["unparsed"] += counts.unparsed
    if counts.examples_skipped:
        col.log.warning(f"{counts.off_vocabulary + counts.unparsed} QA pairs were not CLEVR question/answer pairs "
                        f"after cleaning, e.g. {counts.examples_skipped[0]}")
    if not col.full:
        col.log.warning(f"{label} ran out after {counts.rows} rows with {len(col.records)} of the {col.limit} questions "
                        "wanted; the subset is the whole stream")
    return {"kind": "hub", "id": cfg.hub_id, "config": cfg.hub_config, "split": cfg.hub_split,
            "layout": cfg.hub_layout, "rows_read": counts.rows, "rows_in_split": counts.total_rows,
            "qa_pairs_read": counts.pairs}, cfg.source_questions


def split_stats(records: list[dict]) -> dict:
    by_qtype = Counter(r["qtype"] for r in records)
    return {"questions": len(records), "images": len({r["image_id"] for r in records}),
            "by_qtype": {q: by_qtype.get(q, 0) for q in QTYPES},
            "answers": dict(sorted(Counter(r["answer"] for r in records).items()))}


def run(ctx: Any) -> None:
    cfg = ctx.section("data")
    col = Collector(ctx.out_dir, ctx.log)  # the hub and official-folder collectors set the question target
    collect = {"synthetic": collect_synthetic, "clevr_dir": collect_clevr_dir, "hub": collect_hub}[cfg.source]
    source_info, source_questions = collect(cfg, col)
    records = col.records
    if not records:
        skipped = ", ".join(f"{k}: {v}" for k, v in sorted(col.skipped.items())) or "nothing skipped"
        raise TamrinError(f"data source '{cfg.source}' yielded no usable question ({skipped}); check its settings "
                          "in [data] (or use --set data.source=synthetic to build offline)")
    train, test = split_by_image(records, cfg.test_fraction, cfg.max_test, cfg.seed)
    if not train:
        raise TamrinError(f"only {len(records)} questions: nothing left for training after the test split; lower "
                          "data.test_fraction or add data")
    n_test = test_target(len(records), cfg.test_fraction, cfg.max_test)
    if n_test > 0 and not test:
        ctx.log.warning("the test split is empty (images carry more questions than the test target): raise "
                        "data.test_fraction or data.max_test")
    used = {r["image_id"] for r in records}
    for image in col.images_dir.glob("*.png"):  # images whose questions were all dropped
        if image.stem not in used:
            image.unlink()
    contract.write(ctx.out_dir, "data/train.jsonl", train)
    contract.write(ctx.out_dir, "data/test.jsonl", test)
    stats = {
        "source": source_info, "seed": cfg.seed, "qtypes": list(QTYPES),
        "train": split_stats(train), "test": split_stats(test),
        "total": {"questions": len(train) + len(test), "images": len(used)},
        "skipped": {k: col.skipped.get(k, 0) for k in ("corrupt_image", "missing_image", "questions_of_skipped_images",
                                                       "off_vocabulary", "unparsed", "duplicate_question",
                                                       "unknown_qtype")},
        "subset": None if source_questions is None else subset_stats(
            kept=len(records), source_questions=source_questions, counted=cfg.source == "clevr_dir", target=col.limit,
            fraction=cfg.fraction, margin=cfg.margin, cap=cfg.max_questions),
        "split": {"by": "image", "test_fraction": cfg.test_fraction, "max_test": cfg.max_test,
                  "test_target": n_test},
    }
    contract.write(ctx.out_dir, "data/stats.json", stats)
    skipped = {k: v for k, v in stats["skipped"].items() if v}
    share = stats["subset"]["share"] if stats["subset"] else None
    ctx.log.info(f"{len(train)} train / {len(test)} test questions on {len(used)} images"
                 + (f" ({share:.3%} of the source's {source_questions:,} questions)" if share is not None else "")
                 + (f"; skipped {skipped}" if skipped else ""))
    ctx.extra["data"] = {"train": len(train), "test": len(test), "images": len(used), "source": cfg.source}
