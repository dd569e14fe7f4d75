"""The flow stage end to end on a tiny configuration: experiment.json, its schema, and failure handling."""
from __future__ import annotations

import json

import numpy as np
import pytest

import flow_reference
from tamrin.config import load_config
from tamrin.errors import ConfigError
from tamrin.flow import experiment, stage
from tamrin.runner import Paths, run_stage


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # fixture in conftest.py

TINY = ["flow.steps=25", "flow.batch_size=16", "flow.n_eval=40", "flow.euler_steps=1,2",
        "flow.n_plot=12", "flow.n_traj=3", "flow.traj_points=4",
        "flow.methods=icfm,otcfm"]


@pytest.mark.slow
def test_stage_writes_both_files_with_the_documented_schema(tmp_path):
    cfg = load_config("demo", overrides=TINY)
    paths = Paths(tmp_path)
    out = run_stage("flow", cfg, paths)
    assert out.status == "ran"
    folder = paths.stage_dir("flow")
    assert not (folder / "derivations.json").exists()  # the derive stage's
    exp = json.loads((folder / "experiment.json").read_text())
    assert exp["profile"] == "demo"
    assert len(exp["runs"]) == 2 * 2 * 3  # pairs × methods × seeds
    metrics = exp["runs"][0]["metrics"]
    for key in ("w2_euler_1", "w2sq_euler_2", "w2_dopri5", "nfe_dopri5", "path_energy", "npe", "straightness",
                "ms_per_step", "ms_ot_per_step", "ms_per_step_without_ot", "final_loss", "pair_cost"):
        assert key in metrics, key
    assert metrics["w2sq_euler_1"] == pytest.approx(metrics["w2_euler_1"] ** 2)
    ot_runs = [r for r in exp["runs"] if r["method"] == "otcfm"]
    assert all(r["metrics"]["ms_ot_per_step"] > 0 for r in ot_runs)
    assert all(r["metrics"]["ms_ot_per_step"] == 0 for r in exp["runs"] if r["method"] == "icfm")
    s = exp["summary"]["8gaussians-moons"]["otcfm"]["w2_euler_1"]
    vals = [r["metrics"]["w2_euler_1"] for r in ot_runs if r["pair"] == "8gaussians-moons"]
    assert s["mean"] == pytest.approx(np.mean(vals)) and s["std"] == pytest.approx(np.std(vals)) and s["n"] == 3
    curve = exp["w2_vs_steps"]["gaussian-moons"]["icfm"]
    assert curve["steps"] == [1, 2] and len(curve["w2_mean"]) == 2
    fig = exp["figures"]
    assert np.array(fig["samples"]["gaussian-moons"]["source"]).shape == (12, 2)
    assert np.array(fig["samples"]["gaussian-moons"]["generated"]["otcfm"]["euler_1"]).shape == (12, 2)
    assert np.array(fig["trajectories"]["8gaussians-moons"]["icfm"]["xy"]).shape == (3, 4, 2)
    assert exp["anchor"]["euler_1_ratio_icfm_over_otcfm"]["reported"] == pytest.approx(6.232 / 0.072)
    assert {"w2_floor", "w2sq_source_target"} <= exp["reference"][0].keys()


def test_same_data_for_both_methods_and_ot_lowers_the_pair_cost():
    from tamrin.flow.batched import train_batched

    cfg = load_config("demo", overrides=TINY).sections["flow"]
    sets = experiment.eval_sets("8gaussians-moons", 0, 40)
    again = experiment.eval_sets("8gaussians-moons", 0, 40)
    assert np.array_equal(sets["x0"], again["x0"]) and np.array_equal(sets["x1"], again["x1"])
    runs = [("8gaussians-moons", m, 0) for m in ("icfm", "otcfm", "lipman")]
    tr = train_batched(runs, steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, hidden=cfg.hidden,
                       sigma=cfg.sigma, sigma_min=cfg.sigma_min, lr_schedule=cfg.lr_schedule)
    cost = dict(zip(("icfm", "otcfm", "lipman"), tr.pair_cost))
    assert cost["otcfm"] < 0.5 * cost["icfm"]
    assert cost["lipman"] == cost["icfm"]  # independent coupling in both: the same pairs, hence the same cost
    assert np.isfinite(tr.losses).all()


def test_config_validation():
    with pytest.raises(ConfigError, match="at least 3 seeds"):
        load_config("demo", overrides=["flow.seeds=0,1"])
    with pytest.raises(ConfigError, match="methods"):
        load_config("demo", overrides=["flow.methods=icfm,sinkhorn"])
    with pytest.raises(ConfigError, match="must include 1"):
        load_config("demo", overrides=["flow.euler_steps=2,4"])


def test_compact_json_round_trips():
    obj = {"a": [[1.5, -2.0], [3e-05, 4]], "b": {"c": [1, 2, 3]}, "d": "text [1, 2]"}
    assert json.loads(stage.dumps_compact(obj)) == obj
    assert "[1.5,-2.0]" in stage.dumps_compact(obj)


def _tiny_cfg(*extra: str):
    return load_config("demo", overrides=[*TINY, "flow.pairs=8gaussians-moons", "flow.methods=icfm,otcfm,lipman",
                                          *extra]).sections["flow"]


def _numbers(result: dict) -> list:
    """experiment.json without the timings (which depend on the machine and on the neighbours)."""
    timing = ("train_seconds", "ms_per_step", "ms_ot_per_step", "ms_per_step_without_ot")
    return [(r["pair"], r["method"], r["seed"], {k: v for k, v in r["metrics"].items() if k not in timing})
            for r in result["runs"]]


def test_ot_threads_give_the_same_numbers_and_figures_for_every_method(tmp_path):
    import logging

    log = logging.getLogger("test")
    inline = experiment.run(_tiny_cfg("flow.ot_threads=0"), "demo", tmp_path / "inline", log)
    pooled = experiment.run(_tiny_cfg("flow.ot_threads=2"), "demo", tmp_path / "pooled", log)
    assert _numbers(inline) == _numbers(pooled)
    assert inline["figures"] == pooled["figures"]
    assert pooled["settings"]["ot_threads"] == 2 and pooled["settings"]["lr_schedule"] == "cosine"
    assert inline["settings"]["device"] == "cpu" and inline["timing"]["trained_runs"] == 9
    for result in (inline, pooled):
        for key in ("samples", "trajectories", "loss_curves"):
            got = result["figures"][key]["8gaussians-moons"]
            got = got["generated"] if key == "samples" else got
            assert sorted(got) == ["icfm", "lipman", "otcfm"], key


def test_the_batched_experiment_matches_the_per_run_reference():
    """`run_one` (one model per run, direct solves) against the batched `run`, metric by metric."""
    import logging
    import tempfile
    from pathlib import Path

    cfg = _tiny_cfg("flow.methods=icfm,otcfm")
    with tempfile.TemporaryDirectory() as work:
        result = experiment.run(cfg, "demo", Path(work), logging.getLogger("test"))
    for run in result["runs"]:
        sets = experiment.eval_sets(run["pair"], run["seed"], cfg.n_eval)
        ref = flow_reference.run_one(run["pair"], run["method"], run["seed"], cfg, sets,
                                 experiment.reference(sets, warm_start=False), with_figures=False)
        for key, value in ref["metrics"].items():
            if key not in ("train_seconds", "ms_per_step", "ms_ot_per_step", "ms_per_step_without_ot"):
                assert run["metrics"][key] == pytest.approx(value, rel=1e-3, abs=1e-4), key


def test_a_cached_run_without_figure_data_is_run_again(tmp_path):
    import logging

    cfg = _tiny_cfg("flow.methods=icfm,lipman")
    work = tmp_path / "work"
    first = experiment.run(cfg, "demo", work, logging.getLogger("test"))
    assert first["timing"]["trained_runs"] == 6
    cached = work / "runs" / "8gaussians-moons_lipman_0.json"
    run = json.loads(cached.read_text())
    del run["figures"]  # as an older version wrote it for every seed but the first
    cached.write_text(json.dumps(run))
    assert experiment._read_run(cached) is None
    again = experiment.run(cfg, "demo", work, logging.getLogger("test"))
    assert again["timing"] == again["timing"] | {"trained_runs": 1, "resumed_runs": 5}  # only that run trains again
    # ... alone now, beside no other run: the same numbers (to float rounding) and figures
    assert again["figures"]["samples"]["8gaussians-moons"]["generated"]["lipman"] == \
        first["figures"]["samples"]["8gaussians-moons"]["generated"]["lipman"]
    for before, after in zip(_numbers(first), _numbers(again)):
        assert before[:3] == after[:3]
        assert after[3] == pytest.approx(before[3], rel=1e-5, abs=1e-7)
    assert "figures" in json.loads(cached.read_text())


def test_plotted_target_samples_cover_both_moons():
    sets = experiment.eval_sets("gaussian-moons", 0, 400)
    shown = experiment.plot_subset(sets["x1"], 100, 0)
    assert shown.shape == (100, 2)
    # The moons sampler lists the upper moon first: a prefix of 100 would hold no point of the lower one.
    lower = sets["x1"][200:]
    assert any((lower == p).all(1).any() for p in shown)
    assert np.array_equal(shown, experiment.plot_subset(sets["x1"], 100, 0))


def test_cosine_schedule():
    from tamrin.flow.batched import learning_rate

    assert learning_rate(0, 100, 0.01, "cosine") == pytest.approx(0.01)
    assert learning_rate(50, 100, 0.01, "cosine") == pytest.approx(0.005)
    assert learning_rate(99, 100, 0.01, "cosine") < 1e-5
    assert learning_rate(99, 100, 0.01, "constant") == 0.01
