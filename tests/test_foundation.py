"""The foundation: CLI, config validation, profiles, and the stage runner's cache and atomicity."""
from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tamrin import cli
from tamrin.config import load_config, parse_set
from tamrin.errors import ConfigError, MissingResultError
from tamrin.provenance import redact
from tamrin.runner import Paths, plan, read_manifest, run_stage
from tamrin.stages import STAGES, ancestors

ROOT = Path(__file__).resolve().parents[1]


def make_root(tmp_path: Path) -> Path:
    """A checkout-like folder: the real configs, nothing generated."""
    root = tmp_path / "checkout"
    shutil.copytree(ROOT / "configs", root / "configs", ignore=shutil.ignore_patterns("student.toml"))
    return root


def run_cli(args: list[str], cwd: Path = ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "build.py"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})})


# ---------------------------------------------------------------- CLI

def test_help_lists_every_command_with_a_line_each():
    out = run_cli(["--help"]).stdout
    for command in cli.COMMANDS:
        assert f"  {command} " in out, command
    for option in ("--profile", "--config", "--set", "--force", "--allow-demo"):
        assert option in out


def test_status_on_empty_checkout(tmp_path, capsys):
    root = make_root(tmp_path)
    assert cli.main(["status", "--profile", "demo"], paths=Paths(root)) == 0
    out = capsys.readouterr().out
    for name in ("data", "finetune", "eval", "ablation", "memory", "flow", "report", "zip"):
        assert any(line.startswith(name) and "missing" in line for line in out.splitlines()), name


def test_report_only_on_empty_checkout_is_one_line_exit_2(tmp_path, capsys):
    root = make_root(tmp_path)
    assert cli.main(["report-only", "--profile", "demo"], paths=Paths(root)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: missing results/data/manifest.json")
    assert "python build.py data" in err[-1]
    assert not any("Traceback" in line for line in err)


@pytest.mark.parametrize("override, needle", [
    ("train.lr=abc", "'train.lr': 'abc' is not a number"),
    ("nosuch.key=1", "unknown config key 'nosuch.key'"),
    ("train.nosuch=1", "unknown config key 'train.nosuch'"),
    ("data.source=imagenet", "allowed: hub, clevr_dir, synthetic"),
    ("train.batch_size=0", "below the minimum"),
    ("train.lr", "expected section.key=value"),
])
def test_bad_set_is_one_clear_line_exit_2(override, needle):
    proc = run_cli(["status", "--profile", "demo", "--set", override])
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------- config

def test_config_precedence_profile_file_student_set(tmp_path):
    root = make_root(tmp_path)
    (root / "configs" / "student.toml").write_text('[student]\nlast_name_en = "Karimi"\nstudent_number = "810199"\n')
    extra = tmp_path / "extra.toml"
    extra.write_text("[train]\nlr = 1e-3\nbatch_size = 4\n")
    cfg = load_config("demo", extra, ["train.batch_size=2", "lora.targets=q_proj,v_proj"], root=root)
    assert cfg.train.lr == 1e-3  # --config over the profile
    assert cfg.train.batch_size == 2  # --set over --config
    assert cfg.lora.targets == ["q_proj", "v_proj"]
    assert cfg.student.last_name_en == "Karimi"
    assert cfg.data.source == "synthetic"  # from demo.toml
    assert load_config("paper", root=root).data.source == "hub"
    assert cfg.student.missing_for_zip() == ["student.first_name_fa", "student.last_name_fa"]


def test_parse_set_reads_toml_literals():
    assert parse_set("train.lr=2e-4") == ("train", "lr", 2e-4)
    assert parse_set("flow.seeds=[1, 2]") == ("flow", "seeds", [1, 2])
    assert parse_set("model.id=google/x") == ("model", "id", "google/x")
    with pytest.raises(ConfigError):
        parse_set("lr=1")


def test_profiles_auto_without_gpu_says_why(monkeypatch):
    from tamrin import profiles

    monkeypatch.setattr(profiles, "cuda_available", lambda light=False: (False, "no CUDA GPU found"))
    assert profiles.resolve_profile("auto") == ("demo", "no CUDA GPU found")
    monkeypatch.setattr(profiles, "cuda_available", lambda light=False: (True, "Tesla T4"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(profiles, "hf_token", lambda: None)
    profile, reason = profiles.resolve_profile("auto")
    assert profile == "demo" and "no Hugging Face token" in reason
    assert profiles.resolve_profile("paper") == ("paper", "chosen with --profile")


def test_redact_hides_tokens(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "secretvalue123")
    text = redact("token hf_abcdefghijklmnopqrstuvwxyz0123 and secretvalue123")
    assert "hf_abcdef" not in text and "secretvalue123" not in text


def test_stage_graph():
    assert ancestors("eval") == ["data", "finetune"]
    assert [n for n in STAGES if "data" in ancestors(n)] == ["finetune", "eval", "ablation", "report", "zip"]
    assert ancestors("ablation") == ["data", "finetune", "eval"]
    assert ancestors("memory") == [] and ancestors("flow") == []


# ---------------------------------------------------------------- runner: cache and invalidation

@pytest.fixture
def fake_graph(monkeypatch):
    """The real stage graph and config sections, with cheap entry points."""
    for name in ("data", "finetune", "eval", "ablation", "memory", "flow"):
        monkeypatch.setitem(STAGES, name, dataclasses.replace(STAGES[name], entry="fake_stages:write_config"))
    sys.path.insert(0, str(Path(__file__).parent))
    yield
    sys.path.remove(str(Path(__file__).parent))


COMPUTE = ["data", "finetune", "eval", "memory", "flow"]


def run_all(root: Path, overrides: list[str] = ()) -> dict[str, str]:
    cfg = load_config("demo", overrides=list(overrides), root=root)
    return {n: run_stage(n, cfg, Paths(root)).status for n in COMPUTE}


def test_cache_hit_skips_and_config_change_invalidates_downstream_only(tmp_path, fake_graph, caplog):
    root = make_root(tmp_path)
    assert run_all(root) == dict.fromkeys(COMPUTE, "ran")
    first = {n: read_manifest(Paths(root), n) for n in COMPUTE}
    assert run_all(root) == dict.fromkeys(COMPUTE, "cached")

    statuses = run_all(root, ["data.seed=7"])
    assert statuses == {"data": "ran", "finetune": "ran", "eval": "ran", "memory": "cached", "flow": "cached"}
    statuses = run_all(root, ["data.seed=7", "flow.lr=0.000123"])
    assert statuses == {"data": "cached", "finetune": "cached", "eval": "cached", "memory": "cached", "flow": "ran"}
    statuses = run_all(root, ["data.seed=7", "flow.lr=0.000123", "eval.batch_size=3"])
    assert [n for n, s in statuses.items() if s == "ran"] == ["eval"]

    m = read_manifest(Paths(root), "eval")
    for key in ("stage", "profile", "cache_key", "config", "inputs", "code_version", "started", "finished",
                "seconds", "hardware", "packages"):
        assert key in m, key
    assert m["profile"] == "demo" and m["config"]["eval"]["batch_size"] == 3
    assert m["inputs"]["data"] == read_manifest(Paths(root), "data")["results_id"]
    assert first["memory"]["cache_key"] == read_manifest(Paths(root), "memory")["cache_key"]


def test_status_explains_staleness(tmp_path, fake_graph):
    root = make_root(tmp_path)
    run_all(root)
    cfg = load_config("demo", overrides=["train.lr=0.5"], root=root)
    why = {n: s.why for n, s in plan(cfg, Paths(root)).items()}
    assert why["data"] is None and why["memory"] is None and why["flow"] is None
    assert why["finetune"] == "config changed"
    assert why["eval"] == "upstream runs first: finetune"


def test_missing_upstream_is_a_clear_error(tmp_path, fake_graph):
    root = make_root(tmp_path)
    cfg = load_config("demo", root=root)
    with pytest.raises(MissingResultError, match=r"missing results/data/manifest.json: run `python build.py data`"):
        run_stage("finetune", cfg, Paths(root))


def test_failed_stage_keeps_previous_result_and_leaves_no_staging(tmp_path, fake_graph, monkeypatch):
    root = make_root(tmp_path)
    run_all(root)
    before = read_manifest(Paths(root), "flow")
    monkeypatch.setitem(STAGES, "flow", dataclasses.replace(STAGES["flow"], entry="fake_stages:failing"))
    cfg = load_config("demo", overrides=["flow.lr=0.000234"], root=root)
    with pytest.raises(RuntimeError, match="boom"):
        run_stage("flow", cfg, Paths(root))
    assert read_manifest(Paths(root), "flow") == before
    assert not (root / "results" / "flow" / "half.json").exists()
    assert not list((root / "results" / ".staging").glob("flow-*"))


KILL_SCRIPT = """
import dataclasses, sys
from pathlib import Path
sys.path[:0] = [{code!r}, {tests!r}]
from tamrin.stages import STAGES
from tamrin.config import load_config
from tamrin.runner import Paths, run_stage
STAGES["flow"] = dataclasses.replace(STAGES["flow"], entry="fake_stages:slow_writer")
root = Path({root!r})
run_stage("flow", load_config("demo", overrides={overrides!r}, root=root), Paths(root))
"""


@pytest.mark.slow
def test_killed_stage_leaves_no_completed_manifest_and_reruns(tmp_path, fake_graph):
    root = make_root(tmp_path)
    run_all(root)
    before = read_manifest(Paths(root), "flow")
    marker = tmp_path / "writing"
    script = KILL_SCRIPT.format(code=str(ROOT / "code"), tests=str(ROOT / "tests"), root=str(root),
                                overrides=["flow.lr=0.000345"])
    proc = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "TAMRIN_TEST_MARKER": str(marker)})
    deadline = time.time() + 60
    while not marker.exists():
        assert proc.poll() is None and time.time() < deadline, "stage never started"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    after = read_manifest(Paths(root), "flow")
    assert after == before  # the previous complete result, not a manifest for the killed run
    assert not (root / "results" / "flow" / "partial.bin").exists()
    cfg = load_config("demo", overrides=["flow.lr=0.000345"], root=root)
    assert plan(cfg, Paths(root))["flow"].why == "config changed"
    assert run_stage("flow", cfg, Paths(root)).status == "ran"  # redone, not taken as cached
    assert not list((root / "results" / ".staging").glob("flow-*"))  # the killed run's leftovers are gone
    assert run_stage("flow", cfg, Paths(root)).status == "cached"


@pytest.mark.slow
def test_first_run_killed_leaves_no_manifest(tmp_path, fake_graph):
    root = make_root(tmp_path)
    marker = tmp_path / "writing"
    script = KILL_SCRIPT.format(code=str(ROOT / "code"), tests=str(ROOT / "tests"), root=str(root), overrides=[])
    proc = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "TAMRIN_TEST_MARKER": str(marker)})
    deadline = time.time() + 60
    while not marker.exists():
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert read_manifest(Paths(root), "flow") is None
    assert not (root / "results" / "flow").exists()


def test_atomic_json_roundtrip(tmp_path):
    from tamrin.atomic import read_json, write_json

    write_json(tmp_path / "a" / "x.json", {"k": "مقدار"})
    assert read_json(tmp_path / "a" / "x.json") == {"k": "مقدار"}
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["x.json"]


def test_cached_result_with_missing_files_is_redone(tmp_path, fake_graph):
    """A results tree unpacked without some of its files (e.g. from the zip) must not count as cached."""
    root = make_root(tmp_path)
    run_all(root)
    m = read_manifest(Paths(root), "data")
    assert "out.json" in m["files"] and "log.txt" in m["files"]
    (root / "results" / "data" / "out.json").unlink()
    cfg = load_config("demo", root=root)
    why = plan(cfg, Paths(root))["data"].why
    assert why is not None and "out.json" in why
    assert run_stage("data", cfg, Paths(root)).status == "ran"
    assert run_stage("data", cfg, Paths(root)).status == "cached"


def test_a_stage_being_built_elsewhere_is_refused(tmp_path, fake_graph):
    """Two processes must not build the same stage in one results/ (one would wipe the other's staging)."""
    from tamrin.runner import stage_lock

    root = make_root(tmp_path)
    cfg = load_config("demo", root=root)
    with stage_lock(Paths(root), "flow"):
        script = ("import sys; sys.path.insert(0, {code!r})\n"
                  "from pathlib import Path\nfrom tamrin.runner import Paths, stage_lock\n"
                  "try:\n    stage_lock(Paths(Path({root!r})), 'flow').__enter__()\nexcept Exception as e:\n"
                  "    print(type(e).__name__, e)\n").format(code=str(ROOT / "code"), root=str(root))
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60).stdout
        assert out.startswith("TamrinError") and f"pid {os.getpid()}" in out
    assert run_stage("flow", cfg, Paths(root)).status == "ran"  # released


def test_a_killed_builders_forked_children_do_not_keep_its_lock(tmp_path):
    """A run killed while its DataLoader workers (forked children) live on: the next run takes the lock at once
    (the resume after a crash), instead of being refused until the orphans exit."""
    import signal

    from tamrin.runner import stage_lock

    root = make_root(tmp_path)
    script = ("import os, sys, time; sys.path.insert(0, {code!r})\n"
              "from pathlib import Path\nfrom tamrin.runner import Paths, stage_lock\n"
              "with stage_lock(Paths(Path({root!r})), 'finetune'):\n"
              "    child = os.fork()\n"
              "    if child == 0:\n        time.sleep(60); os._exit(0)\n"
              "    print(child, flush=True); time.sleep(60)\n").format(code=str(ROOT / "code"), root=str(root))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    child = int(proc.stdout.readline())
    try:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        os.kill(child, 0)  # the orphan is still alive, holding the inherited lock file open
        with stage_lock(Paths(root), "finetune"):
            pass
    finally:
        os.kill(child, signal.SIGKILL)
        proc.stdout.close()


def test_atomic_files_have_normal_permissions(tmp_path):
    from tamrin.atomic import write_text

    write_text(tmp_path / "x.txt", "hi")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "x.txt").stat().st_mode & 0o777 == 0o666 & ~mask


def test_readme_config_reference_is_current():
    """README's key table is generated from the dataclasses; regenerate with scripts/config_reference.py --write."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import config_reference
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert config_reference.refreshed(readme) == readme, "run: python scripts/config_reference.py --write"


def test_readme_has_exactly_the_two_setup_commands():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("## Two commands", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert commands == ["make report", "make test"]


def test_stage_sources_follow_the_import_graph():
    """A stage hashes exactly what its entry module may import (lazily too), nothing it does not."""
    from tamrin.codehash import stage_sources

    src = {name: {p.relative_to(ROOT / "code" / "tamrin").as_posix() for p in stage_sources(s.module)}
           for name, s in STAGES.items() if s.cached}
    # Editing finetune.py re-runs finetune (and eval, through its key) but leaves memory, derive and flow cached.
    assert "vlm/finetune.py" in src["finetune"]
    for name in ("memory", "derive", "flow", "eval"):
        assert "vlm/finetune.py" not in src[name], name
    # The memory stage hashes the optimizer step its GPU measurement runs (a lazy import) and the shipped config.
    assert {"vlm/memory_analysis.py", "vlm/step.py", "vlm/paligemma_3b_config.json"} <= src["memory"]
    # No compute stage hashes the report, the templates or another stage family's code.
    for name, files in src.items():
        assert not any(f.startswith(("report/", "submit/")) for f in files), (name, files)
    assert not any(f.startswith("vlm/") for f in src["derive"] | src["flow"])
    assert "flow/experiment.py" not in src["derive"] and "flow/derivations.py" not in src["flow"]


def test_import_resolution_absolute_relative_lazy_and_data_files(tmp_path, monkeypatch):
    from tamrin import codehash

    pkg = tmp_path / "code" / "tamrin"
    (pkg / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "", "sub/__init__.py": "", "unused.py": "",
        "sub/entry.py": "from . import sibling\nfrom ..helpers import h\ndef f():\n    import tamrin.lazy\n",
        "sub/sibling.py": "NAME = 'table.json'\n", "sub/table.json": "{}", "sub/other.json": "{}",
        "helpers.py": "from tamrin.sub import sibling\n", "lazy.py": "",
    }
    for rel, text in files.items():
        (pkg / rel).write_text(text)
    monkeypatch.setattr(codehash, "PACKAGE_DIR", pkg)
    monkeypatch.setattr(codehash, "ROOT", tmp_path)
    codehash._direct.cache_clear()
    try:
        got = {p.relative_to(pkg).as_posix() for p in codehash.stage_sources("tamrin.sub.entry")}
    finally:
        codehash._direct.cache_clear()
    assert got == {"__init__.py", "sub/__init__.py", "sub/entry.py", "sub/sibling.py", "sub/table.json",
                   "helpers.py", "lazy.py"}


def test_a_committed_measurement_enters_the_key_only_when_the_config_names_it(tmp_path):
    from tamrin.runner import code_files

    root = ROOT
    named = load_config("demo", root=root)
    assert named.memory.measured_from, "the demo profile shows the committed GPU measurement"
    unnamed = load_config("demo", overrides=["memory.measured_from="], root=root)
    assert code_files(STAGES["memory"], named) != code_files(STAGES["memory"], unnamed)
    assert code_files(STAGES["flow"], named) == code_files(STAGES["flow"], unnamed)
