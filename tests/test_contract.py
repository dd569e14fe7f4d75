"""The results contract: the committed fixture (a real demo run, trimmed by tests/fixtures/make_results_fixture.py)
fits every model, nothing in it lies outside the contract, and a file that drifts from its model — an extra,
missing or mistyped field — is refused with one line naming the file, the field and the stage to rerun, before
anything is written."""
from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from tamrin import contract
from tamrin.errors import MissingResultError
from tamrin.stages import COMPUTE_STAGES

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "results"
# Every results file the contract names: each stage's FILES, and its manifest.
CONTRACT_FILES = {rel for s in COMPUTE_STAGES
                  for rel in [*importlib.import_module(f"tamrin.contract.{s}").FILES, f"{s}/manifest.json"]}


def _results_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.suffix in (".json", ".jsonl")}


def test_every_fixture_file_fits_its_model_and_every_model_has_a_file():
    assert _results_files(FIXTURE) == CONTRACT_FILES, "the fixture and the contract list different files"
    for rel in CONTRACT_FILES:
        contract.read(FIXTURE, rel)  # raises MissingResultError naming the field that drifted


def test_the_fixture_is_a_real_demo_run_of_this_contract():
    manifests = {s: contract.read(FIXTURE, f"{s}/manifest.json") for s in COMPUTE_STAGES}
    assert {m.profile for m in manifests.values()} == {"demo"}
    assert manifests["eval"].inputs["finetune"] == manifests["finetune"].cache_key
    # every file a manifest lists was really written by that stage (the fixture keeps the ones the report reads)
    for stage, m in manifests.items():
        for rel in _results_files(FIXTURE / stage) - {"manifest.json"}:
            assert rel in m.files, (stage, rel)


@pytest.mark.parametrize("change, field", [
    (lambda d: d.update(unexpected=1), "unexpected"),
    (lambda d: d.pop("exact_match"), "exact_match"),
    (lambda d: d["rougeL"].update(f="high"), "rougeL.f"),
])
def test_a_drifted_file_is_one_line_naming_file_field_and_stage(tmp_path, change, field):
    rel = "eval/base/metrics.json"
    data = json.loads((FIXTURE / rel).read_text(encoding="utf-8"))
    change(data)
    (tmp_path / "eval" / "base").mkdir(parents=True)
    (tmp_path / rel).write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(MissingResultError) as e:
        contract.read(tmp_path, rel)
    msg = str(e.value)
    assert "\n" not in msg and f"results/{rel}" in msg and field in msg and "python build.py eval --force eval" in msg


def test_write_validates_before_touching_the_disk(tmp_path):
    good = json.loads((FIXTURE / "eval" / "samples.json").read_text(encoding="utf-8"))
    contract.write(tmp_path, "eval/samples.json", good)
    assert json.loads((tmp_path / "samples.json").read_text(encoding="utf-8")) == good
    with pytest.raises(MissingResultError, match="seed"):
        contract.write(tmp_path / "other", "eval/samples.json", {**good, "seed": "zero"})
    assert not (tmp_path / "other").exists()


def test_jsonl_and_list_files_round_trip(tmp_path):
    for rel in ("finetune/loss.jsonl", "derive/derivations.json"):
        objs = contract.read(FIXTURE, rel)
        contract.write(tmp_path / rel.split("/")[0], rel, objs)
        assert contract.read(tmp_path, rel) == objs


def test_a_missing_file_names_the_command_that_makes_it(tmp_path):
    with pytest.raises(MissingResultError, match=r"missing results/memory/memory.json: run `python build.py memory`"):
        contract.read(tmp_path, "memory/memory.json")
