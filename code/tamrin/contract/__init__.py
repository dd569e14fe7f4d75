"""The results contract: one typed model per results file, in one module per stage (`contract.data`, …, each with its
`FILES`: path under results/ → model; `contract.manifest` for every manifest.json), the facts stages share (`facts`,
`persian`), and the functions stages write and the report and the zip read through. Every model forbids unknown
fields, so a writer that adds, renames or drops one fails until the contract says so (and tests/test_contract.py, when
the committed fixture, a real demo run, drifts). Writing validates before touching the disk; a file that does not fit
is one line naming the file, the field and the stage to rerun. Files hold numbers, identifiers and Typst math; the
words live in the templates.

A stage's models are looked up by name (`model_of`), not imported here: importing this package must not bring every
stage's models into every stage's cache key. The runner adds a stage's own module (`contract.<stage>`) to its key.
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from ..atomic import write_text
from ..errors import MissingResultError

Profile = Literal["paper", "demo"]
MANIFEST = "manifest.json"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def model_of(rel: str) -> Any:
    """The model of a results file, by its path relative to results/ (KeyError for a file outside the contract)."""
    stage, _, name = rel.partition("/")
    try:
        files = getattr(importlib.import_module(f"{__name__}.{stage}"), "FILES", None) if stage.isidentifier() else None
    except ModuleNotFoundError:
        files = None
    if files is None:
        raise KeyError(rel)
    return importlib.import_module(f"{__name__}.manifest").Manifest if name == MANIFEST else files[rel]


def dump(obj: Any) -> Any:
    """Plain JSON data of a model, a list of models, or plain data (unchanged)."""
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    return [dump(x) for x in obj] if isinstance(obj, list) else obj


def validate(rel: str, data: Any) -> Any:
    """`data` (plain JSON) as the model of `rel`; a list for list/jsonl files. Raises MissingResultError."""
    model = model_of(rel)
    try:
        return TypeAdapter(list[model] if rel.endswith(".jsonl") else model).validate_python(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "(top level)"
        stage = rel.split("/", 1)[0]
        raise MissingResultError(f"results/{rel} does not fit the results contract ({where}: {first['msg']}): it was "
                                 f"written by another version of Tamrin; rerun `python build.py {stage} --force "
                                 f"{stage}`") from None


def json_line(row: Any) -> str:
    """One line of a .jsonl results file."""
    return json.dumps(dump(row), ensure_ascii=False) + "\n"


def write(results_stage_dir: Path, rel: str, obj: Any, dumps: Callable[[Any], str] | None = None) -> None:
    """Validate `obj` (a model, a list of models or plain data) as the model of `rel` and write it atomically to
    `results_stage_dir / <rel without its stage folder>` (a stage writes into its staging folder). `dumps` turns
    the data into text (default: indented JSON; JSON lines for .jsonl)."""
    data = dump(obj)
    validate(rel, data)
    if dumps is not None:
        text = dumps(data)
    elif rel.endswith(".jsonl"):
        text = "".join(json_line(row) for row in data)
    else:
        text = json.dumps(data, ensure_ascii=False, indent=2) + "\n"
    write_text(Path(results_stage_dir) / rel.split("/", 1)[1], text)


def read(results: Path, rel: str) -> Any:
    """The model(s) of results/<rel>; a missing, unreadable or non-conforming file is one clear line."""
    path, stage = Path(results) / rel, rel.split("/", 1)[0]
    if not path.is_file():
        raise MissingResultError(f"missing results/{rel}: run `python build.py {stage}` (or `python build.py all`) "
                                 "to make it")
    text = path.read_text(encoding="utf-8")
    try:
        data = [json.loads(line) for line in text.splitlines() if line.strip()] if rel.endswith(".jsonl") \
            else json.loads(text)
    except json.JSONDecodeError as e:
        raise MissingResultError(f"results/{rel} is not valid JSON ({e}); rerun `python build.py {stage} "
                                 f"--force {stage}`") from None
    return validate(rel, data)


def read_plain(results: Path, rel: str) -> Any:
    """The validated contents of results/<rel> as plain JSON data (what templates index into)."""
    return dump(read(results, rel))
