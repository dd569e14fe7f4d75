"""The `ablation` stage: which runs it plans, how it times them and what it estimates (pure), then the real stage
on the demo's tiny model — trained by finetune's loop, evaluated by eval's code — enabled and disabled."""
from __future__ import annotations

import json

import pytest

from tamrin.config import load_config
from tamrin.errors import ConfigError
from tamrin.runner import Paths, run_stage
from tamrin.vlm import ablation as A
from tamrin.config import AblationConfig

from conftest import ROOT


def test_plan_adds_the_large_gpu_ranks_only_on_a_large_gpu():
    ab = AblationConfig(ranks=[4, 8], large_gpu_ranks=[64], large_gpu_gib=40.0)
    runs, skipped = A.plan_runs(ab, 16, 32.0, "nf4", gpu_gib=None)
    assert [r["rank"] for r in runs] == [4, 8] and skipped == [{"rank": 64, "reason": "needs_large_gpu"}]
    runs, skipped = A.plan_runs(ab, 16, 32.0, "nf4", gpu_gib=15.0)  # a T4
    assert [r["rank"] for r in runs] == [4, 8] and skipped
    runs, skipped = A.plan_runs(ab, 16, 32.0, "nf4", gpu_gib=139.8)  # an H200
    assert [r["rank"] for r in runs] == [4, 8, 64] and skipped == []


def test_plan_alpha_modes_and_the_quantization_comparison():
    ratio = AblationConfig(ranks=[4, 32], alpha="ratio", compare_quantization=True)
    runs, _ = A.plan_runs(ratio, 16, 32.0, "nf4", None)
    assert [(r["rank"], r["alpha"], r["quantization"]) for r in runs] == \
        [(4, 8.0, "nf4"), (32, 64.0, "nf4"), (16, 32.0, "none")]  # alpha / r = 2 for every run
    fixed = AblationConfig(ranks=[4, 32], alpha="fixed", compare_quantization=True)
    runs, _ = A.plan_runs(fixed, 16, 32.0, "none", None)
    assert [(r["alpha"], r["quantization"]) for r in runs] == [(32.0, "none"), (32.0, "none")]  # no NF4 to compare


def test_config_refuses_an_empty_or_non_positive_rank_list():
    for bad in ({"ranks": []}, {"ranks": [0, 4]}, {"large_gpu_ranks": [-1]}):
        with pytest.raises(ConfigError, match="ablation.ranks"):
            load_config("demo", overrides=[f"ablation.{k}={json.dumps(v)}" for k, v in bad.items()], root=ROOT)


def test_steady_time_leaves_out_the_first_step_and_the_estimate_adds_up():
    rows = [{"seconds": 5.0}, {"seconds": 5.5}, {"seconds": 6.0}, {"seconds": 6.5}]  # a 5 s first step
    assert A.steady_seconds_per_step(rows) == 0.5
    assert A.steady_seconds_per_step(rows[:1]) is None
    est = A.estimate([{}] * 4, 300, 0.5, 20.0)
    assert est == {"runs": 4, "steps_per_run": 300, "seconds_per_step": 0.5, "eval_seconds_per_run": 20.0,
                   "total_seconds": 4 * 300 * 0.5 + 4 * 20.0}
    assert A.estimate([{}], 10, None, 1.0)["total_seconds"] is None


TINY = ["data.n_scenes=40", "data.questions_per_scene=2", "data.max_test=16", "train.max_steps=6",
        "eval.n_samples=4", "eval.bootstrap=50", "ablation.ranks=[2, 4]", "ablation.steps=6", "ablation.max_test=8"]


@pytest.fixture(scope="module")
def stage_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("ablation")
    cfg = load_config("demo", overrides=TINY, root=ROOT)
    for name in ("data", "finetune", "eval"):
        run_stage(name, cfg, Paths(root))
    return root


def _ablation(root, *extra) -> dict:
    cfg = load_config("demo", overrides=TINY + list(extra), root=ROOT)
    run_stage("ablation", cfg, Paths(root), force=True)
    return json.loads((root / "results" / "ablation" / "ablation.json").read_text())


@pytest.mark.slow
def test_the_stage_trains_and_evaluates_one_adapter_per_rank(stage_root):
    ab = _ablation(stage_root)
    assert ab["enabled"] and [r["rank"] for r in ab["runs"]] == [2, 4] == ab["settings"]["ranks"]
    small, large = ab["runs"]
    # LoRA adds r·(d_in + d_out) per adapted matrix: twice the rank, exactly twice the trainable parameters
    assert large["trainable_params"] == 2 * small["trainable_params"]
    assert large["adapter_state_bytes"] == 16 * large["trainable_params"]
    for run in ab["runs"]:
        assert run["steps"] == 6 and len(run["loss"]) == 6 and run["alpha"] == 2 * run["rank"]  # demo alpha / r = 2
        assert 0.0 <= run["exact_match"] <= 1.0 and run["exact_match_ci"][0] <= run["exact_match"]
        assert run["seconds_per_step"] > 0 and run["peak_gpu_bytes"] is None  # CPU: no GPU peak
    assert ab["settings"]["n_test"] == 8 and ab["settings"]["device"] == "cpu"
    assert ab["skipped"] == [{"rank": 64, "reason": "needs_large_gpu"}]
    # B = 0 at initialisation, so every rank starts from the same model on the same first batch (same data and
    # seed): the first step's loss is the same; training then moves them apart
    assert small["loss"][0] == pytest.approx(large["loss"][0], rel=1e-5)
    assert small["loss"] != large["loss"]


@pytest.mark.slow
def test_disabled_it_trains_nothing_and_records_its_estimate(stage_root):
    ab = _ablation(stage_root, "ablation.enabled=false")
    assert not ab["enabled"] and ab["runs"] == []
    est = ab["estimate"]
    assert est["runs"] == 2 and est["steps_per_run"] == 6 and est["total_seconds"] > 0
    assert sorted(p.name for p in (stage_root / "results" / "ablation").iterdir()) == \
        ["ablation.json", "log.txt", "manifest.json"]
