"""`finetune` then `eval` through the real stage runner on the fixture data (the demo profile's code path):
the loss falls, both evaluations run, the fine-tuned model beats the base, every results file of
DESIGN.md is written, and a second run is a cache hit."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures"))
from vlm_support import DATA, data_manifest, one_thread, tiny_base  # noqa: E402

from tamrin.atomic import read_jsonl  # noqa: E402
from tamrin.config import load_config  # noqa: E402
from tamrin.runner import Paths, run_stage  # noqa: E402

SMALL = ["train.max_steps=40", "train.save_every=20", "eval.batch_size=8", "eval.bootstrap=200"]


def _paths_with_data(root: Path) -> Paths:
    paths = Paths(root=root)
    data = paths.stage_dir("data")
    shutil.copytree(DATA, data, ignore=shutil.ignore_patterns("make.py"))
    data_manifest(data / "manifest.json")
    return paths


def test_pretrained_kind_from_a_local_folder(tmp_path):
    """The paper profile's path (`model.kind = pretrained`, `model.id` a folder as for the GPU proof with a
    random 3B checkpoint): the adapter's base is `model.id`, and eval loads that same base."""
    paths = _paths_with_data(tmp_path)
    base = tiny_base()
    cfg = load_config("paper", overrides=["model.kind=pretrained", f"model.id={base}", "model.quantization=auto",
                                          "train.max_steps=3", "train.batch_size=8", "train.grad_accum=1",
                                          "train.num_workers=0", "eval.max_examples=8", "eval.bootstrap=50"])
    with one_thread():
        run_stage("finetune", cfg, paths)
        run_stage("eval", cfg, paths)
    fdir = paths.stage_dir("finetune")
    summary = json.loads((fdir / "summary.json").read_text())
    assert summary["base_model"] == str(base) and not (fdir / "base_model").exists()
    assert json.loads((fdir / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"] == str(base)
    assert json.loads((paths.stage_dir("eval") / "summary.json").read_text())["base_model"] == str(base)
    assert json.loads((paths.stage_dir("eval") / "finetuned" / "metrics.json").read_text())["n"] == 8


def test_finetune_and_eval_stages(tmp_path):
    paths = _paths_with_data(tmp_path)
    cfg = load_config("demo", overrides=SMALL)
    with one_thread():
        ft = run_stage("finetune", cfg, paths)
        ev = run_stage("eval", cfg, paths)
    assert ft.status == ev.status == "ran"

    fdir = paths.stage_dir("finetune")
    losses = read_jsonl(fdir / "loss.jsonl")
    assert [r["step"] for r in losses] == list(range(1, 41))
    assert sum(r["loss"] for r in losses[-5:]) < 0.6 * sum(r["loss"] for r in losses[:5])
    summary = json.loads((fdir / "summary.json").read_text())
    for key in ("trainable_params", "total_params", "peak_gpu_mem_gib", "peak_cpu_rss_mib", "samples_per_s",
                "wall_seconds", "lora", "quantization", "compute_dtype"):
        assert key in summary
    assert summary["lora"]["scope"] == "language_model" and summary["lora"]["matched_modules"] > 0
    assert (fdir / "adapter" / "adapter_model.safetensors").exists() and (fdir / "manifest.json").exists()
    adapter_cfg = json.loads((fdir / "adapter" / "adapter_config.json").read_text())
    assert (fdir / "adapter" / adapter_cfg["base_model_name_or_path"] / "config.json").exists()
    assert not paths.work_dir("finetune").exists() or not any(paths.work_dir("finetune").rglob("ckpt-*"))

    edir = paths.stage_dir("eval")
    test_ids = [r["id"] for r in read_jsonl(DATA / "test.jsonl")]
    metrics = {}
    for name in ("base", "finetuned"):
        preds = read_jsonl(edir / name / "predictions.jsonl")
        assert [p["id"] for p in preds] == test_ids  # the same test set for both
        assert set(preds[0]) == {"id", "question", "answer", "prediction", "qtype"}
        m = json.loads((edir / name / "metrics.json").read_text())
        assert m["n"] == len(test_ids)
        for t in ("rouge1", "rouge2", "rougeL"):
            assert set(m[t]) == {"f", "p", "r", "ci_low", "ci_high"}
        assert set(m["per_qtype"]) == {"exist", "count", "query_color", "query_shape"}
        metrics[name] = m
    assert metrics["finetuned"]["exact_match"] > metrics["base"]["exact_match"]
    baseline = read_jsonl(edir / "baseline" / "predictions.jsonl")  # the majority answer of each type
    assert [p["id"] for p in baseline] == test_ids
    assert len({(p["qtype"], p["prediction"]) for p in baseline}) == len({p["qtype"] for p in baseline})
    analysis = json.loads((edir / "analysis.json").read_text())
    assert set(analysis["models"]) == {"base", "finetuned", "baseline"}
    assert analysis["models"]["baseline"]["truncation"] is None
    assert analysis["models"]["base"]["truncation"]["n"] == len(test_ids)
    assert [(c["a"], c["b"]) for c in analysis["comparisons"]][0] == ("finetuned", "base")
    assert metrics["finetuned"]["rougeL"]["f"] > metrics["base"]["rougeL"]["f"]
    samples = json.loads((edir / "samples.json").read_text())
    assert len(samples["ids"]) == 10 and set(samples["ids"]) <= set(test_ids)
    assert {"base", "finetuned", "image", "question", "answer"} <= set(samples["samples"][0])

    with one_thread():
        assert run_stage("finetune", cfg, paths).status == "cached"
        assert run_stage("eval", cfg, paths).status == "cached"
