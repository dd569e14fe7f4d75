"""The results contract: one typed model per results file (`models`), the facts every stage shares (`facts`:
CLEVR question types, answer vocabulary and normalisation; `persian`: digits and number formatting; `secrets`:
tokens and identity), and the functions stages write and the report and the zip read through.

`FILES` maps each results file (relative to results/) to its model; `.jsonl` files hold one model per line and
`derive/derivations.json` a list of records. Writing validates before anything touches the disk (atomically), and
reading a file that does not fit its model is one clear line naming the file, the field and the stage to rerun.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from ..atomic import write_text
from ..errors import MissingResultError
from . import models as m

T = TypeVar("T", bound=BaseModel)

# results file (relative to results/) -> model; a `list` marks a JSON list of that model, jsonl one per line
FILES: dict[str, Any] = {
    "data/stats.json": m.DataStats,
    "data/train.jsonl": m.QuestionRow,
    "data/test.jsonl": m.QuestionRow,
    "finetune/summary.json": m.FinetuneSummary,
    "finetune/loss.jsonl": m.LossRow,
    "finetune/heldout.jsonl": m.HeldoutRow,
    "eval/base/metrics.json": m.EvalMetrics,
    "eval/finetuned/metrics.json": m.EvalMetrics,
    "eval/base/predictions.jsonl": m.Prediction,
    "eval/finetuned/predictions.jsonl": m.Prediction,
    "eval/samples.json": m.Samples,
    "eval/summary.json": m.EvalSummary,
    "ablation/ablation.json": m.Ablation,
    "memory/memory.json": m.Memory,
    "derive/derivations.json": list[m.Derivation],
    "flow/experiment.json": m.Experiment,
}
MANIFEST_STAGES = ("data", "finetune", "eval", "ablation", "memory", "derive", "flow")
FILES.update({f"{s}/manifest.json": m.Manifest for s in MANIFEST_STAGES})


def model_of(rel: str) -> Any:
    """The model of a results file, by its path relative to results/ (KeyError for a file outside the contract)."""
    return FILES[rel]


def _stage(rel: str) -> str:
    return rel.split("/", 1)[0]


def _problem(rel: str, err: ValidationError) -> MissingResultError:
    first = err.errors()[0]
    where = ".".join(str(x) for x in first["loc"]) or "(top level)"
    stage = _stage(rel)
    return MissingResultError(f"results/{rel} does not fit the results contract ({where}: {first['msg']}): it was "
                              f"written by another version of Tamrin; rerun `python build.py {stage} --force {stage}`")


def dump(obj: Any) -> Any:
    """Plain JSON data of a model, a list of models, or plain data (unchanged)."""
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    if isinstance(obj, list):
        return [dump(x) for x in obj]
    return obj


def validate(rel: str, data: Any) -> Any:
    """`data` (plain JSON) as the model of `rel`; a list for list/jsonl files. Raises MissingResultError."""
    model = model_of(rel)
    try:
        if rel.endswith(".jsonl"):
            return [model.model_validate(row) for row in data]
        if getattr(model, "__origin__", None) is list:
            return TypeAdapter(model).validate_python(data)
        return model.model_validate(data)
    except ValidationError as e:
        raise _problem(rel, e) from None


def write(results_stage_dir: Path, rel: str, obj: Any, dumps: Callable[[Any], str] | None = None) -> None:
    """Validate `obj` (a model, a list of models or plain data) as the model of `rel` and write it atomically to
    `results_stage_dir / <rel without its stage folder>` (a stage writes into its staging folder). `dumps` turns
    the data into text (default: indented JSON; JSON lines for .jsonl)."""
    data = dump(obj)
    validate(rel, data)
    path = Path(results_stage_dir) / rel.split("/", 1)[1]
    if dumps is not None:
        write_text(path, dumps(data))
    elif rel.endswith(".jsonl"):
        write_text(path, "".join(json_line(row) for row in data))
    else:
        write_text(path, json.dumps(data, ensure_ascii=False, indent=2) + "\n")


def json_line(row: Any) -> str:
    """One line of a .jsonl results file."""
    return json.dumps(dump(row), ensure_ascii=False) + "\n"


def read(results: Path, rel: str) -> Any:
    """The model(s) of results/<rel>; a missing, unreadable or non-conforming file is one clear line."""
    path = Path(results) / rel
    stage = _stage(rel)
    if not path.is_file():
        raise MissingResultError(f"missing results/{rel}: run `python build.py {stage}` (or `python build.py all`) "
                                 "to make it")
    text = path.read_text(encoding="utf-8")
    try:
        if rel.endswith(".jsonl"):
            data = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            data = json.loads(text)
    except json.JSONDecodeError as e:
        raise MissingResultError(f"results/{rel} is not valid JSON ({e}); rerun `python build.py {stage} "
                                 f"--force {stage}`") from None
    return validate(rel, data)


def read_plain(results: Path, rel: str) -> Any:
    """The validated contents of results/<rel> as plain JSON data (what templates index into)."""
    return dump(read(results, rel))


def rows(objs: Iterable[BaseModel]) -> list[dict[str, Any]]:
    return [o.model_dump(mode="json") for o in objs]
