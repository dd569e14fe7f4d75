"""Inline views for the Colab/Kaggle notebook: the loss curve, the ROUGE table and the 10 samples.

They read only the files of results/ and figures/ (the results contract of DESIGN.md) and return plain
values — a path, an HTML string — so they work (and are tested) without IPython; the loss curve is the report's
own figure file, not a second drawing;
the notebook wraps them in `IPython.display`.
"""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from ..report.figures import LOSS_FIGURE

MODELS = (("base", "base PaliGemma"), ("finetuned", "fine-tuned (QLoRA)"))
ROUGE_KEYS = ("rouge1", "rouge2", "rougeL")


def _jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def loss_figure(figures: Path) -> Path:
    """The report's own loss figure (the file the report stage draws), or a clear error before the report ran."""
    path = figures / LOSS_FIGURE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the report draws it (run the build cell first)")
    return path


def _score(metric: Any) -> float | None:
    """An F-score whether the metric is stored as {f, p, r, …} or as a bare number."""
    if isinstance(metric, dict):
        metric = metric.get("f")
    return float(metric) if isinstance(metric, (int, float)) else None


def _ci(metric: Any) -> str:
    if isinstance(metric, dict) and metric.get("ci_low") is not None and metric.get("ci_high") is not None:
        return f" [{metric['ci_low']:.3f}, {metric['ci_high']:.3f}]"
    return ""


def rouge_rows(results: Path) -> list[dict[str, str]]:
    """One row per evaluated model: n, ROUGE-1/2/L F (with the 95% CI when stored), exact match."""
    rows = []
    for key, label in MODELS:
        path = results / "eval" / key / "metrics.json"
        if not path.is_file():
            continue
        m = json.loads(path.read_text(encoding="utf-8"))
        row = {"model": label, "n": str(m.get("n", "?"))}
        for k in ROUGE_KEYS:
            s = _score(m.get(k))
            row[k] = "–" if s is None else f"{s:.3f}{_ci(m.get(k))}"
        em = _score(m.get("exact_match"))
        row["exact match"] = "–" if em is None else f"{em:.3f}"
        rows.append(row)
    return rows


def table_html(rows: list[dict[str, str]]) -> str:
    if not rows:
        return "<p>no metrics in results/eval/ yet</p>"
    head = "".join(f"<th>{html.escape(k)}</th>" for k in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in r.values()) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def sample_ids(results: Path) -> list[str]:
    """The ids of results/eval/samples.json (a list of ids, of {id: …} rows, or {"ids": [...]})."""
    data = json.loads((results / "eval" / "samples.json").read_text(encoding="utf-8"))
    if isinstance(data, dict):
        data = data.get("ids") or data.get("samples") or []
    return [str(d["id"]) if isinstance(d, dict) else str(d) for d in data]


def samples(results: Path) -> list[dict[str, Any]]:
    """The report's samples: image path, question, reference answer, base and fine-tuned predictions."""
    ids = sample_ids(results)
    test = {str(r["id"]): r for r in _jsonl(results / "data" / "test.jsonl")}
    preds = {}
    for key, _ in MODELS:
        path = results / "eval" / key / "predictions.jsonl"
        preds[key] = {str(r["id"]): r.get("prediction", "") for r in _jsonl(path)} if path.is_file() else {}
    out = []
    for i in ids:
        row = test.get(i, {})
        image = row.get("image")
        out.append({"id": i, "image": results / "data" / image if image else None,
                    "question": row.get("question", ""), "answer": row.get("answer", ""),
                    "qtype": row.get("qtype", ""),
                    **{key: preds[key].get(i, "–") for key, _ in MODELS}})
    return out


def _img_tag(path: Path | None) -> str:
    if path is None or not Path(path).is_file():
        return "(image missing)"
    data = base64.b64encode(Path(path).read_bytes()).decode()
    mime = "jpeg" if Path(path).suffix.lower() in (".jpg", ".jpeg") else "png"
    return f'<img src="data:image/{mime};base64,{data}" width="160">'


def samples_html(results: Path) -> str:
    head = "<tr><th>#</th><th>image</th><th>question</th><th>answer</th><th>base</th><th>fine-tuned</th></tr>"
    body = "".join(
        f"<tr><td>{n}</td><td>{_img_tag(s['image'])}</td><td>{html.escape(str(s['question']))}</td>"
        f"<td>{html.escape(str(s['answer']))}</td><td>{html.escape(str(s['base']))}</td>"
        f"<td>{html.escape(str(s['finetuned']))}</td></tr>"
        for n, s in enumerate(samples(results), 1))
    return f"<table>{head}{body}</table>"
