"""Where the eval stage's batched generation loses time against a plain `model.generate` (issue 15, part 4).

On the NF4 base + a fresh LoRA adapter (as `eval` runs it), in one process, one after the other:
- the eval loop taken apart once: tokenising, preprocessing the images, then per batch host batch building,
  host-to-device copy, `generate` and decoding, each phase closed by a device sync;
- then, interleaved `--repeats` times so that a slow spell of the machine hits every variant alike (medians):
  `answer_warm` (the eval stage's `evaluate.answer`, pixel cache warm as in the fine-tuned pass after the base
  pass), `plain_padded` (`model.generate` on the very batches `answer` builds, prebuilt on the device: the ceiling
  for these prompts), `plain_uniform` (prompts of one length, all-ones mask: bench_vlm's ceiling), `one_by_one`
  (batch 1) and `plain_padded_adapter_off` (the LoRA layers' share of the generation time).

Usage: python bench/eval_profile.py --checkpoint DIR --data results/data --out FILE   (DIR: bench/make_random_3b.py)
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "code"))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def _without_adapter(model, fn):
    with model.disable_adapter():
        return fn()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("-n", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5, help="interleaved timed repeats of each variant (median kept)")
    ap.add_argument("--single", type=int, default=32, help="questions answered one at a time")
    args = ap.parse_args(argv)

    import torch
    from peft import LoraConfig as PeftLora, get_peft_model

    import bench_vlm
    from tamrin.vlm import batches as vb
    from tamrin.vlm import evaluate as g
    from tamrin.vlm.model import load_base_model, load_processor, lora_target_pattern, resolve_compute_dtype

    cuda = torch.cuda.is_available()  # the CPU run is the dry run of this script's logic (tiny model)
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    rows = vb.read_split(args.data, "test")
    rows = (rows * (1 + args.n // len(rows)))[:args.n]
    images = vb.ImageStore(args.data)
    model_cfg, lora_cfg, _ = bench_vlm._cfgs(args.checkpoint, 16)
    processor = load_processor(str(args.checkpoint))
    tok = processor.tokenizer
    base = load_base_model(str(args.checkpoint), quantization="nf4", compute_dtype=resolve_compute_dtype("auto", device),
                           device=device, double_quant=True)
    model = get_peft_model(base, PeftLora(r=16, lora_alpha=32, target_modules=lora_target_pattern(
        list(lora_cfg.targets), lora_cfg.scope)))
    model.eval()
    kw = {"batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens, "device": device, "progress": False}
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    out: dict = {"device": torch.cuda.get_device_name() if cuda else "cpu", "n": args.n, "batch_size": args.batch_size,
                 "max_new_tokens": args.max_new_tokens, "unique_images": len({r["image"] for r in rows})}

    g.answer(model, processor, rows[:64], images, model_cfg.prompt_prefix, **kw)  # warm-up (kernels, allocator)

    # the eval loop taken apart (warm pixel cache), keeping the device batches it builds
    pixels = vb.PixelCache(processor.image_processor, images, 2**30)
    t = time.perf_counter()
    examples = vb.tokenize(processor, rows, model_cfg.prompt_prefix, with_answers=False)
    groups = g.length_groups([len(e) for e in examples], args.batch_size)
    out["tokenize_s"] = round(time.perf_counter() - t, 3)
    t = time.perf_counter()
    pixels([r["image"] for r in rows])
    out["preprocess_images_s"] = round(time.perf_counter() - t, 3)
    phases = {"host_batch": 0.0, "to_device": 0.0, "generate": 0.0, "decode": 0.0}
    device_batches = []
    with torch.no_grad():
        for group in groups:
            t = time.perf_counter()
            chosen = [examples[j] for j in group]
            cpu_batch = vb.collate(chosen, pixels([e.image for e in chosen]), tok.pad_token_id, with_answers=False)
            t1 = time.perf_counter()
            batch = vb.to_device(cpu_batch, device)
            sync()
            t2 = time.perf_counter()
            seqs = g.greedy(model, batch, max_new_tokens=args.max_new_tokens, tok=tok)
            sync()
            t3 = time.perf_counter()
            g.decode_new(processor, seqs.cpu(), batch["input_ids"].shape[1])
            t4 = time.perf_counter()
            for k, dt in zip(phases, (t1 - t, t2 - t1, t3 - t2, t4 - t3)):
                phases[k] += dt
            device_batches.append(batch)
    out["answer_phases_s"] = {k: round(v, 3) for k, v in phases.items()}
    out["padding"] = {"mean_width": round(sum(b["input_ids"].shape[1] for b in device_batches) / len(device_batches), 1),
                      "pad_share": round(1 - sum(int(b["attention_mask"].sum()) for b in device_batches)
                                         / sum(b["attention_mask"].numel() for b in device_batches), 4)}
    width = int(out["padding"]["mean_width"])
    ids = torch.randint(10, processor.image_token_id, (args.batch_size, width))
    ids[:, :processor.image_seq_length] = processor.image_token_id
    ids[:, processor.image_seq_length] = tok.bos_token_id
    vc = model.config.vision_config
    uniform = {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device),
               "token_type_ids": torch.zeros_like(ids).to(device),
               "pixel_values": torch.randn(args.batch_size, 3, vc.image_size, vc.image_size).to(device)}
    single_rows = rows[:args.single]

    variants = {
        "answer_warm": lambda: g.answer(model, processor, rows, images, model_cfg.prompt_prefix, pixels=pixels, **kw),
        "plain_padded": lambda: [g.greedy(model, b, max_new_tokens=args.max_new_tokens, tok=tok)
                                 for b in device_batches],
        "plain_uniform": lambda: [g.greedy(model, uniform, max_new_tokens=args.max_new_tokens, tok=tok)
                                  for _ in device_batches],
        "one_by_one": lambda: g.answer(model, processor, single_rows, images, model_cfg.prompt_prefix, pixels=pixels,
                                       **{**kw, "batch_size": 1}),
        "plain_padded_adapter_off": lambda: _without_adapter(model, lambda: [
            g.greedy(model, b, max_new_tokens=args.max_new_tokens, tok=tok) for b in device_batches]),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    with torch.no_grad():
        for _ in range(args.repeats):  # interleaved, so that a slow spell of the machine hits every variant
            for name, fn in variants.items():
                sync()
                t = time.perf_counter()
                fn()
                sync()
                times[name].append(time.perf_counter() - t)
    out["seconds"] = {k: {"median": round(statistics.median(v), 3), "min": round(min(v), 3), "max": round(max(v), 3)}
                      for k, v in times.items()}
    med = {k: statistics.median(v) for k, v in times.items()}
    per_answer = {k: med[k] / (len(single_rows) if k == "one_by_one" else len(rows)) for k in med}
    out["answers_per_s"] = {k: round(1 / v, 2) for k, v in per_answer.items()}
    out["ratios"] = {"answer_vs_plain_padded": round(med["plain_padded"] / med["answer_warm"], 3),
                     "answer_vs_plain_uniform": round(med["plain_uniform"] / med["answer_warm"], 3),
                     "answer_vs_one_by_one": round(per_answer["one_by_one"] / per_answer["answer_warm"], 2),
                     "adapter_share_of_generate": round(1 - med["plain_padded_adapter_off"] / med["plain_padded"], 3),
                     "loop_overhead_share": round(1 - phases["generate"] / sum(phases.values()), 4)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
