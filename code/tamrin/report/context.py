"""The template context, built from results files only (never from another stage's Python code).

`load_results(results_dir)` reads results/* through the results contract (`tamrin.contract`: every file validated
against its model) into plain dicts and lists; `build_context` adds the student
and report configuration, the demo flag, manifests and the figure paths. What each key holds is listed in
templates/README.md (the contract with the prose templates).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from .. import contract
from ..contract.facts import QTYPES, normalize_for_scoring
from ..errors import MissingResultError


class Results:
    """Reads results files through the results contract: a missing file, or one that does not fit its model, is
    one clear line naming the file and the command that makes it."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def json(self, rel: str) -> Any:
        """The validated contents of results/<rel> as plain data (a list of rows for a .jsonl file)."""
        return contract.read_plain(self.root, rel)

    jsonl = json


def split_counts(rows: list[dict]) -> dict[str, int]:
    """Questions per question type (every CLEVR type present, 0 when absent), plus `total`."""
    c = Counter(r["qtype"] for r in rows)
    out = {t: c.get(t, 0) for t in QTYPES}
    out.update({t: n for t, n in c.items() if t not in out})  # a type outside the standard list still shows
    out["total"] = len(rows)
    return out


def _by_id(rows: list[dict]) -> dict[str, dict]:
    return {r["id"]: r for r in rows}


def load_data(res: Results) -> dict[str, Any]:
    train, test = res.jsonl("data/train.jsonl"), res.jsonl("data/test.jsonl")
    return {
        "stats": res.json("data/stats.json"),
        "manifest": res.json("data/manifest.json"),
        "train": train,
        "test": test,
        "counts": {"train": split_counts(train), "test": split_counts(test)},
        "images": {"train": len({r["image_id"] for r in train}), "test": len({r["image_id"] for r in test})},
        "qtypes": [t for t in split_counts(train + test) if t != "total"],
    }


def load_finetune(res: Results) -> dict[str, Any]:
    summary = res.json("finetune/summary.json")
    return {"summary": summary, "loss": res.jsonl("finetune/loss.jsonl"),
            "heldout": res.jsonl("finetune/heldout.jsonl") if summary.get("heldout") else [],
            "manifest": res.json("finetune/manifest.json")}


def load_eval(res: Results, test_rows: list[dict]) -> dict[str, Any]:
    out: dict[str, Any] = {"manifest": res.json("eval/manifest.json")}
    preds = {}
    for model in ("base", "finetuned"):
        rows = res.jsonl(f"eval/{model}/predictions.jsonl")
        preds[model] = _by_id(rows)
        out[model] = {"metrics": res.json(f"eval/{model}/metrics.json"), "n_predictions": len(rows)}
    out["summary"] = res.json("eval/summary.json")
    out["baseline"] = {"metrics": res.json("eval/baseline/metrics.json")}  # majority answer per question type
    out["analysis"] = res.json("eval/analysis.json")  # answer distributions, truncation, paired differences
    raw = res.json("eval/samples.json")
    test = _by_id(test_rows)
    samples = []
    for i, sid in enumerate(raw["ids"], 1):
        for where, table in (("data/test.jsonl", test), ("eval/base/predictions.jsonl", preds["base"]),
                             ("eval/finetuned/predictions.jsonl", preds["finetuned"])):
            if sid not in table:
                raise MissingResultError(f"sample id {sid} of results/eval/samples.json is not in results/{where}: "
                                         "data and eval are out of step; rerun `python build.py eval --force eval`")
        row, base, fine = test[sid], preds["base"][sid], preds["finetuned"][sid]
        answer = normalize_for_scoring(row["answer"])
        samples.append({
            "index": i, "id": sid, "image": row["image"], "image_id": row["image_id"], "qtype": row["qtype"],
            "question": row["question"], "answer": row["answer"],
            "base": base["prediction"], "finetuned": fine["prediction"],
            "base_ok": normalize_for_scoring(base["prediction"]) == answer,
            "finetuned_ok": normalize_for_scoring(fine["prediction"]) == answer,
        })
    out["samples"] = samples
    out["samples_seed"] = raw["seed"]
    return out


def load_flow(res: Results) -> dict[str, Any]:
    return {"experiment": res.json("flow/experiment.json"), "manifest": res.json("flow/manifest.json")}


def load_derive(res: Results) -> dict[str, Any]:
    derivations = res.json("derive/derivations.json")
    return {"derivations": derivations, "derivation": {d["name"]: d for d in derivations},
            "manifest": res.json("derive/manifest.json")}


def load_ablation(res: Results) -> dict[str, Any]:
    """results/ablation/ablation.json (layout in code/tamrin/vlm/ablation.py) and its manifest; a disabled
    ablation still writes the file (no runs, its time estimate)."""
    return {**res.json("ablation/ablation.json"), "manifest": res.json("ablation/manifest.json")}


def load_results(results_dir: Path) -> dict[str, Any]:
    res = Results(results_dir)
    data = load_data(res)
    memory = res.json("memory/memory.json")
    return {
        "data": data,
        "finetune": load_finetune(res),
        "eval": load_eval(res, data["test"]),
        "ablation": load_ablation(res),
        "memory": memory,
        "memory_manifest": res.json("memory/manifest.json"),
        "derive": load_derive(res),
        "flow": load_flow(res),
    }


def manifests_of(r: dict[str, Any]) -> dict[str, dict]:
    return {"data": r["data"]["manifest"], "finetune": r["finetune"]["manifest"], "eval": r["eval"]["manifest"],
            "ablation": r["ablation"]["manifest"], "memory": r["memory_manifest"], "derive": r["derive"]["manifest"],
            "flow": r["flow"]["manifest"]}


def demo_stages(manifests: dict[str, dict]) -> list[str]:
    return [s for s, m in manifests.items() if m.get("profile") == "demo"]


def config_dict(section: Any) -> dict[str, Any]:
    return asdict(section) if is_dataclass(section) else dict(section)
