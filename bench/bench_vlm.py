"""Benchmark of the PaliGemma-3B fine-tuning and evaluation code on one GPU (random weights, real architecture).

Training: QLoRA (NF4 + double quant, LoRA r=16 on the assignment's targets, gradient checkpointing) at batch 8
and 32, suffix-only vs full-logit loss — samples/s and peak GPU memory. The model is built by the finetune
stage's `build_training_model` and each step is its `train_step` + clipping + AdamW (via
`tamrin.vlm.step.Steps`), so the numbers are those of `build.py finetune`.
Evaluation: greedy generation batched vs one by one with the eval stage's generation code — answers/s.

Targets (issue 4): QLoRA batch 32 ≤ 10 GiB peak and ≥ 40 samples/s on an H100/H200; batched eval ≥ 10× one by one.
Writes bench/results/<device>.json (or --out).

Usage: python bench/bench_vlm.py --checkpoint DIR   (DIR from bench/make_random_3b.py; it must hold a processor)
"""
from __future__ import annotations

import argparse
import gc
import json
import platform
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "code"))

GIB = 2 ** 30
TARGETS = {"qlora_b32_peak_gib_max": 10.0, "qlora_b32_samples_per_s_min": 40.0, "eval_speedup_min": 10.0}


def device_slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _cfgs(checkpoint: Path, rank: int, quantization: str = "nf4"):
    """The finetune/eval config sections of the benchmark: QLoRA (NF4 + DQ), LoRA r, grad-ckpt, auto dtype
    (bf16 on the GPU; fp32 on CPU for the smoke test)."""
    from tamrin.vlm.config import LoraConfig, ModelConfig, TrainConfig

    return (ModelConfig(id=str(checkpoint), kind="pretrained", quantization=quantization, double_quant=True),
            LoraConfig(rank=rank), TrainConfig(grad_ckpt=True, compute_dtype="auto"))


class Cuda:
    """Synchronise / peak-memory helpers that are no-ops on CPU (the smoke test runs the same code there)."""

    def __init__(self, device) -> None:
        import torch

        self.torch, self.device, self.on = torch, device, device.type == "cuda"

    def sync(self) -> None:
        if self.on:
            self.torch.cuda.synchronize(self.device)

    def reset_peak(self) -> None:
        if self.on:
            self.torch.cuda.reset_peak_memory_stats(self.device)

    def allocated_gib(self) -> float | None:
        return round(self.torch.cuda.memory_allocated(self.device) / GIB, 3) if self.on else None

    def peak_gib(self) -> float | None:
        return round(self.torch.cuda.max_memory_allocated(self.device) / GIB, 3) if self.on else None

    def reserved_gib(self) -> float | None:
        return round(self.torch.cuda.max_memory_reserved(self.device) / GIB, 3) if self.on else None

    def free(self) -> None:
        gc.collect()
        if self.on:
            self.torch.cuda.empty_cache()


def bench_training(checkpoint: Path, batches: list[int], losses: list[str], seq_len: int, suffix_len: int,
                   steps: int, warmup: int, rank: int, device=None, quantization: str = "nf4") -> list[dict]:
    """Samples/s and peak memory of QLoRA training steps for every (batch, loss)."""
    import torch

    from tamrin.vlm.finetune import build_training_model
    from tamrin.vlm.memory_measure import synthetic_batch
    from tamrin.vlm.step import Steps

    device = device or torch.device("cuda", torch.cuda.current_device())
    cu = Cuda(device)
    model_cfg, lora_cfg, train_cfg = _cfgs(checkpoint, rank, quantization)
    t0 = time.perf_counter()
    tm = build_training_model(str(checkpoint), model_cfg, lora_cfg, train_cfg, device)
    load_s = time.perf_counter() - t0
    model = tm.model
    model.train()
    weights = cu.allocated_gib()
    stepper = Steps(model)  # one optimizer for the whole benchmark, as in a training run
    rows = []
    for batch_size in batches:
        for loss in losses:
            row = {"mode": f"{tm.quantization} base + LoRA", "rank": rank, "batch": batch_size, "seq_len": seq_len, "loss": loss,
                   "grad_ckpt": True, "steps": steps, "load_seconds": round(load_s, 1),
                   "weights_allocated_gib": weights}
            batch = synthetic_batch(model.config, batch_size, seq_len, suffix_len, device, torch.float32)
            try:
                stepper.run(batch, warmup, loss=loss)  # kernels, allocator and autotuning warm up
                cu.sync()
                cu.reset_peak()
                t = time.perf_counter()
                step_losses = stepper.run(batch, steps, loss=loss)
                cu.sync()
                dt = time.perf_counter() - t
                row.update(ok=True, samples_per_s=round(batch_size * steps / dt, 2),
                           seconds_per_step=round(dt / steps, 4), peak_allocated_gib=cu.peak_gib(),
                           peak_reserved_gib=cu.reserved_gib(), losses=[round(x, 4) for x in step_losses])
            except torch.cuda.OutOfMemoryError as e:
                row.update(ok=False, error="out of memory: " + str(e).split("\n")[0][:200])
            print(json.dumps(row), flush=True)
            rows.append(row)
            del batch
            cu.free()
    stepper.close()
    del model, tm
    cu.free()
    return rows


def bench_generation(checkpoint: Path, n_batched: int, n_single: int, batch_size: int, max_new_tokens: int,
                     data_dir: Path, device=None, quantization: str = "nf4") -> dict:
    """Answers/s of the eval stage's greedy generation (`generate.answer`: left padding, KV cache, only the new
    tokens decoded) with `batch_size` questions per call vs one question per call, on the NF4 base with a
    fresh LoRA adapter attached as in `eval`."""
    import torch
    from peft import LoraConfig as PeftLora, get_peft_model

    from tamrin.vlm.batches import ImageStore, read_split
    from tamrin.vlm.generate import answer
    from tamrin.vlm.model import load_base_model, load_processor, lora_target_pattern, resolve_compute_dtype, \
        resolve_quantization

    device = device or torch.device("cuda", torch.cuda.current_device())
    cu = Cuda(device)
    rows = read_split(data_dir, "test")
    images = ImageStore(data_dir)
    model_cfg, lora_cfg, _ = _cfgs(checkpoint, 16, quantization)
    processor = load_processor(str(checkpoint))
    base = load_base_model(str(checkpoint), quantization=resolve_quantization(quantization, device),
                           compute_dtype=resolve_compute_dtype("auto", device), device=device, double_quant=True)
    model = get_peft_model(base, PeftLora(r=lora_cfg.rank, lora_alpha=lora_cfg.alpha, target_modules=lora_target_pattern(
        list(lora_cfg.targets), lora_cfg.scope)))
    model.eval()
    cu.reset_peak()
    out = {"batch_size": batch_size, "max_new_tokens": max_new_tokens, "greedy": True, "kv_cache": True}
    for label, n, bs in (("warmup", min(8, n_single), min(8, batch_size)), ("batched", n_batched, batch_size),
                         ("one_by_one", n_single, 1)):
        subset = (rows * (1 + n // len(rows)))[:n]
        cu.sync()
        t = time.perf_counter()
        preds = answer(model, processor, subset, images, model_cfg.prompt_prefix, batch_size=bs,
                       max_new_tokens=max_new_tokens, device=device, desc=f"generate {label}", progress=False)
        cu.sync()
        dt = time.perf_counter() - t
        if label != "warmup":
            out[label] = {"n": n, "batch_size": bs, "seconds": round(dt, 3), "answers_per_s": round(n / dt, 2),
                          "example": {"question": subset[0]["question"], "prediction": preds[0]}}
    out["speedup"] = round(out["batched"]["answers_per_s"] / out["one_by_one"]["answers_per_s"], 2)
    out["peak_allocated_gib"] = cu.peak_gib()
    print(json.dumps(out), flush=True)
    del model, base
    cu.free()
    return out


def verdict(train_rows: list[dict], gen: dict | None) -> dict:
    b32 = next((r for r in train_rows if r["batch"] == 32 and r["loss"] == "suffix" and r.get("ok")), None)
    v = {"targets": TARGETS}
    if b32:
        v["qlora_b32_peak_ok"] = b32["peak_allocated_gib"] <= TARGETS["qlora_b32_peak_gib_max"]
        v["qlora_b32_speed_ok"] = b32["samples_per_s"] >= TARGETS["qlora_b32_samples_per_s_min"]
    if gen:
        v["eval_speedup_ok"] = gen["speedup"] >= TARGETS["eval_speedup_min"]
    return v


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", type=Path, required=True, help="folder from bench/make_random_3b.py")
    ap.add_argument("--data", type=Path, default=None, help="results/data folder (test questions for generation)")
    ap.add_argument("--out", type=Path, default=None, help="output JSON (default bench/results/<device>.json)")
    ap.add_argument("--batches", default="8,32")
    ap.add_argument("--losses", default="suffix,full")
    ap.add_argument("--seq-len", type=int, default=280)
    ap.add_argument("--suffix-len", type=int, default=3, help="answer tokens + <eos> carrying labels")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--gen-batched", type=int, default=128, help="questions answered in batches")
    ap.add_argument("--gen-single", type=int, default=32, help="questions answered one at a time")
    ap.add_argument("--gen-batch-size", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=8)
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--skip-gen", action="store_true")
    args = ap.parse_args(argv)

    import torch
    import transformers

    if not torch.cuda.is_available():
        print("bench_vlm.py needs a CUDA GPU", file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name()
    out_path = args.out or Path(__file__).parent / "results" / f"{device_slug(name)}.json"
    result = {"device": name, "gpu_mem_gib": round(torch.cuda.get_device_properties(0).total_memory / GIB, 1),
              "host": platform.node(), "torch": torch.__version__, "transformers": transformers.__version__,
              "weights": "random (bench/make_random_3b.py), real PaliGemma-3B architecture",
              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    try:
        import bitsandbytes
        import peft
        result.update(bitsandbytes=bitsandbytes.__version__, peft=peft.__version__)
    except ImportError:
        pass
    train_rows, gen = [], None
    if not args.skip_train:
        train_rows = bench_training(args.checkpoint, [int(b) for b in args.batches.split(",")],
                                    args.losses.split(","), args.seq_len, args.suffix_len, args.steps, args.warmup,
                                    args.rank)
    result["training"] = train_rows
    if not args.skip_gen:
        if args.data is None:
            print("--data is needed for the generation benchmark (or pass --skip-gen)", file=sys.stderr)
            return 2
        gen = bench_generation(args.checkpoint, args.gen_batched, args.gen_single, args.gen_batch_size,
                               args.max_new_tokens, args.data)
    result["generation"] = gen
    result["verdict"] = verdict(train_rows, gen)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out_path}: {json.dumps(result['verdict'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
