"""Micro-benchmark: the synthetic scenes' PNG encoding — Pillow (zlib level 1, its adaptive filters) vs the
hand-written encoder (filter "Up" on every row, zlib level 1) that render.py used to carry — and how much of a
scene's total generation time (render + encode) the encoder is.

    python bench/bench_png.py [--scenes 40] [--repeats 5]   → bench/results/png_encode.json

Both encoders run alternately in one process on the same rendered images, so other load on the machine affects
both alike; ratios are the result, absolute times only describe this run.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import struct
import sys
import time
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "code"))


def handwritten_png(img) -> bytes:
    """The encoder render.py carried before Pillow replaced it (kept here only to measure it)."""
    a = np.asarray(img.convert("RGB"))
    h, w, _ = a.shape
    rows = a.reshape(h, w * 3)
    filtered = np.empty((h, w * 3 + 1), dtype=np.uint8)
    filtered[:, 0] = 2
    filtered[0, 1:] = rows[0]
    filtered[1:, 1:] = rows[1:] - rows[:-1]

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(filtered.tobytes(), 1))
            + chunk(b"IEND", b""))


def main() -> int:
    from tamrin.data.synthetic import make_scene, png_bytes, render

    ap = argparse.ArgumentParser()
    ap.add_argument("--scenes", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "png_encode.json")
    args = ap.parse_args()

    scenes = [make_scene(0, i, image_size=args.size, questions_per_scene=1, min_objects=3, max_objects=10).scene
              for i in range(args.scenes)]
    t0 = time.perf_counter()
    images = [render(s, args.size) for s in scenes]
    render_s = (time.perf_counter() - t0) / len(images)
    encoders = {"pillow": png_bytes, "handwritten": handwritten_png}
    times: dict[str, list[float]] = {k: [] for k in encoders}
    sizes = {k: statistics.mean(len(f(im)) for im in images) for k, f in encoders.items()}
    for _ in range(args.repeats):
        for name, f in encoders.items():  # alternated, same images
            t = time.perf_counter()
            for im in images:
                f(im)
            times[name].append((time.perf_counter() - t) / len(images))
    per = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "what": "PNG encoding of rendered synthetic CLEVR-like scenes: Pillow vs the former hand-written encoder",
        "image_size": args.size, "scenes": args.scenes, "repeats": args.repeats,
        "render_ms_per_scene": round(render_s * 1e3, 3),
        "encode_ms_per_scene": {k: round(v * 1e3, 3) for k, v in per.items()},
        "mean_png_bytes": {k: round(v) for k, v in sizes.items()},
        "pillow_over_handwritten_time": round(per["pillow"] / per["handwritten"], 3),
        "pillow_share_of_scene_time": round(per["pillow"] / (render_s + per["pillow"]), 3),
        # what the hand-written encoder would save on the demo's data stage (configs/demo.toml: 240 scenes)
        "demo_scenes": 240,
        "demo_seconds_saved_by_handwritten": round(240 * (per["pillow"] - per["handwritten"]), 3),
        "python": platform.python_version(),
        "note": "ratios from one process with the encoders alternated; absolute times depend on other load",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
