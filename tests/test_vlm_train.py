"""Training: the 4-bit NF4 tiny model learns (loss falls), a run killed mid-way resumes from its checkpoint
and ends with the same steps and losses as an uninterrupted run, and `train.max_minutes` stops cleanly."""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures"))
from vlm_support import DATA, lora_cfg, model_cfg, one_thread, train_cfg  # noqa: E402

from tamrin.vlm import finetune, step  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LOG = logging.getLogger("test.vlm")
STEPS = 30


def _train(tmp: Path, name: str, **train_kw) -> dict:
    with one_thread():
        return finetune.train(data_dir=DATA, out_dir=tmp / name / "out", work_dir=tmp / name / "work",
                              model_cfg=model_cfg(), lora_cfg=lora_cfg(), train_cfg=train_cfg(**train_kw), log=LOG)


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _losses(out: Path) -> list[dict]:
    return _rows(out / "loss.jsonl")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted NF4 run of STEPS steps."""
    tmp = tmp_path_factory.mktemp("ref")
    summary = _train(tmp, "ref", max_steps=STEPS)
    return summary, _losses(tmp / "ref" / "out"), tmp / "ref" / "out"


def test_nf4_tiny_model_trains(reference):
    summary, losses, out = reference
    assert summary["quantization"] == "nf4"  # bitsandbytes runs NF4 on this CPU
    assert summary["steps_done"] == summary["total_steps"] == STEPS
    assert [r["step"] for r in losses] == list(range(1, STEPS + 1))
    first = sum(r["loss"] for r in losses[:5]) / 5
    last = sum(r["loss"] for r in losses[-5:]) / 5
    assert last < 0.75 * first, (first, last)
    assert set(losses[0]) == {"step", "loss", "lr", "epoch", "seconds", "skipped"} and not any(r["skipped"] for r in losses)
    # warm-up then cosine decay
    lrs = [r["lr"] for r in losses]
    peak = lrs.index(max(lrs))
    assert lrs[0] < lrs[peak] and lrs[-1] < lrs[peak] and peak <= 3
    assert (out / "adapter" / "adapter_config.json").exists()
    assert (out / "adapter" / "adapter_model.safetensors").exists()
    assert (out / "base_model" / "config.json").exists()
    s = json.loads((out / "summary.json").read_text())
    assert s["lora"]["scope"] == "language_model"
    assert s["lora"]["matched_modules"] == 2 * 7 and s["lora"]["matched_in_vision_tower"] == 0
    assert 0 < s["trainable_params"] < s["total_params"]
    assert s["peak_gpu_mem_gib"] is None and s["peak_cpu_rss_mib"] > 0 and s["samples_per_s"] > 0
    assert s["compute_dtype"] == "fp32" and s["grad_ckpt"] is True and s["grad_ckpt_reason"] == "on: train.grad_ckpt = true"
    assert s["skipped_steps"] == s["nonfinite_loss_steps"] == 0 and s["checkpoint_seconds"] >= 0


CHILD = """
import logging, sys, torch
sys.path.insert(0, {code!r}); sys.path.insert(0, {fixtures!r})
torch.set_num_threads(1)
from pathlib import Path
from vlm_support import DATA, lora_cfg, model_cfg, train_cfg
from tamrin.vlm import finetune
finetune.train(data_dir=DATA, out_dir=Path({out!r}), work_dir=Path({work!r}), model_cfg=model_cfg(),
               lora_cfg=lora_cfg(), train_cfg=train_cfg(max_steps={steps}), log=logging.getLogger("child"))
"""


@pytest.mark.slow
def test_resume_after_kill_matches_uninterrupted_run(reference, tmp_path):
    _, ref_losses, _ = reference
    out, work = tmp_path / "killed" / "out", tmp_path / "work"
    code = CHILD.format(code=str(ROOT / "code"), fixtures=str(ROOT / "tests" / "fixtures"), out=str(out),
                        work=str(work), steps=STEPS)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 240
    try:
        while not list(work.glob("ckpt-*/complete.json")):
            assert child.poll() is None, child.stderr.read().decode()[-2000:]
            assert time.time() < deadline, "no checkpoint appeared"
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)  # a hard kill: no cleanup code runs
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL
    assert not (out / "summary.json").exists()  # it really was interrupted
    killed_at = len(_losses(out))
    assert killed_at < STEPS

    with one_thread():
        summary = finetune.train(data_dir=DATA, out_dir=tmp_path / "resumed", work_dir=work, model_cfg=model_cfg(),
                                 lora_cfg=lora_cfg(), train_cfg=train_cfg(max_steps=STEPS), log=LOG)
    assert summary["resumed_from_step"] is not None and summary["resumed_from_step"] % 5 == 0
    assert summary["steps_done"] == STEPS
    losses = _losses(tmp_path / "resumed")
    assert [r["step"] for r in losses] == list(range(1, STEPS + 1))
    # same data order, same RNG, same optimizer state: the resumed run reproduces the uninterrupted one
    for a, b in zip(losses, ref_losses):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-5), (a, b)
        assert a["lr"] == pytest.approx(b["lr"])
    # the held-out curve too: the rows before the kill come from the checkpoint, the rest from the resumed run
    ref_held, held = _rows(reference[2] / "heldout.jsonl"), _rows(tmp_path / "resumed" / "heldout.jsonl")
    assert [r["step"] for r in held] == [r["step"] for r in ref_held] == [0, 5, 10, 15, 20, 25, 30]
    for a, b in zip(held, ref_held):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-5) and a["exact_match"] == b["exact_match"]


def test_max_minutes_stops_cleanly_and_saves(tmp_path):
    summary = _train(tmp_path, "timed", max_steps=50, max_minutes=0.0001)
    out = tmp_path / "timed" / "out"
    assert summary["stopped_early"] and "max_minutes" in summary["stopped_early"]
    assert summary["steps_done"] == 1 < summary["total_steps"]
    assert len(_losses(out)) == 1
    assert (out / "adapter" / "adapter_model.safetensors").exists()
    assert json.loads((out / "summary.json").read_text())["steps_done"] == 1


def test_out_of_memory_is_one_line_with_advice(tmp_path, monkeypatch):
    import torch

    from tamrin.errors import TamrinError

    def boom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(step, "step_loss", boom)
    with pytest.raises(TamrinError) as err:
        _train(tmp_path, "oom", max_steps=3, batch_size=8, grad_accum=2)
    msg = str(err.value)
    assert "\n" not in msg and "train.batch_size=4" in msg and "train.grad_accum=4" in msg


def test_data_loader_workers(tmp_path):
    """num_workers > 0 (the paper config): batches built in worker processes, same losses as in-process."""
    a = _train(tmp_path, "w0", max_steps=4, num_workers=0)
    b = _train(tmp_path, "w2", max_steps=4, num_workers=2)
    assert a["steps_done"] == b["steps_done"] == 4
    la, lb = _losses(tmp_path / "w0" / "out"), _losses(tmp_path / "w2" / "out")
    assert [r["loss"] for r in la] == pytest.approx([r["loss"] for r in lb], rel=1e-5)


def _nan_at(monkeypatch, calls: set[int] | None = None, from_call: int | None = None):
    """Make the training step's loss NaN at the given 1-based calls (after the real forward/backward ran)."""
    import torch

    real, n = step.step_loss, [0]

    def patched(*args, **kwargs):
        loss = real(*args, **kwargs)
        n[0] += 1
        bad = (calls and n[0] in calls) or (from_call is not None and n[0] >= from_call)
        return torch.full_like(loss, float("nan")) if bad else loss

    monkeypatch.setattr(step, "step_loss", patched)


def test_nonfinite_loss_skips_the_update_and_is_counted(tmp_path, monkeypatch):
    _nan_at(monkeypatch, calls={3, 4})
    summary = _train(tmp_path, "nan", max_steps=6, warmup_ratio=0.0, scheduler="linear")
    losses = _losses(tmp_path / "nan" / "out")
    assert [r["step"] for r in losses] == list(range(1, 7))  # one line per optimizer step, the run went on
    assert [r["loss"] is None for r in losses] == [False, False, True, True, False, False]
    assert all("non-finite" in r["skipped"] for r in losses[2:4]) and not any(r["skipped"] for r in losses[4:])
    lrs = [r["lr"] for r in losses]
    assert lrs[0] > lrs[1] > lrs[2] == lrs[3] == lrs[4] > lrs[5]  # no scheduler step for a skipped update
    assert summary["skipped_steps"] == summary["nonfinite_loss_steps"] == 2 and summary["steps_done"] == 6
    assert summary["final_loss"] == losses[-1]["loss"] and summary["loss_last_mean"] is not None


def test_consecutive_nonfinite_losses_stop_the_run_with_one_line(tmp_path, monkeypatch):
    from tamrin.errors import TamrinError

    _nan_at(monkeypatch, from_call=2)
    with pytest.raises(TamrinError) as err:
        _train(tmp_path, "diverged", max_steps=10, max_nonfinite_steps=3)
    msg = str(err.value)
    assert "\n" not in msg and "3 steps in a row" in msg and "step 4" in msg and "train.lr" in msg
    assert [r["loss"] is None for r in _losses(tmp_path / "diverged" / "out")] == [False, True, True, True]


def test_inputs_that_differ_from_the_processor_stop_training_at_start(tmp_path, monkeypatch):
    from tamrin.errors import TamrinError
    from tamrin.vlm import batches

    monkeypatch.setattr(batches, "prompt_string", lambda p, q, prefix: "<image>" * p.image_seq_length + prefix + q + "\n")
    with pytest.raises(TamrinError) as err:
        _train(tmp_path, "mismatch", max_steps=2)
    assert "\n" not in str(err.value) and "PaliGemmaProcessor" in str(err.value)
    assert not (tmp_path / "mismatch" / "out" / "loss.jsonl").exists()  # stopped before any step


def test_heldout_slice_is_never_trained_on_and_evaluating_it_changes_nothing(tmp_path):
    """The held-out rows are whole images of the train split, the same ones every time, and none of them is
    trained on; evaluating them every step or only at the ends leaves the training run bit for bit the same
    (dropout off while evaluating: no random number drawn), and the curve starts before the first step."""
    from tamrin.vlm import batches

    rows = batches.read_split(DATA, "train")
    train, held = finetune.carve_heldout(rows, 12, seed=0)
    assert len(held) >= 12 and len(train) + len(held) == len(rows)
    assert not {r["image"] for r in held} & {r["image"] for r in train}
    assert finetune.carve_heldout(rows, 12, seed=0) == (train, held)
    assert finetune.carve_heldout(rows, 0, seed=0) == (rows, [])
    often = _train(tmp_path, "often", max_steps=6, heldout_every=1)
    rarely = _train(tmp_path, "rarely", max_steps=6, heldout_every=100)
    a, b = _losses(tmp_path / "often" / "out"), _losses(tmp_path / "rarely" / "out")
    assert [(r["loss"], r["lr"]) for r in a] == [(r["loss"], r["lr"]) for r in b]
    ha, hb = _rows(tmp_path / "often" / "out" / "heldout.jsonl"), _rows(tmp_path / "rarely" / "out" / "heldout.jsonl")
    assert [r["step"] for r in ha] == list(range(7)) and [r["step"] for r in hb] == [0, 6]
    assert ha[-1] == hb[-1] and ha[0]["n"] == len(held) and ha[-1]["loss"] < ha[0]["loss"]
    assert often["n_train"] == len(train) and often["heldout"]["evaluations"] == 7
    assert 0 < often["heldout"]["seconds"] and 0 < often["heldout"]["share"]
