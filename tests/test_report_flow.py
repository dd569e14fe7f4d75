"""The flow figures and table draw every method that has results — three in the fixture (icfm, otcfm, lipman) —
and a method missing from part of experiment.json is left out of that figure instead of failing the report."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from tamrin.report import figures as figs

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "results"
METHODS = ["icfm", "otcfm", "lipman"]


@pytest.fixture(scope="module")
def exp() -> dict:
    return json.loads((FIXTURE / "flow" / "experiment.json").read_text(encoding="utf-8"))


@pytest.fixture
def drawn(monkeypatch):
    """Figures drawn without writing files: the matplotlib Figure objects, by file name."""
    out: dict[str, object] = {}
    monkeypatch.setattr(figs, "_save", lambda fig, path: out.setdefault(path.name, fig) and path)
    return out


def texts(fig) -> list[str]:
    """Axes titles and free texts (the panel grids write their titles as texts of one axes)."""
    return [t for ax in fig.axes for t in [ax.get_title(), *(x.get_text() for x in ax.texts)] if t]


def panels(fig) -> int:
    """Panels of a grid figure: one frame (Rectangle) each."""
    return sum(len(ax.patches) for ax in fig.axes)


def test_the_fixture_has_three_methods_with_figure_data(exp):
    assert exp["settings"]["methods"] == METHODS
    assert figs.flow_methods(exp) == METHODS
    for pair in exp["settings"]["pairs"]:
        assert sorted(exp["figures"]["samples"][pair]["generated"]) == sorted(METHODS)
        assert sorted(exp["figures"]["trajectories"][pair]) == sorted(METHODS)
        assert sorted(exp["w2_vs_steps"][pair]) == sorted(METHODS)


def test_every_flow_figure_draws_every_method(exp, drawn, tmp_path):
    figs.flow_samples_figure(exp, tmp_path / "s.png")
    figs.flow_trajectories_figure(exp, tmp_path / "t.png")
    figs.flow_w2_figure(exp, tmp_path / "w.svg")
    pairs = len(exp["settings"]["pairs"])
    names = [figs.method_label(m) for m in METHODS]
    assert names == ["I-CFM", "OT-CFM", "FM"]
    samples, traj, w2 = drawn["s.png"], drawn["t.png"], drawn["w.svg"]
    assert panels(samples) == 2 * pairs * (1 + len(METHODS))  # per pair: Euler-1 and dopri5 rows
    assert [t for t in texts(samples) if t in names] == names
    assert panels(traj) == pairs * len(METHODS) and [t for t in texts(traj) if t in names] == names
    for ax in w2.axes:
        assert [t.get_text() for t in ax.get_legend().get_texts() if t.get_text() in names] == names


def test_a_method_without_figure_data_is_left_out_not_a_key_error(exp, drawn, tmp_path):
    broken = copy.deepcopy(exp)
    for pair in broken["settings"]["pairs"]:
        del broken["figures"]["samples"][pair]["generated"]["lipman"]
        del broken["figures"]["trajectories"][pair]["lipman"]
        del broken["w2_vs_steps"][pair]["lipman"]
    broken["settings"]["methods"].append("sinkhorn")  # listed, but no results at all
    figs.flow_samples_figure(broken, tmp_path / "s.png")
    figs.flow_trajectories_figure(broken, tmp_path / "t.png")
    figs.flow_w2_figure(broken, tmp_path / "w.svg")
    assert "FM" not in texts(drawn["s.png"]) and "OT-CFM" in texts(drawn["s.png"])
    assert panels(drawn["s.png"]) == 2 * len(broken["settings"]["pairs"]) * 3
    assert figs.flow_methods(broken) == METHODS  # the table still lists lipman: it has a summary


def test_the_w2_figure_names_the_dotted_dopri5_lines_and_separates_close_curves(exp, drawn, tmp_path):
    figs.flow_w2_figure(exp, tmp_path / "w.svg")
    for ax in drawn["w.svg"].axes:
        assert "dopri5 (adaptive)" in [t.get_text() for t in ax.get_legend().get_texts()]
        # each method's points sit at its own x (shifted on the log axis), so equal curves stay visible
        xs = [tuple(line.get_xdata()) for line in ax.lines if len(line.get_xdata()) > 2]
        assert len(set(xs)) == len(METHODS)


def test_source_and_target_are_never_cut_at_a_panel_edge(exp):
    import numpy as np

    for pair in exp["settings"]["pairs"]:
        s = exp["figures"]["samples"][pair]
        stray = [[[50.0, 50.0]] + s["generated"]["icfm"]["euler_1"]]  # one far-away generated sample
        xlim, ylim = figs._pair_limits([s["source"], s["target"]], stray)
        ref = np.asarray(s["source"] + s["target"], dtype=float)
        assert xlim[0] < ref[:, 0].min() and ref[:, 0].max() < xlim[1]
        assert ylim[0] < ref[:, 1].min() and ref[:, 1].max() < ylim[1]
        assert xlim[1] < 50.0  # the stray sample does not shrink the panels


def test_every_per_qtype_bar_carries_its_value_even_zero(drawn, tmp_path):
    base = {"count": {"exact_match": 0.0, "n": 3}, "exist": {"exact_match": 0.5, "n": 4}}
    tuned = {"count": {"exact_match": 0.0, "n": 3}, "exist": {"exact_match": 0.75, "n": 4}}
    figs.per_qtype_figure(["count", "exist"], base, tuned, None, tmp_path / "q.svg")
    labels = [t.get_text() for t in drawn["q.svg"].axes[0].texts]
    assert sorted(labels) == sorted(["0", "50", "0", "75"])


def test_the_majority_baseline_is_a_tick_per_question_type(drawn, tmp_path):
    base = {"count": {"exact_match": 0.0, "n": 3}, "exist": {"exact_match": 0.5, "n": 4}}
    tuned = {"count": {"exact_match": 0.25, "n": 3}, "exist": {"exact_match": 0.75, "n": 4}}
    baseline = {"count": {"exact_match": 0.2, "n": 3}, "exist": {"exact_match": 0.6, "n": 4}}
    figs.per_qtype_figure(["count", "exist"], base, tuned, baseline, tmp_path / "q.svg")
    ax = drawn["q.svg"].axes[0]
    ticks = [seg for coll in ax.collections for seg in coll.get_segments()]
    assert sorted(round(seg[0][1], 6) for seg in ticks) == [20.0, 60.0]  # one tick per type, at its exact match
    assert "majority answer of the type (train)" in [t.get_text() for t in ax.get_legend().get_texts()]
