"""`ablation` stage: the measured effect of the LoRA rank → results/ablation/ablation.json (contract/ablation.py).
For each rank of `ablation.ranks` (plus `large_gpu_ranks` on a large GPU; with `ablation.compare_quantization` also
the main rank on an unquantized base) finetune's own loop trains one adapter on the main run's rows, steps, seed and
base; it is reloaded from its saved files (fresh objects: bitsandbytes 0.50 repacks a Linear4bit weight for its
gradient-less CPU kernel on the first eval-mode no-grad forward) and scored as `eval` scores. Disabled (the paper
profile's default), the stage records how long it would take here, from the main run's and eval's speeds.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from .. import contract
from ..atomic import read_json, read_jsonl
from .model import on_device

ADAPTER_STATE_BYTES = 16  # fp32 adapter weight + fp32 gradient + two fp32 AdamW moments, per trainable parameter


def plan_runs(ab, lora_rank: int, lora_alpha: float, quantization: str, gpu_gib: float | None
              ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(runs to train, skipped ranks): one run {rank, alpha, quantization} per rank, the large-GPU ranks only when
    `gpu_gib` reaches `ab.large_gpu_gib`; plus the main rank unquantized with `compare_quantization` (main run
    quantized). alpha keeps the main run's alpha / r (`ratio`) or stays lora.alpha (`fixed`)."""
    large = gpu_gib is not None and gpu_gib >= ab.large_gpu_gib
    ranks = list(dict.fromkeys(ab.ranks + (ab.large_gpu_ranks if large else [])))
    skipped = [] if large else [{"rank": r, "reason": "needs_large_gpu"} for r in ab.large_gpu_ranks
                                if r not in ab.ranks]

    alpha = lambda rank: lora_alpha / lora_rank * rank if ab.alpha == "ratio" else lora_alpha  # noqa: E731
    runs = [{"rank": r, "alpha": alpha(r), "quantization": quantization} for r in ranks]
    if ab.compare_quantization and quantization == "nf4":
        runs.append({"rank": lora_rank, "alpha": alpha(lora_rank), "quantization": "none"})
    return runs, skipped


def steady_seconds_per_step(loss_rows: list[dict[str, Any]]) -> float | None:
    """Seconds per optimizer step after the first (warm-up) step, from loss.jsonl's cumulative `seconds`."""
    if len(loss_rows) < 2:
        return None
    return (loss_rows[-1]["seconds"] - loss_rows[0]["seconds"]) / (len(loss_rows) - 1)


def estimate(runs: list[dict], steps: int, seconds_per_step: float | None, eval_seconds_per_run: float | None
             ) -> dict[str, Any]:
    """How long the planned runs take at the main run's steady speed (the rank barely changes a step's cost next
    to the frozen 3B base; an estimate, not a promise)."""
    train = None if seconds_per_step is None else len(runs) * steps * seconds_per_step
    evals = None if eval_seconds_per_run is None else len(runs) * eval_seconds_per_run
    total = None if train is None else train + (evals or 0.0)
    return {"runs": len(runs), "steps_per_run": steps, "seconds_per_step": seconds_per_step,
            "eval_seconds_per_run": eval_seconds_per_run, "total_seconds": total}


def run_record(run: dict[str, Any], summary: dict[str, Any], loss_rows: list[dict], metrics: dict[str, Any],
               eval_seconds: float) -> dict[str, Any]:
    """One trained rank in ablation.json's layout (from finetune's summary and loss log, eval's metrics)."""
    peak = summary.get("peak_gpu_mem_gib")
    return {
        "rank": run["rank"], "alpha": run["alpha"], "quantization": summary["quantization"],
        "trainable_params": summary["trainable_params"], "total_params": summary["total_params"],
        "steps": summary["steps_done"], "exact_match": metrics["exact_match"],
        "exact_match_ci": metrics["exact_match_ci"],
        "rougeL": {k: metrics["rougeL"][k] for k in ("f", "ci_low", "ci_high")},
        "loss": [r["loss"] for r in loss_rows], "loss_first_mean": summary["loss_first_mean"],
        "loss_last_mean": summary["loss_last_mean"], "seconds_per_step": steady_seconds_per_step(loss_rows),
        "train_seconds": summary["train_seconds"], "eval_seconds": round(eval_seconds, 3),
        "peak_gpu_bytes": None if peak is None else round(peak * 2 ** 30),
        "adapter_state_bytes": ADAPTER_STATE_BYTES * summary["trainable_params"],
    }


def _done(run_dir: Path, steps: int) -> bool:
    """A run finished by an earlier, interrupted attempt of this stage (same cache key) is not trained again."""
    summary = run_dir / "summary.json"
    return (summary.is_file() and (run_dir / "adapter" / "adapter_config.json").is_file()
            and read_json(summary).get("steps_done") == steps)


@on_device
def run(ctx, device) -> None:
    import torch

    from . import batches
    from .evaluate import answer, base_source_of, load_for_eval
    from .finetune import train
    from .metrics import compute_metrics, prediction_rows

    ab, model_cfg, lora_cfg = ctx.section("ablation"), ctx.section("model"), ctx.section("lora")
    train_cfg, eval_cfg = ctx.section("train"), ctx.section("eval")
    data_dir, finetune_dir = Path(ctx.inputs["data"]), Path(ctx.inputs["finetune"])
    results = finetune_dir.parent  # results/ (the inputs are its stage folders)
    main = contract.read_plain(results, "finetune/summary.json")
    main_loss = contract.read_plain(results, "finetune/loss.jsonl")
    eval_summary = contract.read_plain(results, "eval/summary.json")
    rows = batches.read_split(data_dir, "test")[:ab.max_test]  # None: all
    cuda = device.type == "cuda"
    gpu_gib = torch.cuda.get_device_properties(device).total_memory / 2 ** 30 if cuda else None
    steps = ab.steps or main["total_steps"]
    runs, skipped = plan_runs(ab, lora_cfg.rank, lora_cfg.alpha, main["quantization"], gpu_gib)
    per_q = eval_summary["seconds"]["finetuned"] / max(1, eval_summary["n"])
    est = estimate(runs, steps, steady_seconds_per_step(main_loss), per_q * len(rows))
    settings = {"ranks": [r["rank"] for r in runs if r["quantization"] == main["quantization"]], "steps": steps,
                "seed": train_cfg.seed, "lr": train_cfg.lr, "batch_size": train_cfg.batch_size,
                "grad_accum": train_cfg.grad_accum, "alpha_mode": ab.alpha,
                **({"alpha_over_rank": lora_cfg.alpha / lora_cfg.rank} if ab.alpha == "ratio" else
                   {"alpha": lora_cfg.alpha}),
                "quantization": main["quantization"], "n_test": len(rows),
                "device": torch.cuda.get_device_name(device) if cuda else "cpu", "gpu_gib": gpu_gib}
    minutes = "?" if est["total_seconds"] is None else f"{est['total_seconds'] / 60:.1f}"
    plan_text = f"{len(runs)} runs (ranks {', '.join(str(r['rank']) for r in runs)}) × {steps} steps"
    out = {"enabled": ab.enabled, "settings": settings, "skipped": skipped, "estimate": est, "runs": []}
    if not ab.enabled:
        ctx.log.info(f"ablation off in this profile: {plan_text} would take ≈ {minutes} min here (the main run's "
                     "steady seconds per step; turn it on with --set ablation.enabled=true)")
        contract.write(ctx.out_dir, "ablation/ablation.json", out)
        return
    ctx.log.info(f"ablation: {plan_text}, estimated ≈ {minutes} min")
    source = base_source_of(finetune_dir, main, model_cfg)
    images = batches.ImageStore(data_dir)
    for i, r in enumerate(runs, 1):
        mc = model_cfg.model_copy(update={"kind": "pretrained", "id": str(source), "quantization":
                                          "none" if r["quantization"] == "none" else model_cfg.quantization})
        lc = lora_cfg.model_copy(update={"rank": r["rank"], "alpha": r["alpha"]})
        # the main run's training rows (the same held-out slice left out), evaluated only at the two ends
        tc = train_cfg.model_copy(update={"max_steps": steps, "save_every": steps, "max_minutes": None,
                                          "heldout_every": steps})
        run_dir = ctx.work_dir / f"r{r['rank']}-{r['quantization']}"
        ctx.log.info(f"ablation run {i}/{len(runs)}: r = {r['rank']}, alpha = {r['alpha']:g}, "
                     f"base {r['quantization']}")
        if not _done(run_dir, steps):
            train(data_dir=data_dir, out_dir=run_dir, work_dir=run_dir / "checkpoints", model_cfg=mc, lora_cfg=lc,
                  train_cfg=tc, log=ctx.log)
        summary = contract.dump(contract.validate("finetune/summary.json", read_json(run_dir / "summary.json")))
        loss_rows = contract.dump(contract.validate("finetune/loss.jsonl", read_jsonl(run_dir / "loss.jsonl")))
        model, processor, _ = load_for_eval(run_dir, mc, device)  # fresh objects from the saved adapter
        t0 = time.perf_counter()
        preds = answer(model, processor, rows, images, model_cfg.prompt_prefix, batch_size=eval_cfg.batch_size,
                       max_new_tokens=eval_cfg.max_new_tokens, device=device, desc=f"ablation r={r['rank']}")
        seconds = time.perf_counter() - t0
        del model
        if cuda:
            torch.cuda.empty_cache()
        metrics = compute_metrics(prediction_rows(rows, preds), resamples=eval_cfg.bootstrap, seed=eval_cfg.seed)
        out["runs"].append(run_record(r, summary, loss_rows, metrics, seconds))
        ctx.log.info(f"r = {r['rank']} ({r['quantization']}): exact match {metrics['exact_match']:.3f}, "
                     f"ROUGE-L {metrics['rougeL']['f']:.3f}, {summary['trainable_params']:,} trainable")
    contract.write(ctx.out_dir, "ablation/ablation.json", out)
    if ctx.profile == "demo":
        ctx.extra["note"] = "offline demo: a tiny random-weight PaliGemma, not PaliGemma results"
