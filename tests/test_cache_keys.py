"""Cache keys follow what can change results: comments, docstrings and message wording never re-run a stage; a
stage's key holds its own results models, not another stage's; finetune, eval and ablation keep their results when
only their code changed (saying which files and how to force them), unless [build] strict is on."""
from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import sys
from pathlib import Path

import pytest

from tamrin import cli, codehash, runner
from tamrin.config import load_config
from tamrin.runner import Paths, read_manifest, run_stage
from tamrin.stages import STAGES

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """A copy of code/tamrin that the hashing reads instead of the real one, to edit freely."""
    pkg = tmp_path / "code" / "tamrin"
    shutil.copytree(ROOT / "code" / "tamrin", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(codehash, "PACKAGE_DIR", pkg)
    monkeypatch.setattr(codehash, "ROOT", tmp_path)
    codehash._direct.cache_clear()
    yield pkg
    codehash._direct.cache_clear()


def _files(stage: str) -> dict[str, str]:
    codehash._direct.cache_clear()
    return runner.code_files(STAGES[stage], load_config("demo", root=ROOT))


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, (path, old)
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_finetune_imports_no_report_memory_stage_or_other_stages_models(checkout):
    files = set(_files("finetune"))
    assert "code/tamrin/vlm/finetune.py" in files and "code/tamrin/contract/finetune.py" in files
    assert "code/tamrin/vlm/footprint.py" in files  # the checkpointing estimate's arithmetic
    for name in ("vlm/memory_analysis.py", "contract/flow.py", "contract/eval.py", "contract/manifest.py",
                 "report/build.py"):
        assert f"code/tamrin/{name}" not in files, name


@pytest.mark.parametrize("rel", ["contract/__init__.py", "contract/flow.py", "contract/manifest.py", "errors.py",
                                 "vlm/memory_analysis.py", "report/build.py", "vlm/step.py"])
def test_a_comment_anywhere_leaves_finetune_cached(checkout, rel):
    """The issue's table: a comment line appended to each of these files re-ran finetune before."""
    before = _files("finetune")
    with open(checkout / rel, "a", encoding="utf-8") as f:
        f.write("\n# a comment a reader added\n")
    assert _files("finetune") == before


def test_message_wording_docstrings_and_other_stages_models_leave_finetune_cached(checkout):
    before = _files("finetune")
    _edit(checkout / "errors.py", "rate-limited this machine", "throttled this machine")
    _edit(checkout / "errors.py", "An error the user can act on.", "A problem the user can fix.")
    _edit(checkout / "vlm/finetune.py", '"""', '"""Reworded. ')
    _edit(checkout / "contract/flow.py", "    trained_runs: int\n", "    trained_runs: int\n    extra_field: int = 0\n")
    _edit(checkout / "vlm/memory_analysis.py", "def reconcile(", "def _unused() -> int:\n    return 1\n\n\ndef reconcile(")
    assert _files("finetune") == before


def test_an_edit_to_the_training_steps_logic_changes_finetunes_key_and_names_the_file(checkout):
    before = _files("finetune")
    path = checkout / "vlm" / "step.py"
    path.write_text(path.read_text(encoding="utf-8") + "\nSTEP_LOGIC_CHANGED = True\n", encoding="utf-8")
    after = _files("finetune")
    assert codehash.changed_files(before, after) == ["code/tamrin/vlm/step.py"]
    # A logic edit in a message module is not a wording edit: it counts.
    _edit(checkout / "errors.py", "code >= 500", "code >= 501")
    assert codehash.changed_files(after, _files("finetune")) == ["code/tamrin/errors.py"]


# ---------------------------------------------------------------- the policy for expensive stages

COMPUTE = ["data", "finetune", "eval", "ablation", "memory", "flow"]


@pytest.fixture
def fake_graph(monkeypatch):
    for name in COMPUTE:
        monkeypatch.setitem(STAGES, name, dataclasses.replace(STAGES[name], entry="fake_stages:write_config"))
    sys.path.insert(0, str(Path(__file__).parent))
    yield
    sys.path.remove(str(Path(__file__).parent))


def _root(tmp_path: Path) -> Path:
    root = tmp_path / "checkout"
    shutil.copytree(ROOT / "configs", root / "configs", ignore=shutil.ignore_patterns("student.toml"))
    return root


def _run_all(root: Path, overrides: list[str] = ()) -> dict[str, str]:
    cfg = load_config("demo", overrides=list(overrides), root=root)
    return {n: run_stage(n, cfg, Paths(root)).status for n in COMPUTE}


def _change_code(monkeypatch, stages: set[str], rel: str = "code/tamrin/vlm/step.py") -> None:
    """As if `rel`, which `stages` import, had a logic edit."""
    real = runner.code_files

    def edited(stage, cfg):
        files = real(stage, cfg)
        return {**files, rel: "edited"} if stage.name in stages else files

    monkeypatch.setattr(runner, "code_files", edited)


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_code_only_change_keeps_expensive_results_and_says_so(tmp_path, fake_graph, monkeypatch, capsys):
    root = _root(tmp_path)
    assert _run_all(root) == dict.fromkeys(COMPUTE, "ran")
    before = {n: read_manifest(Paths(root), n) for n in COMPUTE}
    assert before["finetune"]["code_files"], "the manifest records a hash per file"

    _change_code(monkeypatch, {"finetune", "ablation", "flow"})
    said = _Lines()
    logger = logging.getLogger("tamrin")
    level = logger.level
    logger.addHandler(said)
    logger.setLevel(logging.INFO)
    try:
        statuses = _run_all(root)
    finally:
        logger.removeHandler(said)
        logger.setLevel(level)
    # finetune and ablation keep their results; eval reads finetune's recorded key and stays cached; flow is cheap.
    assert statuses == {"data": "cached", "finetune": "kept", "eval": "cached", "ablation": "kept",
                        "memory": "cached", "flow": "ran"}
    assert read_manifest(Paths(root), "finetune") == before["finetune"]
    lines = [line for line in said.lines if line.startswith("kept: finetune")]
    assert len(lines) == 1 and "code/tamrin/vlm/step.py" in lines[0] and "--force finetune" in lines[0]

    assert cli.main(["status", "--profile", "demo"], paths=Paths(root)) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert "code changed (kept)" in rows["finetune"] and "vlm/step.py" in rows["finetune"]
    assert rows["eval"].split()[1] == "cached"

    # --force still reruns it; eval follows only if the rerun's results differ (these stand-ins write the same).
    cfg = load_config("demo", root=root)
    assert run_stage("finetune", cfg, Paths(root), force=True).status == "ran"
    assert run_stage("eval", cfg, Paths(root)).status == "cached"
    monkeypatch.setenv("TAMRIN_FAKE_SALT", "another model")  # as if the rerun had trained a different model
    assert run_stage("finetune", cfg, Paths(root), force=True).status == "ran"
    assert run_stage("eval", cfg, Paths(root)).status == "ran"


def test_upstream_code_that_leaves_its_output_unchanged_keeps_downstream_cached(tmp_path, fake_graph, monkeypatch):
    """A refactor of the data stage reruns data (cheap), but its files come out the same: finetune, which reads
    only those files, stays cached instead of training again; a data change that alters the files reruns it."""
    root = _root(tmp_path)
    _run_all(root)
    before = read_manifest(Paths(root), "data")
    _change_code(monkeypatch, {"data"}, "code/tamrin/data/stage.py")
    statuses = _run_all(root)
    assert statuses == {"data": "ran", "finetune": "cached", "eval": "cached", "ablation": "cached",
                        "memory": "cached", "flow": "cached"}
    after = read_manifest(Paths(root), "data")
    assert after["cache_key"] != before["cache_key"] and after["results_id"] == before["results_id"]
    assert _run_all(root, ["data.seed=7"])["finetune"] == "ran"


def test_results_from_before_results_id_keep_their_downstream_when_a_rerun_changes_nothing(tmp_path, fake_graph,
                                                                                          monkeypatch):
    """Manifests written before `results_id` existed recorded the upstream's cache key; the first rerun of data
    with unchanged files carries that identity on, so pulling a refactor does not retrain the model."""
    root = _root(tmp_path)
    with monkeypatch.context() as older:  # the older runner: downstream stages record the upstream's cache key
        older.setattr(runner, "results_identity", lambda manifest: manifest["cache_key"])
        _run_all(root)
    for name in COMPUTE:
        path = Paths(root).stage_dir(name) / "manifest.json"
        m = json.loads(path.read_text())
        del m["results_id"]
        path.write_text(json.dumps(m))
    assert set(_run_all(root).values()) == {"cached"}
    _change_code(monkeypatch, {"data"}, "code/tamrin/data/stage.py")
    assert _run_all(root)["finetune"] == "cached"


def test_strict_switch_and_config_changes_rerun(tmp_path, fake_graph, monkeypatch):
    root = _root(tmp_path)
    _run_all(root)
    _change_code(monkeypatch, {"finetune"})
    statuses = _run_all(root, ["build.strict=true"])
    assert statuses["finetune"] == "ran"
    # the rerun wrote the same files, so what reads them stays
    assert statuses["data"] == statuses["eval"] == statuses["ablation"] == statuses["memory"] == "cached"


def test_a_config_change_with_a_code_change_reruns(tmp_path, fake_graph, monkeypatch):
    root = _root(tmp_path)
    _run_all(root)
    _change_code(monkeypatch, {"finetune"})
    statuses = _run_all(root, ["train.lr=0.5"])
    assert statuses["finetune"] == "ran" and statuses["eval"] == "ran"


def test_doctor_estimates_a_kept_result_as_staying(tmp_path, fake_graph, monkeypatch):
    """doctor's estimate of `all` judges each stage as `status` and `all` do: a finetune kept under the code-only
    policy, and the eval that reads its recorded key, cost nothing; a stage that will rerun is estimated."""
    from tamrin.doctor.checks import Facts
    from tamrin.doctor.timing import StepTiming, check_estimate

    root = _root(tmp_path)
    _run_all(root)
    _change_code(monkeypatch, {"finetune"})
    facts = Facts("demo", timing=StepTiming(load_seconds=1.0, seconds_per_step=0.5, warmup_seconds=0.6, losses=[1.0],
                                            skipped_updates=0, dtype="fp32", quantization="none"))
    estimate = Paths(root).work_dir("doctor") / "estimate.json"
    check = check_estimate(facts, load_config("demo", root=root), Paths(root))
    seconds = json.loads(estimate.read_text())["seconds"]
    assert seconds["finetune"] == 0.0 and seconds["eval"] == 0.0
    assert any(line.startswith("finetune") and line.endswith("(kept)") for line in check.details), check.details

    # under [build] strict finetune reruns, so it is estimated
    check_estimate(facts, load_config("demo", overrides=["build.strict=true"], root=root), Paths(root))
    assert json.loads(estimate.read_text())["seconds"]["finetune"] > 0


def test_build_section_enters_no_key(tmp_path):
    plain = runner.plan(load_config("demo", root=ROOT), Paths(tmp_path))
    strict = runner.plan(load_config("demo", overrides=["build.strict=true"], root=ROOT), Paths(tmp_path))
    assert {n: s.parts.key for n, s in plain.items()} == {n: s.parts.key for n, s in strict.items()}


@pytest.mark.parametrize("profile", ["paper", "demo"])
def test_profiles_hold_only_what_differs_from_the_defaults(profile):
    """A profile file is a small diff over the defaults (big_vision's base + overrides): a key restating its
    default would hide which settings make the profile."""
    import tomllib

    from tamrin.config import build_section, section_class

    raw = tomllib.loads((ROOT / "configs" / f"{profile}.toml").read_text(encoding="utf-8"))
    restated = []
    for section, values in raw.items():
        default = build_section(section, section_class(section), {}).model_dump()
        built = build_section(section, section_class(section), values).model_dump()
        restated += [f"{section}.{k}" for k in values if built[k] == default[k]]
    assert restated == []


def test_docstrings_comments_and_layout_do_not_enter_a_files_hash(tmp_path):
    plain = "import os\nif os.sep:\n    class A:\n        def f(self, x):\n            return x + 1\n"
    noisy = ('"""Module."""\nimport os  # why\n\nif os.sep:\n    class A:\n        """A class."""\n\n'
             '        def f(self,\n              x):\n            """Add one."""\n            return (x\n + 1)\n')
    changed = plain.replace("x + 1", "x + 2")
    hashes = []
    for i, text in enumerate((plain, noisy, changed)):
        path = tmp_path / f"m{i}.py"
        path.write_text(text, encoding="utf-8")
        hashes.append(codehash.normalised_hash(path))
    assert hashes[0] == hashes[1] != hashes[2]


def test_status_names_a_few_kept_files_and_counts_the_rest():
    five = ", ".join(f"code/tamrin/vlm/m{i}.py" for i in range(5))
    cell = runner.StageState("kept", five, None, None).describe()
    assert cell == ("code changed (kept): code/tamrin/vlm/m0.py, code/tamrin/vlm/m1.py, code/tamrin/vlm/m2.py "
                    "and 2 more")
    assert runner.StageState("kept", "code/tamrin/vlm/step.py", None, None).describe() == \
        "code changed (kept): code/tamrin/vlm/step.py"
