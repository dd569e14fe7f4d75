"""Relative overheads of the finetune loop on a CPU, with the demo's tiny random PaliGemma (one process, one run):

- loop vs bench: `bench_vlm.bench_loop` — the finetune stage's `train()` on a synthetic folder vs the bench step on
  batches of that folder, same batch × accumulation, first steps skipped;
- preprocessing per micro-batch: the processor called on every micro-batch (what the loop did before issue 15:
  image decoding, SigLIP preprocessing and tokenisation per batch on the main thread) vs the new path
  (`batches.collate` of pre-tokenised examples + the per-process pixel cache), against one optimizer step.

Ratios only: the machine's cores are shared, so absolute times mean little. Writes bench/results/cpu_loop_overhead.json.
Usage: python bench/cpu_loop_overhead.py [--steps 12]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "code"))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def _per_call(fn, n: int) -> float:
    fn()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "cpu_loop_overhead.json")
    args = ap.parse_args(argv)

    import torch

    import bench_vlm
    from tamrin.contract.facts import ANSWERS
    from tamrin.vlm import batches
    from tamrin.vlm.model import load_processor
    from tamrin.vlm.tiny import save_tiny_base

    torch.set_num_threads(1)  # as the demo runs the tiny model (vlm/model.py threads_for)
    work = Path(tempfile.mkdtemp(prefix="tamrin-cpu-loop-"))
    words = ["answer en ", "is there a red cube or the large sphere?", *ANSWERS]
    ckpt = save_tiny_base(work / "tiny", words, width=128, layers=2, image_size=64)
    batch, accum, seq = 8, 2, 40
    # Every example with its own image (as in a shuffled 1%-of-CLEVR epoch, where the pixel cache rarely hits):
    # decoding and preprocessing in the main process (num_workers = 0, the demo's setting) vs one worker process
    # and every image shared by all examples (after the first step the pixel cache answers: the loop's own cost)
    cases = {"own_image_workers_0": (0, 1), "own_image_workers_1": (1, 1), "cached_images_workers_0": (0, 10 ** 6)}
    loops = {name: bench_vlm.bench_loop(ckpt, batch, accum, args.steps, 2, seq, 3, 16, device=torch.device("cpu"),
                                        quantization="nf4", num_workers=w, work=work / name, questions_per_image=q)
             for name, (w, q) in cases.items()}
    loop = loops["own_image_workers_0"]

    processor = load_processor(ckpt)
    data = work / "own_image_workers_0" / "data"
    rows = batches.read_split(data, "train")[:batch]
    prefix = "answer en "

    def old() -> None:  # a fresh image store: the old loop decoded and preprocessed every micro-batch's images
        store = batches.ImageStore(data)
        processor.tokenizer.padding_side = "left"
        processor(text=[batches.IMAGE_TOKEN + prefix + r["question"] for r in rows],
                  images=[store(r["image"]) for r in rows], suffix=[r["answer"] for r in rows], return_tensors="pt",
                  padding="longest")

    examples = batches.tokenize(processor, rows, prefix, with_answers=True)
    pixels = batches.PixelCache(processor.image_processor, batches.ImageStore(data))
    pixels([e.image for e in examples])  # in a run every image is seen again (CLEVR: ~10 questions per image)

    def new() -> None:
        batches.collate(examples, pixels([e.image for e in examples]), processor.tokenizer.pad_token_id,
                        with_answers=True)

    step_s = batch * accum / loop["bench"]["samples_per_s"]
    micro_step_s = step_s / accum
    t_old, t_new = _per_call(old, 20), _per_call(new, 20)
    result = {"model": "demo tiny random PaliGemma (width 128, 2 layers, 64 px, 16 image tokens), NF4, 1 thread",
              "loop_vs_bench": loops,
              "preprocessing_per_micro_batch": {
                  "batch": batch, "old_processor_call_ms": round(1000 * t_old, 2),
                  "new_collate_ms": round(1000 * t_new, 3), "bench_micro_step_ms": round(1000 * micro_step_s, 1),
                  "old_share_of_micro_step": round(t_old / micro_step_s, 3),
                  "new_share_of_micro_step": round(t_new / micro_step_s, 4)},
              "note": "ratios from one run on 2 shared cores; absolute times are not comparable between runs"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({**{name: v["loop_vs_bench"] for name, v in loops.items()},
                      **result["preprocessing_per_micro_batch"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
