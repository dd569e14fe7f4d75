"""What the templates read besides `case` (cases.py): the results, the manifests' provenance, the assignment's
questions and the Persian words of the derivations. Built from results files only, never from another stage's
Python code; what each key holds is listed in templates/README.md.
"""
from __future__ import annotations

import re
import sys
from collections import Counter
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any

from .. import contract
from ..contract.facts import QTYPES, normalize_for_scoring
from ..errors import MissingResultError
from ..stages import COMPUTE_STAGES
from .checks import Finding, lint_template_source
from .templating import Raw

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


# ------------------------------------------------------------------------------------------------ results

def split_counts(rows: list[dict]) -> dict[str, int]:
    """Questions per question type (every CLEVR type present, 0 when absent), plus `total`."""
    c = Counter(r["qtype"] for r in rows)
    out = {t: c.get(t, 0) for t in QTYPES}
    out.update({t: n for t, n in c.items() if t not in out})  # a type outside the standard list still shows
    out["total"] = len(rows)
    return out


def _samples(read: Any, test_rows: list[dict], preds: dict[str, dict[str, dict]]) -> dict[str, Any]:
    """The shown samples (eval/samples.json ids) with the question, the answer and both models' predictions."""
    raw = read("eval/samples.json")
    tables = {"data/test.jsonl": {r["id"]: r for r in test_rows},
              **{f"eval/{m}/predictions.jsonl": preds[m] for m in ("base", "finetuned")}}
    samples = []
    for i, sid in enumerate(raw["ids"], 1):
        for where, table in tables.items():
            if sid not in table:
                raise MissingResultError(f"sample id {sid} of results/eval/samples.json is not in results/{where}: "
                                         "data and eval are out of step; rerun `python build.py eval --force eval`")
        row, base, fine = tables["data/test.jsonl"][sid], preds["base"][sid], preds["finetuned"][sid]
        answer = normalize_for_scoring(row["answer"])
        samples.append({"index": i, "id": sid,
                        **{k: row[k] for k in ("image", "image_id", "qtype", "question", "answer")},
                        "base": base["prediction"], "finetuned": fine["prediction"],
                        "base_ok": normalize_for_scoring(base["prediction"]) == answer,
                        "finetuned_ok": normalize_for_scoring(fine["prediction"]) == answer})
    return {"samples": samples, "samples_seed": raw["seed"]}


def load_results(results_dir: Path) -> dict[str, Any]:
    """results/* read through the results contract (every file validated against its model: a missing or
    malformed file is one line naming it and the command that makes it) into plain dicts and lists."""
    def read(rel: str) -> Any:
        return contract.read_plain(Path(results_dir), rel)

    train, test = read("data/train.jsonl"), read("data/test.jsonl")
    data = {"stats": read("data/stats.json"), "manifest": read("data/manifest.json"), "train": train, "test": test,
            "counts": {"train": split_counts(train), "test": split_counts(test)},
            "images": {"train": len({r["image_id"] for r in train}), "test": len({r["image_id"] for r in test})},
            "qtypes": [t for t in split_counts(train + test) if t != "total"]}
    summary = read("finetune/summary.json")
    finetune = {"summary": summary, "loss": read("finetune/loss.jsonl"),
                "heldout": read("finetune/heldout.jsonl") if summary.get("heldout") else [],
                "manifest": read("finetune/manifest.json")}
    ev: dict[str, Any] = {"manifest": read("eval/manifest.json")}
    preds = {}
    for model in ("base", "finetuned"):
        rows = read(f"eval/{model}/predictions.jsonl")
        preds[model] = {r["id"]: r for r in rows}
        ev[model] = {"metrics": read(f"eval/{model}/metrics.json")}
    ev["summary"] = read("eval/summary.json")
    ev["baseline"] = {"metrics": read("eval/baseline/metrics.json")}  # majority answer per question type
    ev["analysis"] = read("eval/analysis.json")  # answer distributions, truncation, paired differences
    ev.update(_samples(read, test, preds))
    return {
        "data": data, "finetune": finetune, "eval": ev,
        # a disabled ablation still writes its file (no runs, its time estimate)
        "ablation": {**read("ablation/ablation.json"), "manifest": read("ablation/manifest.json")},
        "memory": read("memory/memory.json"), "memory_manifest": read("memory/manifest.json"),
        "derive": {"derivations": read("derive/derivations.json"), "manifest": read("derive/manifest.json")},
        "flow": {"experiment": read("flow/experiment.json"), "manifest": read("flow/manifest.json")},
    }


def manifests_of(r: dict[str, Any]) -> dict[str, dict]:
    return {s: r["memory_manifest"] if s == "memory" else r[s]["manifest"] for s in COMPUTE_STAGES}


def config_dict(section: Any) -> dict[str, Any]:
    return asdict(section) if is_dataclass(section) else dict(section)


# ------------------------------------------------------------------------------------------------ provenance

def _toml_value(v: Any) -> str:
    if v is None:
        return '""  # none'
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def config_toml(config: dict[str, dict]) -> str:
    """A manifest's `config` ({section: {key: value}}) written as TOML, as the user would set it."""
    lines = []
    for section, values in config.items():
        lines += [f"[{section}]", *(f"{k} = {_toml_value(v)}" for k, v in (values or {}).items()), ""]
    return "\n".join(lines).strip() or "# (no configuration)"


def provenance_rows(manifests: dict[str, dict]) -> list[dict]:
    """One row per stage; `config_sections` cuts its configuration into `[section]` tables, each set as one
    unbreakable listing (a stage's configuration may continue in the next column, never inside a table)."""
    rows = []
    for stage, m in manifests.items():
        hw = m.get("hardware") or {}
        hardware = hw.get("cpu") or "?"
        if hw.get("gpu"):
            hardware = f"{hw['gpu']} ({hw.get('gpu_mem') or '?'}); {hardware}"
        config = m.get("config") or {}
        rows.append({"stage": stage, "profile": str(m.get("profile", "?")), "seconds": float(m.get("seconds", 0.0)),
                     "finished": str(m.get("finished", "?")), "code_version": str(m.get("code_version", "?"))[:19],
                     "cache_key": str(m.get("cache_key", "?"))[:16], "hardware": hardware,
                     "config_toml": config_toml(config),
                     "config_sections": [config_toml({s: v}) for s, v in config.items()] or [config_toml({})]})
    return rows


def package_rows(manifests: dict[str, dict]) -> list[tuple[str, str]]:
    """(package, version) over all stages; a package whose version differs between stages lists each."""
    versions: dict[str, dict[str, list[str]]] = {}
    for stage, m in manifests.items():
        for name, version in (m.get("packages") or {}).items():
            if version:
                versions.setdefault(name, {}).setdefault(str(version), []).append(stage)
    return [(name, next(iter(by_version)) if len(by_version) == 1 else
             "; ".join(f"{v} ({', '.join(s)})" for v, s in sorted(by_version.items())))
            for name, by_version in sorted(versions.items())]


# ------------------------------------------------------------------------------------------------ coverage

@dataclass(frozen=True)
class Question:
    id: str  # "1.4.2": question 1, part 4, item 2 (question 2's parts have no items: "2.3")
    points: float  # as the assignment gives them
    section: str  # the templates/sections/<name>.typ.j2 that answers it, with a heading labelled `<q:ID>`

    @property
    def label(self) -> str:
        return f"q:{self.id}"


# The assignment's questions in its order, with its points. Question 2, part 2 prints "(د) نمره" in the extracted
# assignment text (a garbled «۵»: every other item of question 2 is worth ۵).
QUESTIONS: tuple[Question, ...] = (
    Question("1.1.1", 2.5, "q1_1_vlm"), Question("1.1.2", 2.5, "q1_1_vlm"),
    Question("1.2.1", 5, "q1_2_siglip"), Question("1.2.2", 5, "q1_2_siglip"),
    Question("1.3.1", 6, "q1_3_pretraining"), Question("1.3.2", 4, "q1_3_pretraining"),
    Question("1.3.3", 5, "q1_3_pretraining"),
    Question("1.4.1", 5, "q1_4_transfer"), Question("1.4.2", 5, "q1_4_transfer"),
    Question("1.4.3", 10, "q1_4_transfer"),
    Question("1.5.1", 20, "q1_5_implementation"), Question("1.5.2", 10, "q1_5_implementation"),
    Question("1.5.3", 7, "q1_5_implementation"), Question("1.5.4", 3, "q1_5_implementation"),
    Question("2.1", 5, "q2_flow"), Question("2.2", 5, "q2_flow"), Question("2.3", 5, "q2_flow"),
)
# The prose files of templates/sections/, in the assignment's order.
SECTIONS = tuple(dict.fromkeys(q.section for q in QUESTIONS))
_HEADING_LABEL = re.compile(r"^=+ .*<(q:[0-9.]+)>\s*$")


def heading_labels(source: str) -> list[str]:
    """The `<q:…>` labels that sit at the end of a heading line of a template."""
    return [m.group(1) for line in source.splitlines() if (m := _HEADING_LABEL.match(line))]


def answered(templates: Path) -> dict[str, bool]:
    """Question id → whether its section template exists and has a heading labelled for it."""
    paths = {section: templates / "sections" / f"{section}.typ.j2" for section in SECTIONS}
    labels = {s: heading_labels(p.read_text(encoding="utf-8")) if p.is_file() else [] for s, p in paths.items()}
    return {q.id: q.label in labels[q.section] for q in QUESTIONS}


def coverage_rows(templates: Path) -> list[dict]:
    """The coverage table's rows (the supplement resolves their sections and pages from the labels): {id, label,
    points, answered, question, part, item (None for question 2's parts), first (the first of its question)}."""
    done = answered(templates)
    out, seen = [], set()
    for q in QUESTIONS:
        numbers = [int(x) for x in q.id.split(".")]
        out.append({"id": q.id, "label": q.label, "points": q.points, "answered": done[q.id],
                    "question": numbers[0], "part": numbers[1], "item": numbers[2] if len(numbers) > 2 else None,
                    "first": numbers[0] not in seen})
        seen.add(numbers[0])
    return out


# ------------------------------------------------------------------------------------------------ derivation words

# One table per record of results/derive/derivations.json: `title`, `steps` (one note per step of `steps_typst`),
# `method` and `assumptions` (one text per assumption). Each string is Typst markup and a Jinja template rendered
# with `d` = the record, so a note that quotes a number takes it from the record. Editing these words re-renders
# the report only; no compute stage hashes them.
WORDS_FILE = "results/derivations_fa.toml"
SEPARATOR = "\u241e"  # ␞: never in the prose; one template per record instead of one per string (faster)


def load_derivation_words(templates_dir: Path) -> dict[str, dict[str, Any]]:
    with open(Path(templates_dir) / WORDS_FILE, "rb") as f:
        return tomllib.load(f)


def derivation_findings(texts: dict[str, dict[str, Any]], records: list[dict[str, Any]]) -> list[Finding]:
    """The template lint (typed numbers, TODO) over every string, then a finding for every record without
    words, words without a record, and a count of notes that differs from the record's."""
    where = f"templates/{WORDS_FILE}"
    out = [f for name, t in texts.items() for key, value in t.items()
           for i, s in enumerate(value if isinstance(value, list) else [value])
           for f in lint_template_source(f"{where} [{name}].{key}[{i}]", s)]
    for name in sorted(set(texts) - {r["name"] for r in records}):
        out.append(Finding("derivation-text", where, f"[{name}] has no record in results/derive/derivations.json"))
    for r in records:
        t = texts.get(r["name"])
        if t is None:
            out.append(Finding("derivation-text", where, f"no [{r['name']}] table: the record has no Persian words"))
            continue
        missing = [k for k in ("title", "steps", "method") if k not in t]
        if missing:
            out.append(Finding("derivation-text", where, f"[{r['name']}] lacks {', '.join(missing)}"))
        for key, expected in (("steps", len(r["steps_typst"])), ("assumptions", len(r["assumptions"]))):
            if len(t.get(key, [])) != expected:
                out.append(Finding("derivation-text", where,
                                   f"[{r['name']}] has {len(t.get(key, []))} {key} but the record has {expected}"))
    return out


def render_derivations(env: Any, texts: dict[str, dict[str, Any]], records: list[dict[str, Any]]
                       ) -> dict[str, dict[str, Any]]:
    """name → {title, steps, method, assumptions} as trusted Typst markup, each string rendered with d = record."""
    out = {}
    for r in records:
        t = texts[r["name"]]
        strings = [t["title"], t["method"], *t["steps"], *t.get("assumptions", [])]
        parts = [Raw(x) for x in str(env.from_string(SEPARATOR.join(strings)).render(d=r)).split(SEPARATOR)]
        n = len(t["steps"])
        out[r["name"]] = {"title": parts[0], "method": parts[1], "steps": parts[2:2 + n], "assumptions": parts[2 + n:]}
    return out
