"""`eval` stage: the base and the fine-tuned model on the same test questions → results/eval/.

The base is exactly the model that was fine-tuned: the same source (the hub model, or for the demo the
tiny random-weight base saved by `finetune`), loaded with the same quantization and compute dtype and, when
4-bit, the same preparation as training (`model.prepare_quantized`: fp32 outside the 4-bit matmuls), with the
LoRA adapter attached; base answers come from the same object under `disable_adapter()`. A batch whose logits
are not finite (fp16 overflow) is generated again in fp32 (generate.answer); summary.json counts them.

Writes base/ and finetuned/ (predictions.jsonl, metrics.json), baseline/ (the same two files for the majority
answer per question type of the train split, vlm/baseline.py), analysis.json (answer distributions, the share of
outputs cut off at `eval.max_new_tokens`, paired bootstrap differences of exact match: vlm/outputs.py),
samples.json (the `eval.n_samples` questions the report shows, drawn with `eval.seed`) and summary.json
(timings, settings).
"""
from __future__ import annotations

import random
import time
from pathlib import Path

import torch

from .. import contract
from ..atomic import read_json
from ..errors import MissingResultError, TamrinError
from . import baseline, batches
from .generate import answer
from .metrics import compute_metrics
from .model import DTYPE_NAMES, load_base_model, load_processor, prepare_quantized, resolve_compute_dtype, \
    resolve_quantization, threads_for
from .outputs import analyse


def base_source_of(finetune_dir: Path, summary: dict, model_cfg) -> Path | str:
    """The base the adapter was trained on, as finetune's summary.json records it: a folder saved inside
    results/finetune/ (the demo's tiny random model), else `model.id`."""
    if summary.get("base_model_in_results"):
        saved = Path(finetune_dir) / summary["base_model"]
        if not (saved / "config.json").exists():
            raise MissingResultError(f"missing {saved}/config.json: re-run `python build.py finetune --force finetune`")
        return saved
    return model_cfg.id


def eval_precision(summary: dict, device: torch.device) -> tuple[str, torch.dtype]:
    """Quantization and compute dtype of training, where this device supports them."""
    quant = resolve_quantization(summary.get("quantization", "auto"), device)
    wanted = summary.get("compute_dtype", "auto")
    try:
        dtype = resolve_compute_dtype(wanted, device)
    except TamrinError:
        dtype = resolve_compute_dtype("auto", device)
    return quant, dtype


def load_for_eval(finetune_dir: Path, model_cfg, device: torch.device):
    """(peft model with the trained adapter, processor, info dict)."""
    from peft import PeftModel

    finetune_dir = Path(finetune_dir)
    summary_path = finetune_dir / "summary.json"
    if not summary_path.exists() or not (finetune_dir / "adapter" / "adapter_config.json").exists():
        raise MissingResultError(f"missing {summary_path} or {finetune_dir}/adapter/: run `python build.py finetune`")
    summary = read_json(summary_path)
    source = base_source_of(finetune_dir, summary, model_cfg)
    quant, dtype = eval_precision(summary, device)
    processor = load_processor(source)
    base = load_base_model(source, quantization=quant, compute_dtype=dtype, device=device,
                           double_quant=model_cfg.double_quant)
    if quant == "nf4":
        base = prepare_quantized(base)  # the numerics training used (fp32 residual stream), not a plain fp16 base
    model = PeftModel.from_pretrained(base, finetune_dir / "adapter", is_trainable=False)
    model.eval()
    info = {"base_model": str(summary.get("base_model")), "quantization": quant, "compute_dtype": DTYPE_NAMES[dtype]}
    return model, processor, info


def draw_samples(ids: list[str], n: int, seed: int) -> list[str]:
    """`n` ids drawn without replacement with a seeded generator (the report's sample table)."""
    return random.Random(seed).sample(list(ids), min(n, len(ids)))


def run(ctx) -> None:
    """Stage entry point."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with threads_for(ctx.section("model").kind, device):
        _run(ctx, device)


def _run(ctx, device: torch.device) -> None:
    eval_cfg, model_cfg = ctx.section("eval"), ctx.section("model")
    data_dir, finetune_dir, out = Path(ctx.inputs["data"]), Path(ctx.inputs["finetune"]), Path(ctx.out_dir)
    rows = batches.read_split(data_dir, "test")
    if eval_cfg.max_examples is not None:
        rows = rows[:eval_cfg.max_examples]
    model, processor, info = load_for_eval(finetune_dir, model_cfg, device)
    images = batches.ImageStore(data_dir)
    ctx.log.info(f"evaluating {len(rows)} test questions (batch {eval_cfg.batch_size}, "
                 f"≤{eval_cfg.max_new_tokens} new tokens) on {device.type}")

    timings, predictions, guard = {}, {}, {"base": {}, "finetuned": {}}
    truncated: dict[str, list[bool]] = {"base": [], "finetuned": []}
    pixels = batches.PixelCache(processor.image_processor, images, 2**30)  # the test images, shared by both runs
    gen = dict(batch_size=eval_cfg.batch_size, max_new_tokens=eval_cfg.max_new_tokens, device=device,
               num_workers=eval_cfg.num_workers, pixels=pixels)
    try:
        for name in ("base", "finetuned"):
            gen["stats"], gen["truncated"] = guard[name], truncated[name]
            t0 = time.perf_counter()
            if name == "base":
                with model.disable_adapter():  # the same weights without the LoRA update
                    preds = answer(model, processor, rows, images, model_cfg.prompt_prefix, desc="eval base", **gen)
            else:
                preds = answer(model, processor, rows, images, model_cfg.prompt_prefix, desc="eval finetuned", **gen)
            timings[name] = time.perf_counter() - t0
            if guard[name]["fp32_fallback_batches"] or guard[name]["nonfinite_batches"]:
                ctx.log.warning(f"{name}: {guard[name]['fp32_fallback_batches']} batches had non-finite logits in "
                                f"{info['compute_dtype']} and were generated again in fp32; "
                                f"{guard[name]['nonfinite_batches']} stayed non-finite")
            if any(truncated[name]):
                ctx.log.warning(f"{name}: {sum(truncated[name])} of {len(rows)} answers stopped at "
                                f"{eval_cfg.max_new_tokens} new tokens without an end of sequence")
            predictions[name] = [{"id": r["id"], "question": r["question"], "answer": r["answer"], "prediction": p,
                                  "qtype": r.get("qtype")} for r, p in zip(rows, preds)]
    except torch.OutOfMemoryError:
        raise TamrinError(f"CUDA out of memory while generating with eval.batch_size = {eval_cfg.batch_size}: "
                          f"use --set eval.batch_size={max(1, eval_cfg.batch_size // 2)}") from None

    # the majority answer per question type of the train split: the floor a model that looks at the image clears
    predictions["baseline"] = baseline.predict(batches.read_split(data_dir, "train"), rows)
    metrics = {}
    for name, preds in predictions.items():
        metrics[name] = compute_metrics(preds, resamples=eval_cfg.bootstrap, seed=eval_cfg.seed)
        contract.write(out, f"eval/{name}/predictions.jsonl", preds)
        contract.write(out, f"eval/{name}/metrics.json", metrics[name])
        ctx.log.info(f"{name}: exact match {metrics[name]['exact_match']:.3f}, "
                     f"ROUGE-L F1 {metrics[name]['rougeL']['f']:.3f} "
                     f"[{metrics[name]['rougeL']['ci_low']:.3f}, {metrics[name]['rougeL']['ci_high']:.3f}]")

    contract.write(out, "eval/analysis.json", analyse(predictions, truncated, eval_cfg.max_new_tokens,
                                                      resamples=eval_cfg.bootstrap, seed=eval_cfg.seed))

    ids = draw_samples([r["id"] for r in rows], eval_cfg.n_samples, eval_cfg.seed)
    by_id = {r["id"]: r for r in rows}
    pred_of = {name: {p["id"]: p["prediction"] for p in preds} for name, preds in predictions.items()}
    contract.write(out, "eval/samples.json", {
        "seed": eval_cfg.seed, "ids": ids,
        "samples": [{"id": i, "image": by_id[i]["image"], "question": by_id[i]["question"],
                     "answer": by_id[i]["answer"], "qtype": by_id[i].get("qtype"),
                     "base": pred_of["base"][i], "finetuned": pred_of["finetuned"][i]} for i in ids],
    })
    contract.write(out, "eval/summary.json", {
        **info, "n": len(rows), "batch_size": eval_cfg.batch_size, "max_new_tokens": eval_cfg.max_new_tokens,
        "seconds": {k: round(v, 2) for k, v in timings.items()},
        "questions_per_s": {k: round(len(rows) / v, 2) for k, v in timings.items() if v > 0},
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "exact_match": {k: m["exact_match"] for k, m in metrics.items()},
        "fp32_fallback_batches": {k: v["fp32_fallback_batches"] for k, v in guard.items()},
        "nonfinite_batches": {k: v["nonfinite_batches"] for k, v in guard.items()},
    })
