"""Compare doctor's fine-tuning estimate with the real finetune wall time (issue 14's acceptance: within ±25%).

    python bench/estimate_vs_run.py --out bench/results/estimate_vs_run_<device>.json

Reads results/.work/doctor/estimate.json (written by `build.py doctor`) and results/finetune/manifest.json (the
stage's wall time) — run doctor, then `build.py finetune --force finetune` with the same settings, then this.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", type=Path, default=Path(os.environ.get("TAMRIN_RESULTS_DIR") or ROOT / "results"))
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    est = json.loads((args.results / ".work" / "doctor" / "estimate.json").read_text())
    man = json.loads((args.results / "finetune" / "manifest.json").read_text())
    summary = json.loads((args.results / "finetune" / "summary.json").read_text())
    predicted, real = est["seconds"]["finetune"], man["seconds"]
    out = {"predicted_finetune_seconds": round(predicted, 1), "real_finetune_seconds": real,
           "ratio_real_over_predicted": round(real / predicted, 3), "within_25_percent": abs(real / predicted - 1) <= 0.25,
           "doctor": est, "finetune": {k: summary.get(k) for k in ("device", "steps_done", "total_steps", "batch_size",
                                                                   "grad_accum", "compute_dtype", "train_seconds",
                                                                   "wall_seconds")}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in out.items() if k not in ("doctor", "finetune")}, indent=2))
    return 0 if out["within_25_percent"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
