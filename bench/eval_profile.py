"""Where the eval stage's batched generation loses time against a plain `model.generate` (issue 15, part 4).

On the NF4 base + a fresh LoRA adapter (as `eval` runs it), in one process, one after the other:
- `answer`: the eval stage's `generate.answer` on N test questions (cold pixel cache, then warm: what the
  fine-tuned pass sees after the base pass), with the time of each phase of its loop taken apart (host batch
  building, host-to-device copy, `generate`, decoding), each phase closed by a device sync;
- `plain_padded`: `model.generate` on the very batches `answer` builds (length-sorted, left-padded), prebuilt on
  the device: the ceiling for these prompts;
- `plain_uniform`: `model.generate` on prompts of one length with an all-ones mask (bench_vlm's ceiling);
- `base_and_finetuned`: both passes of the eval stage (adapter disabled, then enabled) sharing one pixel cache,
  against twice `plain_padded`.

Usage: python bench/eval_profile.py --checkpoint DIR --data results/data --out FILE   (DIR: bench/make_random_3b.py)
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "code"))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("-n", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2, help="timed repeats of each variant (the best is kept)")
    args = ap.parse_args(argv)

    import torch
    from peft import LoraConfig as PeftLora, get_peft_model

    import bench_vlm
    from tamrin.vlm import batches as vb
    from tamrin.vlm import generate as g
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
    kw = dict(batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, device=device, progress=False)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    out: dict = {"device": torch.cuda.get_device_name() if cuda else "cpu", "n": args.n, "batch_size": args.batch_size,
                 "max_new_tokens": args.max_new_tokens, "unique_images": len({r["image"] for r in rows})}

    def best(fn, repeats: int = args.repeats) -> float:
        times = []
        for _ in range(repeats):
            sync()
            t = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t)
        return min(times)

    g.answer(model, processor, rows[:64], images, model_cfg.prompt_prefix, **kw)  # warm-up (kernels, allocator)

    # answer: cold cache (every image preprocessed inside the timed call), then warm
    cold = []
    for _ in range(args.repeats):
        sync()
        t = time.perf_counter()
        g.answer(model, processor, rows, images, model_cfg.prompt_prefix, **kw)
        sync()
        cold.append(time.perf_counter() - t)
    pixels = vb.PixelCache(processor.image_processor, images, 2**30)
    g.answer(model, processor, rows, images, model_cfg.prompt_prefix, pixels=pixels, **kw)
    warm = best(lambda: g.answer(model, processor, rows, images, model_cfg.prompt_prefix, pixels=pixels, **kw))
    out["answer"] = {"cold_s": round(min(cold), 3), "warm_s": round(warm, 3)}

    # the same loop taken apart, warm cache
    examples = vb.tokenize(processor, rows, model_cfg.prompt_prefix, with_answers=False)
    groups = g.length_groups([len(e) for e in examples], args.batch_size)
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
            seqs = g._generate(model, batch, max_new_tokens=args.max_new_tokens, tok=tok)
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

    def plain_padded() -> None:
        with torch.no_grad():
            for b in device_batches:
                g._generate(model, b, max_new_tokens=args.max_new_tokens, tok=tok)

    out["plain_padded_s"] = round(best(plain_padded), 3)

    width = int(out["padding"]["mean_width"])
    ids = torch.randint(10, processor.image_token_id, (args.batch_size, width))
    ids[:, :processor.image_seq_length] = processor.image_token_id
    ids[:, processor.image_seq_length] = tok.bos_token_id
    vc = model.config.vision_config
    uniform = {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device),
               "token_type_ids": torch.zeros_like(ids).to(device),
               "pixel_values": torch.randn(args.batch_size, 3, vc.image_size, vc.image_size).to(device)}

    def plain_uniform() -> None:
        with torch.no_grad():
            for _ in device_batches:
                g._generate(model, uniform, max_new_tokens=args.max_new_tokens, tok=tok)

    out["plain_uniform_s"] = round(best(plain_uniform), 3)

    # both passes of the eval stage, one shared pixel cache (as evaluate.py runs them)
    def both() -> None:
        shared = vb.PixelCache(processor.image_processor, images, 2**30)
        with model.disable_adapter():
            g.answer(model, processor, rows, images, model_cfg.prompt_prefix, pixels=shared, **kw)
        g.answer(model, processor, rows, images, model_cfg.prompt_prefix, pixels=shared, **kw)

    def plain_both() -> None:
        with model.disable_adapter():
            plain_padded()
        plain_padded()

    out["base_and_finetuned_s"] = round(best(both), 3)
    out["plain_padded_both_s"] = round(best(plain_both), 3)
    out["ratios"] = {"answer_cold_vs_plain_padded": round(out["plain_padded_s"] / out["answer"]["cold_s"], 3),
                     "answer_warm_vs_plain_padded": round(out["plain_padded_s"] / out["answer"]["warm_s"], 3),
                     "answer_cold_vs_plain_uniform": round(out["plain_uniform_s"] / out["answer"]["cold_s"], 3),
                     "both_passes_vs_plain_padded": round(out["plain_padded_both_s"] / out["base_and_finetuned_s"], 3)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
