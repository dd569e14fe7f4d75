"""`build.py doctor`: the demo passes here, the paper profile fails each truly failing check with one line, and
each check reports what it found (GPU dtype choice, token/license cases, raw vs cleaned rows, label mask)."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from hub_mock import mock_hub
from tamrin.config import load_config
from tamrin.doctor import guarded
from tamrin.doctor.checks import FAIL, OK, SKIP, WARN, Check, Facts, can_start, render
from tamrin.errors import TamrinError

ROOT = Path(__file__).resolve().parents[1]


def doctor(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, str(ROOT / "build.py"), "doctor", *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})}, cwd=ROOT)


def rows(out: str) -> dict[str, str]:
    table = out.split("check              status")[1].split("\n\n")[0]
    return {line[:19].strip(): line[19:] for line in table.splitlines()[2:]}


@pytest.mark.slow
def test_demo_passes_offline():
    res = doctor("--profile", "demo", "--results-dir", "/tmp/tamrin-doctor-demo-results")
    assert res.returncode == 0, res.stdout + res.stderr
    r = rows(res.stdout)
    assert r["timed steps"].startswith("ok") and "first steps stayed finite" in r["timed steps"]
    assert r["processor"].startswith("ok") and "labels exactly on the suffix" in r["processor"]
    assert "the run can start" in res.stdout and "Traceback" not in res.stdout + res.stderr


@pytest.mark.slow
def test_paper_fails_each_failing_check_in_one_line_here():
    t = time.perf_counter()
    # this machine as it is: no GPU, no token, no network (not offline mode, which conftest sets for the tests)
    res = doctor("--profile", "paper", env={"HF_TOKEN": "", "HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0"})
    seconds = time.perf_counter() - t
    assert res.returncode == 1 and "Traceback" not in res.stdout + res.stderr
    r = rows(res.stdout)
    for name, words in {"gpu": "no CUDA GPU", "bitsandbytes": "CUDA kernels cannot load",
                        "hf token + access": "no Hugging Face token", "dataset": "cannot reach the Hugging Face hub",
                        "processor": "cannot reach the Hugging Face hub", "timed steps": "CUDA GPU"}.items():
        assert r[name].startswith("FAIL") and words in r[name] and " — " in r[name], (name, r[name])
    assert r["python + packages"].startswith("ok") and r["disk"].startswith("ok")
    print(f"doctor --profile paper took {seconds:.1f} s here")


def test_python_row_asks_what_pyproject_asks(monkeypatch):
    import platform

    from tamrin.doctor.checks import check_python_and_packages, project_requirements

    assert project_requirements()[0] == ">=3.11"  # Colab ships 3.13, Kaggle 3.12; the pinned set needs 3.11
    monkeypatch.setattr(platform, "python_version", lambda: "3.10.13")
    c = check_python_and_packages(Facts(profile="demo"))
    assert c.status == "FAIL" and c.result == "Python 3.10.13" and ">=3.11" in c.fix
    monkeypatch.setattr(platform, "python_version", lambda: "3.13.0")
    assert check_python_and_packages(Facts(profile="demo")).result.startswith("Python 3.13.0; torch ")


def test_disk_row_estimates_the_first_download(tmp_path, monkeypatch):
    import shutil as sh
    from collections import namedtuple

    import torch

    from tamrin.doctor import checks as disk
    from tamrin.runner import Paths

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(sh, "disk_usage", lambda path: usage(100 * 10**9, 0, 8 * 10**9))
    paths = Paths(tmp_path)
    t4 = disk.check_disk("paper", paths, False, "google/paligemma-3b-pt-224", torch.float16)
    assert t4.status == "ok" and "first model download about 5.8 GB (the float16 revision; 11.7 GB if" in t4.result
    fp32 = disk.check_disk("paper", paths, False, "google/paligemma-3b-pt-224", torch.float32)
    assert fp32.status == "FAIL" and "model cache needs 13.0 GB (8.0 GB free" in fp32.result  # main: 11.7 + 1.3
    assert "download" not in disk.check_disk("paper", paths, True, "google/paligemma-3b-pt-224", torch.float16).result
    cfg = load_config("paper")
    assert disk.planned_dtype(cfg, gpu=False) == torch.float16  # no GPU here: the notebook's T4


def test_table_and_exit_rule():
    checks = [Check("a", OK, "fine"), Check("bb", FAIL, "broken", "fix it", ["detail"]), Check("c", SKIP, "n/a")]
    text = render(checks)
    assert "bb     FAIL    broken — fix it" in text and "bb:\n  detail" in text
    assert not can_start(checks) and can_start([Check("a", OK, "x"), Check("w", WARN, "y")])


def test_guard_turns_errors_and_hangs_into_one_line():
    def tamrin():
        raise TamrinError("the token was refused: make a new one")

    def bug():
        raise ValueError("x\nsecond line")

    assert guarded("t", tamrin, 5) == Check("t", FAIL, "the token was refused", "make a new one")
    c = guarded("b", bug, 5)
    assert c.status == FAIL and c.result == "unexpected ValueError: x" and "\n" not in c.result
    c = guarded("slow", lambda: time.sleep(3) or Check("slow", OK, ""), 0.2)
    assert c.status == FAIL and "did not finish within 0.2 s" in c.result


def fake_cuda(monkeypatch, name: str, capability: tuple[int, int], gib: float) -> None:
    props = SimpleNamespace(name=name, total_memory=int(gib * 2 ** 30), major=capability[0], minor=capability[1])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i=0: props)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: name)


def test_gpu_check_reports_the_dtype_choice(monkeypatch):
    from tamrin.doctor.checks import check_gpu

    cfg = load_config("paper")
    fake_cuda(monkeypatch, "Tesla T4", (7, 5), 14.7)
    c = check_gpu(Facts("paper"), cfg)
    assert c.status == OK and "Tesla T4" in c.result and "compute fp16" in c.result and "grad scaler" in c.result
    fake_cuda(monkeypatch, "NVIDIA A100-SXM4-80GB", (8, 0), 79.2)
    assert "compute bf16" in check_gpu(Facts("paper"), cfg).result
    fake_cuda(monkeypatch, "Small GPU", (7, 5), 8)
    assert check_gpu(Facts("paper"), cfg).status == FAIL


@pytest.mark.parametrize("case, status, words", [
    ("ok", OK, "access to google/paligemma-3b-pt-224 granted"),
    ("gated", FAIL, "https://huggingface.co/google/paligemma-3b-pt-224"),
    ("bad_token", FAIL, "refused the token"),
])
def test_access_check(monkeypatch, case, status, words):
    from tamrin.doctor.checks import check_access

    monkeypatch.setenv("HF_TOKEN", "hf_test")
    facts = Facts("paper")
    with mock_hub(monkeypatch, case):
        c = check_access(facts, load_config("paper"))
    assert c.status == status and words in c.result + " — " + c.fix and facts.hub_reachable is True


def test_dataset_check_shows_raw_and_cleaned_rows_of_a_local_cauldron_copy(tmp_path, monkeypatch):
    import datasets.config

    from tamrin.doctor.checks import check_dataset
    from test_data_stage import CAULDRON_ROWS, write_cauldron_copy

    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0)
    copy = write_cauldron_copy(tmp_path / "the_cauldron")
    cfg = load_config("paper", overrides=[f"data.hub_id={copy}"])
    facts = Facts("paper")
    c = check_dataset(facts, cfg)
    assert c.status == OK and "8 rows, 14 QA pairs, 7% not parsed" in c.result  # 1 of 14 off-vocabulary
    assert any(d.startswith("raw row 1, pair 1: user 'Are there any red cubes? ⏎ Answer the question") for d in c.details)
    assert "cleaned: ('Are there any red cubes?', 'yes', exist)" in c.details
    # 13 cleaned; the corrupt and the missing image's questions are not examples
    assert len(facts.examples) == 11 and facts.questions_per_row == pytest.approx(13 / 8)
    assert len(CAULDRON_ROWS) == 8


def test_processor_check_on_the_tiny_model(tmp_path):
    from tamrin.doctor.checks import check_dataset, check_processor

    cfg = load_config("demo")
    facts = Facts("demo", work_dir=tmp_path)
    assert check_dataset(facts, cfg).status == OK
    c = check_processor(facts, cfg)
    assert c.status == OK, c
    assert c.result.startswith("16 image tokens") and "labels exactly on the suffix" in c.result
    assert any(d.startswith("decoded prefix: '<bos>answer en ") and d.endswith("?\\n'") for d in c.details)


@pytest.mark.slow
def test_timed_steps_show_three_answers_of_the_model(tmp_path):
    from tamrin.doctor.checks import check_dataset, check_processor
    from tamrin.doctor.timing import answer_lines, check_steps

    cfg = load_config("demo")
    facts = Facts("demo", work_dir=tmp_path)
    assert check_dataset(facts, cfg).status == OK and check_processor(facts, cfg).status == OK
    c = check_steps(facts, cfg, 1)
    timing = facts.timing
    assert c.status == OK, c
    assert [(q, ref) for q, ref, _ in timing.answers] == [(e["question"], str(e["answer"])) for e in facts.examples[:3]]
    assert all(isinstance(got, str) for _, _, got in timing.answers)
    assert c.details == answer_lines(timing.answers) and c.details[0].startswith("answer 1: '")


def test_estimate_from_a_measured_step(tmp_path, monkeypatch):
    from tamrin.doctor import timing as estimate
    from tamrin.doctor.timing import StepTiming
    from tamrin.runner import Paths

    monkeypatch.setattr(estimate, "flow_ms_per_step", lambda cfg: 15.0)  # per batched step
    cfg = load_config("paper", overrides=["train.batch_size=4", "train.grad_accum=4", "train.max_minutes=150"])
    timing = StepTiming(load_seconds=60, seconds_per_step=8.0, warmup_seconds=10.0, losses=[9.1, 8.7, 8.2, 7.9],
                        skipped_updates=0, dtype="fp16", quantization="nf4")
    facts = Facts("paper", gpu=True, device_name="Tesla T4", data_seconds_per_row=0.05, questions_per_row=10,
                  timing=timing)
    c = estimate.check_estimate(facts, cfg, Paths(tmp_path))
    seconds = json.loads((tmp_path / "results" / ".work" / "doctor" / "estimate.json").read_text())["seconds"]
    # 7140 questions → 500 test, 6640 train → ceil(6640 / 4 / 4) = 415 steps of 8 s, + load + warm-up excess
    assert seconds["finetune"] == pytest.approx(60 + 2 + 415 * 8.0)
    assert seconds["flow"] == pytest.approx(15.0 * 20000 / 1000)
    assert seconds["data"] == pytest.approx((7140 / 10 + 1000) * 0.05)
    assert c.status == OK and "finetune" in c.result


def test_results_dir_from_option_or_environment(tmp_path, monkeypatch):
    from tamrin.runner import Paths

    monkeypatch.delenv("TAMRIN_RESULTS_DIR", raising=False)
    assert Paths.from_env(tmp_path).results == tmp_path / "results"
    monkeypatch.setenv("TAMRIN_RESULTS_DIR", str(tmp_path / "drive"))
    p = Paths.from_env(tmp_path)
    assert p.results == (tmp_path / "drive").resolve() and p.work_dir("finetune") == p.results / ".work" / "finetune"
    assert p.rel(p.results / "data" / "stats.json") == "results/data/stats.json"  # no absolute path in messages
    assert Paths.from_env(tmp_path, tmp_path / "other").results == (tmp_path / "other").resolve()  # the option wins


def test_timed_steps_time_finetunes_step_object_without_the_warmup(tmp_path, monkeypatch):
    """doctor's timed steps are calls of finetune's `TrainStep` (the one object the finetune loop calls), and the
    reported seconds per step leave the first (warm-up) step out: a first call made 0.6 s slower does not show."""
    import json as _json

    sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
    from vlm_support import DATA, tiny_base

    from tamrin.doctor import timing as doctor_steps
    from tamrin.vlm.model import load_processor
    from tamrin.vlm.step import TrainStep

    rows = [_json.loads(x) for x in (DATA / "train.jsonl").read_text().splitlines()[:8]]
    facts = Facts("demo", work_dir=tmp_path, source=tiny_base(), processor=load_processor(tiny_base()),
                  examples=[{"image": (DATA / r["image"]).read_bytes(), "question": r["question"],
                             "answer": r["answer"], "qtype": r["qtype"]} for r in rows])
    cfg = load_config("demo", overrides=["train.batch_size=2"])
    seen, real = [], TrainStep.__call__

    def recorded(self, micro, loss=None):
        seen.append(self)
        if len(seen) == 1:
            time.sleep(0.6)
        return real(self, micro, loss)

    monkeypatch.setattr(TrainStep, "__call__", recorded)
    timing = doctor_steps.timed_steps(facts, cfg, 3)
    assert len(seen) == 4 and all(s is seen[0] for s in seen) and type(seen[0]) is TrainStep
    assert len(timing.losses) == 4 and timing.finite
    assert timing.warmup_seconds >= 0.6 > timing.seconds_per_step
