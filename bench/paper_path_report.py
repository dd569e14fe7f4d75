"""Summarise one GPU run of the paper path (results/finetune, results/eval) as a Markdown section.

Usage: python bench/paper_path_report.py --run LABEL --out FILE.md [--append] [--no-eval] [--log LOG] [--cmd TEXT]
Reads only result files (summary.json, loss.jsonl, manifest.json, eval metrics, the adapter's tensors).
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _read(path: Path):
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def adapter_dtypes(adapter_dir: Path) -> dict[str, int]:
    """{dtype: tensor count} of the saved LoRA weights (fp32 expected on the fp16 path)."""
    from safetensors import safe_open

    path = adapter_dir / "adapter_model.safetensors"
    if not path.exists():
        return {}
    counts: dict[str, int] = {}
    with safe_open(str(path), "pt") as f:
        for k in f.keys():
            dt = str(f.get_slice(k).get_dtype())
            counts[dt] = counts.get(dt, 0) + 1
    return counts


def section(label: str, results: Path, with_eval: bool, log_text: str, cmd: str) -> str:
    s = _read(results / "finetune" / "summary.json") or {}
    man = _read(results / "finetune" / "manifest.json") or {}
    loss_path = results / "finetune" / "loss.jsonl"
    losses = [json.loads(l) for l in loss_path.read_text().splitlines() if l.strip()] if loss_path.exists() else []
    finite = bool(losses) and all(math.isfinite(r["loss"]) for r in losses)
    steps = [r["step"] for r in losses]
    resumed = re.findall(r"resuming from step (\d+)/(\d+)", log_text)
    hw = man.get("hardware", {})
    lines = [f"## {label}", "",
             f"- when: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; GPU: {s.get('device')} "
             f"({hw.get('gpu_mem', '?')}); code: {man.get('code_version', '?')}",
             f"- command: `{cmd}`" if cmd else "",
             f"- model: {s.get('model')} — weights {s.get('quantization')} (double quant {s.get('double_quant')}), "
             f"compute {s.get('compute_dtype')}, loss `{s.get('loss')}`, grad-ckpt {s.get('grad_ckpt')}",
             f"- LoRA: r={s.get('lora', {}).get('rank')} on {s.get('lora', {}).get('matched_modules')} modules "
             f"(scope {s.get('lora', {}).get('scope')}); trainable {s.get('trainable_params'):,} of "
             f"{s.get('total_params'):,} parameters" if s.get("trainable_params") else "- LoRA: ?",
             f"- adapter tensors by dtype: {adapter_dtypes(results / 'finetune' / 'adapter')}",
             f"- steps: {s.get('steps_done')}/{s.get('total_steps')} (batch {s.get('batch_size')} × accumulation "
             f"{s.get('grad_accum')}); resumed from step {s.get('resumed_from_step')}"
             + (f" — log: resuming from step {resumed[-1][0]}/{resumed[-1][1]}" if resumed else ""),
             f"- loss.jsonl: {len(losses)} lines, steps {steps[0] if steps else '-'}…{steps[-1] if steps else '-'}, "
             f"contiguous: {steps == list(range(1, len(steps) + 1))}; all finite: {finite}; "
             f"first {s.get('first_loss')} → final {s.get('final_loss')}",
             f"- speed {s.get('samples_per_s')} samples/s; peak GPU memory {s.get('peak_gpu_mem_gib')} GiB; "
             f"train {s.get('train_seconds')} s, stage wall {s.get('wall_seconds')} s"]
    if with_eval:
        for which in ("base", "finetuned"):
            m = _read(results / "eval" / which / "metrics.json")
            if m is None:
                lines.append(f"- eval {which}: MISSING")
                continue
            lines.append(f"- eval {which}: n={m.get('n')}, exact match {m.get('exact_match')}, "
                         f"ROUGE-L f {m.get('rougeL', {}).get('f')}, ROUGE-1 f {m.get('rouge1', {}).get('f')}")
        es = _read(results / "eval" / "summary.json") or {}
        lines.append(f"- eval timing: {es.get('seconds')} s, {es.get('questions_per_s')} questions/s "
                     f"(batch {es.get('batch_size')}, ≤{es.get('max_new_tokens')} new tokens; base weights "
                     f"{es.get('quantization')}, compute {es.get('compute_dtype')})")
        samples = _read(results / "eval" / "samples.json")
        lines.append(f"- eval/samples.json: {len(samples) if isinstance(samples, list) else samples and len(samples.get('ids', []))} ids")
    lines.append("- random weights: the loss and metrics prove the code path, not PaliGemma's quality.")
    return "\n".join(l for l in lines if l) + "\n\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--results", type=Path, default=ROOT / "results")
    ap.add_argument("--append", action="store_true")
    ap.add_argument("--no-eval", action="store_true")
    ap.add_argument("--log", type=Path, default=None)
    ap.add_argument("--cmd", default="")
    args = ap.parse_args(argv)
    log_text = args.log.read_text(errors="replace") if args.log and args.log.exists() else ""
    text = section(args.run, args.results, not args.no_eval, log_text, args.cmd)
    if not args.append or not args.out.exists():
        text = ("# Paper path on a GPU — random-weight PaliGemma-3B (real architecture), synthetic data\n\n"
                "Made by `bench/gpu_run.sh` (see bench/README.md).\n\n") + text
    with open(args.out, "a" if args.append else "w", encoding="utf-8") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
