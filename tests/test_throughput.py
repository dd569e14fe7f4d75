"""The throughput model: reference rates from the committed GPU measurement, step counts equal to the training
schedule's, measured and extrapolated estimates, the time cap."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tamrin.doctor.timing import (Reference, Workload, estimate_extrapolated, estimate_measured, gpu_key, hms,
                                  load_reference, reference_from_bench)
from tamrin.config import TrainConfig
from tamrin.vlm.batches import make_plan

ROOT = Path(__file__).resolve().parents[1]
BENCH = json.loads((ROOT / "bench" / "results" / "nvidia-h200.json").read_text(encoding="utf-8"))
REF = load_reference(ROOT / "bench" / "results" / "nvidia-h200.json")
# The committed measurement's suffix-loss NF4 rows with checkpointing on, read independently of the code under test
B8, B32 = (next(t["samples_per_s"] for t in BENCH["training"] if t["batch"] == b and t["loss"] == "suffix"
                and t.get("grad_ckpt", True)) for b in (8, 32))
GEN = BENCH["generation"]["batched"]["answers_per_s"]


def test_reference_reads_the_committed_measurement():
    assert REF.device == BENCH["device"] and REF.train_samples_per_s == {8: B8, 32: B32}
    assert REF.answers_per_s == GEN


@pytest.mark.parametrize("name, key", [("Tesla T4", "T4"), ("NVIDIA A100-SXM4-80GB", "A100"), ("NVIDIA H200", "H200"),
                                       ("NVIDIA L4", "L4"), ("Tesla P100-PCIE-16GB", "P100"), ("NVIDIA H100 80GB HBM3", "H100"),
                                       ("NVIDIA GeForce RTX 4090", None)])
def test_gpu_names(name, key):
    assert gpu_key(name) == key


def test_rate_between_and_beyond_the_measured_batches():
    assert REF.samples_per_s(8) == B8 and REF.samples_per_s(32) == B32
    assert REF.samples_per_s(16) == pytest.approx((B8 + B32) / 2)  # halfway in log(batch)
    assert REF.samples_per_s(4) == B8 and REF.samples_per_s(64) == B32


@pytest.mark.parametrize("n, b, a, world, epochs, max_steps", [(6640, 4, 4, 1, 1.0, None), (1100, 8, 1, 1, 1.0, 160),
                                                              (1000, 8, 2, 2, 2.5, None), (7, 8, 3, 1, 1.0, None)])
def test_step_count_is_the_training_schedule(n, b, a, world, epochs, max_steps):
    plan = make_plan(n, TrainConfig(batch_size=b, grad_accum=a, epochs=epochs, max_steps=max_steps), world=world)
    assert Workload(n, 100, b, a, epochs, max_steps, world).total_steps == plan.total_steps


def test_measured_estimate():
    w = Workload(n_train=6400, n_test=500, batch_size=8, grad_accum=2, epochs=1.0)  # 400 steps of 16
    # a GPU measured exactly as fast as the reference at batch 8: eval at the reference's answers/s
    sps = 16 / REF.samples_per_s(8)
    e = estimate_measured(w, REF, seconds_per_step=sps, load_seconds=30.0)
    assert e.seconds["finetune"] == pytest.approx(30 + 400 * sps)
    assert e.seconds["eval"] == pytest.approx(30 + 1000 / GEN)
    assert e.seconds["flow"] is None and e.seconds["data"] is None  # doctor's estimate row fills them in
    # twice as slow per step: generation assumed twice as slow too
    slow = estimate_measured(w, REF, seconds_per_step=2 * sps, load_seconds=30.0)
    assert slow.seconds["eval"] == pytest.approx(30 + 1000 / (GEN / 2))
    assert "measured here" in e.basis and e.total == pytest.approx(sum(v for v in e.seconds.values() if v))


def test_extrapolation_is_identity_on_the_reference_gpu_and_scales_by_peaks():
    w = Workload(n_train=6400, n_test=500, batch_size=8, grad_accum=2, epochs=1.0)
    same = estimate_extrapolated(w, REF, "NVIDIA H200")
    assert same.seconds["finetune"] == pytest.approx(REF.load_seconds + 6400 / B8)
    t4 = estimate_extrapolated(w, REF, "Tesla T4")
    assert t4.seconds["finetune"] == pytest.approx(REF.load_seconds * 4800 / 320 + 6400 / (B8 * 65 / 989))
    assert t4.seconds["eval"] == pytest.approx(REF.load_seconds * 4800 / 320 + 1000 / (GEN * 320 / 4800))
    assert "pessimistic" in t4.basis
    unknown = estimate_extrapolated(w, REF, "Some GPU")
    assert unknown.seconds["finetune"] is None and "doctor" in unknown.basis


def test_max_minutes_caps_the_fine_tuning():
    w = Workload(n_train=6400, n_test=500, batch_size=8, grad_accum=2, epochs=1.0, max_minutes=10)
    e = estimate_measured(w, REF, seconds_per_step=5.0, load_seconds=0.0)
    assert e.seconds["finetune"] == 600 and "max_minutes" in e.notes[0]


def test_formatting():
    assert (hms(None), hms(40), hms(600), hms(3900)) == ("—", "40 s", "10 min", "1 h 05 min")


def test_reference_needs_a_suffix_nf4_row():
    with pytest.raises(ValueError):
        reference_from_bench({"training": [{"ok": True, "loss": "full", "mode": "nf4 base + LoRA", "batch": 8,
                                            "samples_per_s": 1}], "generation": {"batched": {}}})
    assert isinstance(REF, Reference)
