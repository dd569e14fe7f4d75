"""Every choice the report's prose makes from numbers, as pure functions over the loaded results (context.py's
dicts): which sentence fits a comparison (a named case such as `loss_trend = "fell_by_half"`), counts over the
shown samples, derived numbers (ratios, sums, unit conversions) and layout numbers. Templates only print these
values and select a sentence with `⟦% if case == "…" %⟧`; they never compare or compute numbers themselves.
`decisions(r)` is the entry point (the template context's `case`); each function is tested branch by branch in
tests/test_report_cases.py.
"""
from __future__ import annotations

from typing import Any, Iterable

from ..contract.facts import (ANSWERS, COLORS, FLOW_METHOD_LABELS, FLOW_PAIR_LABELS, MATERIALS, NUMBERS, SHAPES,
                              SIZES, normalize_for_scoring)
from .context import manifests_of
from .figures import flow_methods, method_label, sampling_floor

QTYPE_FA = {"exist": "وجود", "count": "شمارش", "compare_integer": "مقایسهٔ تعداد", "query_color": "پرسش از رنگ",
            "query_shape": "پرسش از شکل", "query_material": "پرسش از جنس", "query_size": "پرسش از اندازه",
            "compare_attribute": "مقایسهٔ ویژگی"}


def gib(n_bytes: float) -> float:
    return n_bytes / 2 ** 30


def millions(n: float) -> float:
    return n / 1e6


def billions(n: float) -> float:
    return n / 1e9


def _direction(new: float, old: float) -> str:
    return "up" if new > old else ("down" if new < old else "same")


def _higher(a: tuple[float, float], b: tuple[float, float],
            cases: tuple[str, str, str] = ("a_better", "b_better", "within_noise")) -> str:
    """Which of two intervals lies wholly above the other: cases[0] for a, cases[1] for b, cases[2] when they
    overlap (touching counts as overlapping)."""
    if a[0] > b[1]:
        return cases[0]
    if b[0] > a[1]:
        return cases[1]
    return cases[2]


def qtype_names(qtypes: Iterable[str]) -> dict[str, str]:
    """The Persian name of every question type that occurs; a type outside CLEVR's eight keeps its key."""
    return {t: QTYPE_FA.get(t, t) for t in dict.fromkeys([*QTYPE_FA, *qtypes])}


# ------------------------------------------------------------------------------------------------ training

def loss_trend(first: float, last: float) -> str:
    """How the mean loss of the last window compares with that of the first: "fell_by_half" (below half),
    "fell" (lower, but not by half) or "flat_or_rose"."""
    if last < 0.5 * first:
        return "fell_by_half"
    return "fell" if last < first else "flat_or_rose"


# The QLoRA paper's learning rate for models up to 13B (its appendix; 1e-4 above that): a configured peak rate up
# to 2.5× this is "in its range", a larger one needs the prose's reason for a large rate.
QLORA_LR = 2e-4
HELDOUT_FLAT = 0.02  # a relative change of the held-out loss within ±2% over the last third of the run is flat
HELDOUT_RISE = 0.05  # ending 5% above its lowest point is a rise (overfitting)


def lr_case(lr: float) -> str:
    return "qlora_range" if lr <= 2.5 * QLORA_LR else "above_qlora_range"


def heldout_trend(losses: list[float]) -> str:
    """How the held-out loss ends, from its values at the evaluations after training began (step 0 left out):
    "rising" when it ends more than HELDOUT_RISE above its lowest value (the model has begun to overfit),
    "still_falling" when it fell by more than HELDOUT_FLAT over the last third of the evaluations (at least the
    last two), "flattened" otherwise; "too_few" below three evaluations."""
    if len(losses) < 3:
        return "too_few"
    if losses[-1] > (1 + HELDOUT_RISE) * min(losses):
        return "rising"
    back = losses[-max(2, round(len(losses) / 3))]
    return "still_falling" if losses[-1] < (1 - HELDOUT_FLAT) * back else "flattened"


def heldout(rows: list[dict[str, Any]], summary: dict[str, Any]) -> dict[str, Any]:
    """The held-out curve for the prose: its trend, where it started and ended, its lowest point, the final exact
    match, and what it cost next to training."""
    block = summary.get("heldout")
    trained = [r for r in rows if r["step"] > 0 and r["loss"] is not None]
    if not block or not rows:
        return {"trend": "absent"}
    best, last = min(trained, key=lambda r: r["loss"], default={}), trained[-1] if trained else {}
    return {"trend": heldout_trend([r["loss"] for r in trained]), "n": block["n"], "every": block["every"],
            "start": rows[0]["loss"], "last": last.get("loss"), "best": best.get("loss"),
            "best_step": best.get("step"), "last_step": last.get("step"),
            "exact_match": last.get("exact_match"), "share": block["share"]}


def training(summary: dict[str, Any], lora_cfg: dict[str, Any], train_cfg: dict[str, Any]) -> dict[str, Any]:
    rss = summary.get("peak_cpu_rss_mib")
    return {
        "lr_case": lr_case(train_cfg["lr"]),
        "loss_trend": loss_trend(summary["loss_first_mean"], summary["loss_last_mean"]),
        "trainable_fraction": summary["trainable_params"] / summary["total_params"],
        "alpha_over_rank": lora_cfg["alpha"] / lora_cfg["rank"],
        "multi_gpu": summary["world_size"] > 1,
        "clips_gradients": bool(train_cfg.get("max_grad_norm")),
        "on_gpu": summary.get("peak_gpu_mem_gib") is not None,
        "peak_rss_gib": None if rss is None else rss / 1024,
    }


# ------------------------------------------------------------------------------------------------ ROUGE, samples

def rouge(base: dict[str, Any], tuned: dict[str, Any]) -> dict[str, Any]:
    """The comparisons the ROUGE analysis states; `ci_case`: whether the two 95 % intervals of ROUGE-L are
    disjoint."""
    gap = lambda m: m["rouge1"]["r"] - m["rouge1"]["p"]  # noqa: E731 - recall above precision: verbose answers
    return {
        "rougeL_change": _direction(tuned["rougeL"]["f"], base["rougeL"]["f"]),
        "em_change": _direction(tuned["exact_match"], base["exact_match"]),
        "ci_case": _higher((tuned["rougeL"]["ci_low"], tuned["rougeL"]["ci_high"]),
                           (base["rougeL"]["ci_low"], base["rougeL"]["ci_high"]),
                           ("tuned_better", "base_better", "overlap")),
        "base_verbose": base["rouge1"]["p"] < base["rouge1"]["r"],
        "gap_shrank": gap(tuned) < gap(base),
    }


def per_qtype(per_q: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The question types with the highest and the lowest exact match (ties: the later type in the file's order
    is the best, the earlier the worst); None with fewer than 2 types."""
    if len(per_q) < 2:
        return None
    ranked = sorted(per_q.items(), key=lambda kv: kv[1]["exact_match"])
    return {name: {"qtype": t, "exact_match": x["exact_match"]}
            for name, (t, x) in (("worst", ranked[0]), ("best", ranked[-1]))}


def in_vocabulary(answer: str) -> bool:
    """Whether an answer, normalised as the eval stage normalises it, is one of CLEVR's answers."""
    return normalize_for_scoring(answer) in ANSWERS


def samples(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts over the shown samples and the named format case of the discussion."""
    base_out = sum(not in_vocabulary(x["base"]) for x in rows)
    tuned_out = sum(not in_vocabulary(x["finetuned"]) for x in rows)
    return {
        "n": len(rows),
        "base_ok": sum(x["base_ok"] for x in rows), "tuned_ok": sum(x["finetuned_ok"] for x in rows),
        "both_ok": sum(x["base_ok"] and x["finetuned_ok"] for x in rows),
        "only_tuned": sum(x["finetuned_ok"] and not x["base_ok"] for x in rows),
        "only_base": sum(x["base_ok"] and not x["finetuned_ok"] for x in rows),
        "base_out": base_out, "tuned_out": tuned_out,
        "base_long": sum(len(x["base"].split()) > 1 for x in rows),
        "base_empty": sum(not x["base"].strip() for x in rows),
        "format_case": "base_off_format" if base_out > tuned_out else (
            "all_in_format" if base_out == tuned_out == 0 else "mixed"),
        "vocab_size": len(ANSWERS),
    }


# ------------------------------------------------------------------------------------------------ outputs (1.5.4)

# A model "collapses" when it gives one answer to at least half of the test questions, or two answers to at least
# four fifths. CLEVR's own answers are far from that (yes and no together are about two fifths of its questions,
# the rest spread over 26 answers), so a correct model never meets either bar; the report prints the reference
# distribution beside the models' so a reader can check.
COLLAPSE_TOP1 = 0.5
COLLAPSE_TOP2 = 0.8
SHOWN_ANSWERS = 3  # the most frequent answers the discussion names per model
ANSWER_CHARS = 24  # a longer output is cut for display («…»); the distribution itself counts whole outputs
DISCUSSED_MODELS = ("base", "finetuned", "baseline")


def collapse_case(top: list[dict[str, Any]]) -> str:
    """From the most frequent answers ({answer, share}, most frequent first): "one_answer" (the first has a share
    ≥ COLLAPSE_TOP1), "two_answers" (the first two together ≥ COLLAPSE_TOP2) or "varied"."""
    shares = [x["share"] for x in top]
    if shares and shares[0] >= COLLAPSE_TOP1:
        return "one_answer"
    return "two_answers" if sum(shares[:2]) >= COLLAPSE_TOP2 else "varied"


def difference_case(d: dict[str, float]) -> str:
    """A paired difference a − b with its 95 % interval: "a_better" / "b_better" when the interval excludes 0."""
    return _higher((d["ci_low"], d["ci_high"]), (0, 0))


def truncation_case(t: dict[str, Any] | None) -> str:
    """Whether any output stopped at the generation limit; "not_generated" for the baseline (t is None)."""
    if t is None:
        return "not_generated"
    return "some" if t["truncated"] > 0 else "none"


def shown_answer(answer: str, limit: int = ANSWER_CHARS) -> str:
    """An answer as the discussion prints it: cut to `limit` characters with «…» (an empty output stays "")."""
    return answer if len(answer) <= limit else answer[:limit].rstrip() + "…"


def _shown(x: dict[str, Any]) -> dict[str, Any]:
    return {"answer": shown_answer(x["answer"]), "empty": x["answer"] == "", "share": x["share"]}


def model_outputs(outputs: dict[str, Any], metrics: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    """One model's paragraph: its top answers with their share among the correct answers (0 when not among the
    reference's kept top answers), the collapse case, truncation, and its best and worst question types."""
    ref_share = {x["answer"]: x["share"] for x in reference["top"]}  # answers are distinct (a Counter's keys)
    top = [{**_shown(x), "reference_share": ref_share.get(x["answer"], 0.0)} for x in outputs["top"][:SHOWN_ANSWERS]]
    collapse = collapse_case(outputs["top"])
    return {"n": outputs["n"], "distinct": outputs["distinct"], "top": top,
            "collapse": collapse, "collapsed": collapse != "varied",
            "top2_share": sum(x["share"] for x in outputs["top"][:2]),
            "top2_reference_share": sum(x["reference_share"] for x in top[:2]),
            "top_never_correct": bool(top) and top[0]["reference_share"] == 0,
            "truncation_case": truncation_case(outputs["truncation"]), "truncation": outputs["truncation"],
            "exact_match": metrics["exact_match"], "per_qtype": per_qtype(metrics["per_qtype"]),
            "same_on_every_qtype": len({q["exact_match"] for q in metrics["per_qtype"].values()}) == 1}


def comparison(c: dict[str, Any], qtypes: Iterable[str]) -> dict[str, Any]:
    """A paired comparison a − b: the overall case and only the question types whose interval excludes 0
    (in `qtypes` order), each with its direction."""
    per_q = c["per_qtype"]
    supported = [{"qtype": t, **per_q[t], "size": abs(per_q[t]["diff"]), "case": difference_case(per_q[t])}
                 for t in dict.fromkeys([*qtypes, *per_q])
                 if t in per_q and difference_case(per_q[t]) != "within_noise"]
    return {"overall": {**c["overall"], "size": abs(c["overall"]["diff"]), "case": difference_case(c["overall"])},
            "supported": supported, "a_better": [x for x in supported if x["case"] == "a_better"],
            "b_better": [x for x in supported if x["case"] == "b_better"],
            # every type favours the same model: the prose names the smallest difference instead of the list
            "uniform": len(supported) == len(per_q) > 1 and len({x["case"] for x in supported}) == 1,
            "smallest": min(supported, key=lambda x: x["size"], default=None),
            "n_types": len(per_q), "n_within_noise": len(per_q) - len(supported)}


def discussion(ev: dict[str, Any], qtypes: Iterable[str]) -> dict[str, Any]:
    """What the computed discussion of the outputs (1.5.4) states: per model its answers, collapse, truncation
    and weakest types; the paired comparisons ("finetuned_vs_base", …); the reference answer distribution."""
    a = ev["analysis"]
    qtypes = list(qtypes)
    models = {m: model_outputs(a["models"][m], ev[m]["metrics"], a["reference"])
              for m in DISCUSSED_MODELS if m in a["models"]}
    return {"models": models, "bootstrap": a["bootstrap"],
            "comparisons": {f"{c['a']}_vs_{c['b']}": comparison(c, qtypes) for c in a["comparisons"]},
            "reference": {"distinct": a["reference"]["distinct"],
                          "top": [_shown(x) for x in a["reference"]["top"][:SHOWN_ANSWERS]]},
            "truncated": [m for m in ("base", "finetuned") if m in models and models[m]["truncation_case"] == "some"]}


# ------------------------------------------------------------------------------------------------ memory

MEMORY_COLUMNS = ("full_ft", "full_ft_mixed_fp32_master", "lora", "qlora")
# tab:memory breaks the model state into its parts under the assignment's textbook assumptions; the final answer
# (tab:memory-answer) gives each method's total once; the supplement adds what the code keeps and the measurement.
MEMORY_BREAKDOWN_ROWS = ("trainable_params", "weights", "master_weights", "grads", "adam_fp32", "adam_bf16")
MEMORY_ANSWER_ROWS = (("full_adam_fp32", "full_ft", "adam_fp32"), ("full_adam_bf16", "full_ft", "adam_bf16"),
                      ("full_mixed", "full_ft_mixed_fp32_master", "adam_fp32"), ("lora", "lora", "adam_fp32"),
                      ("qlora", "qlora", "adam_fp32"))
MEASURED_MODES = (("qlora_nf4", "qlora"), ("lora_bf16", "lora"), ("full_ft_bf16", "full_ft"))
SPEED_TOLERANCE = 1.10  # steady-state step times within 10 % of each other count as similar
RECONCILE_TOLERANCE = 0.01  # the as-implemented weights must match the measured ones to 1 %


def memory_breakdown(m: dict[str, Any]) -> list[dict[str, Any]]:
    """tab:memory's rows: {key, kind ("count" | "gib"), cells (one per MEMORY_COLUMNS; None = —)}."""
    rows = []
    for key in MEMORY_BREAKDOWN_ROWS:
        cells = [b["optimizer"][key] if key.startswith("adam_") else b.get(key)
                 for b in (m["budgets"][c] for c in MEMORY_COLUMNS)]
        count = key == "trainable_params"
        rows.append({"key": key, "kind": "count" if count else "gib",
                     "cells": cells if count else [None if c is None else gib(c) for c in cells]})
    return rows


def memory_as_implemented(m: dict[str, Any]) -> list[dict[str, Any]]:
    """The supplement's table: per mode, what the code keeps (weights, gradients, AdamW states, total; GiB)
    beside the textbook state, and the difference."""
    rows = []
    for mode, budget in MEASURED_MODES:  # AdamW keeps bf16 states for a bf16 full fine-tune
        a, textbook = m["as_implemented"][mode], m["budgets"][budget]["total"]["adam_bf16" if budget == "full_ft"
                                                                                else "adam_fp32"]
        rows.append({"mode": mode, "textbook_gib": gib(textbook),
                     **{f"{k}_gib": gib(a[k]) for k in ("weights", "grads", "optimizer", "total")},
                     "extra_gib": gib(a["total"] - textbook)})
    return rows


def speed_case(qlora_s: float | None, lora_s: float | None) -> str:
    """Steady-state seconds per step of QLoRA against LoRA on a bf16 base: "qlora_slower", "similar",
    "qlora_faster", or "not_measured" when either lacks a warm-up-excluded time."""
    if qlora_s is None or lora_s is None:
        return "not_measured"
    if qlora_s > SPEED_TOLERANCE * lora_s:
        return "qlora_slower"
    return "qlora_faster" if qlora_s * SPEED_TOLERANCE < lora_s else "similar"


def measured(m: dict[str, Any]) -> dict[str, Any] | None:
    """The GPU measurement beside the as-implemented bytes, mode by mode (None when nothing was measured)."""
    mm, rec = m.get("measured"), m.get("measured_vs_computed")
    if not mm:
        return None
    rows = []
    for mode, _ in MEASURED_MODES:
        if mode not in mm["modes"]:
            continue
        x, r = mm["modes"][mode], rec["modes"][mode]
        row = {"mode": mode, "ok": bool(x["ok"]), "error": x.get("error") or "failed"}
        if x["ok"]:
            row.update(weights_expected_gib=gib(r["weights_expected"]), weights_measured_gib=gib(r["weights_measured"]),
                       weights_rel_error=r["weights_rel_error"], peak_allocated_gib=gib(x["peak_allocated"]),
                       peak_reserved_gib=gib(x["peak_reserved"]), seconds_per_step=x.get("seconds_per_step_steady"))
        rows.append(row)
    by_mode = {row["mode"]: row for row in rows}
    ok = [row for row in rows if row["ok"]]
    q, lo, full = by_mode.get("qlora_nf4"), by_mode.get("lora_bf16"), by_mode.get("full_ft_bf16")
    both = q is not None and lo is not None and q["ok"] and lo["ok"]
    speed = speed_case(q.get("seconds_per_step") if both else None, lo.get("seconds_per_step") if both else None)
    return {
        "device": mm["device"], "batch": mm["batch"], "seq_len": mm["seq_len"], "steps": mm["steps"],
        "warmup_steps": mm.get("warmup_steps"), "rows": rows,
        "timing_case": "steady" if any(row.get("seconds_per_step") is not None for row in ok) else "not_measured",
        "speed_case": speed,
        "speed_ratio": q["seconds_per_step"] / lo["seconds_per_step"] if speed != "not_measured" else None,
        "qlora_and_lora": both, "qlora": q, "lora": lo,
        "full_ft_case": "absent" if full is None else ("ok" if full["ok"] else "oom"), "full_ft": full,
        "max_weights_rel_error": max((abs(row["weights_rel_error"]) for row in ok), default=None),
        "reconciles": bool(ok) and all(abs(row["weights_rel_error"]) < RECONCILE_TOLERANCE for row in ok),
    }


def memory(m: dict[str, Any]) -> dict[str, Any]:
    """tab:memory's rows, the numbers the prose and the boxed answer state (GiB), and the measurement view."""
    B, A, act = m["budgets"], m["as_implemented"], m["activations_estimate"]
    sc = m["siglip_scope"]
    return {
        "breakdown": memory_breakdown(m),
        "answer_rows": [{"key": key, "gib": gib(B[b]["total"][adam]),
                         "bytes_per_param": B[b]["bytes_per_param_total"][adam]}
                        for key, b, adam in MEMORY_ANSWER_ROWS],
        "as_implemented": memory_as_implemented(m),
        "bf16_weights_gib": gib(2 * m["params"]["total"]),
        "lora_training_state_gib": gib(B["lora"]["grads"] + B["lora"]["optimizer"]["adam_fp32"]),
        "lora_over_qlora_weights": B["lora"]["weights"] / B["qlora"]["weights"],
        "full_over_lora": B["full_ft"]["total"]["adam_fp32"] / B["lora"]["total"]["adam_fp32"],
        "qlora_upcast_gib": gib(A["qlora_nf4"]["weights"] - B["qlora"]["weights"]),
        "siglip": {"params": sc["params"], "state_gib": gib(sc["state_bytes"]["as_implemented"]),
                   "state_textbook_gib": gib(sc["state_bytes"]["textbook"]),
                   "activations_ckpt_gib": gib(sc["activations"]["with_grad_ckpt"]),
                   "activations_no_ckpt_gib": gib(sc["activations"]["without_grad_ckpt"]),
                   "params_all": m["lora"]["by_scope"]["all"]["peft"],
                   "params_language_model": m["lora"]["by_scope"]["language_model"]["peft"]},
        "answer": {"qlora_as_implemented": gib(A["qlora_nf4"]["total"]),  # the boxed final answer, GiB
                   "activations_ckpt": gib(act["with_grad_ckpt"]["total_suffix_loss"]),
                   "activations_no_ckpt": gib(act["without_grad_ckpt"]["total_suffix_loss"])},
        "measured": measured(m),
    }


# ------------------------------------------------------------------------------------------------ flow

def _means(summary: dict[str, Any], **metrics: str) -> dict[str, float]:
    return {name: summary[metric]["mean"] for name, metric in metrics.items()}


def flow_pair(label: str, by_method: dict[str, Any], k1: int, floor: float) -> dict[str, Any]:
    """I-CFM against OT-CFM on one pair: the numbers the prose states and its named cases.
    euler_case: "otcfm_better" (lower W2 after k1 Euler steps) | "no_advantage";
    dopri_case: "equal_above_floor" (means within the sum of the seed std's, both above the sampling floor by
    more than that spread) | "equal_near_floor" | "differ"."""
    I, O = by_method["icfm"], by_method["otcfm"]
    shared = dict(w2_1=f"w2_euler_{k1}", w2_d="w2_dopri5", nfe="nfe_dopri5", straight="straightness",
                  pair_cost="pair_cost")
    i, o = _means(I, **shared), _means(O, **shared, ms_ot="ms_ot_per_step")
    spread = I["w2_dopri5"]["std"] + O["w2_dopri5"]["std"]
    if abs(i["w2_d"] - o["w2_d"]) > spread:
        dopri = "differ"
    else:
        dopri = "equal_above_floor" if min(i["w2_d"], o["w2_d"]) - spread > floor else "equal_near_floor"
    return {"label": label, "k1": k1, "floor": floor, "icfm": i, "otcfm": o,
            "euler_case": "otcfm_better" if o["w2_1"] < i["w2_1"] else "no_advantage",
            "euler_ratio": i["w2_1"] / o["w2_1"], "dopri_case": dopri,
            "ms_ratio": O["ms_per_step"]["mean"] / I["ms_per_step"]["mean"]}


def anchor_case(ours: float, reported: float) -> str:
    """Our I-CFM/OT-CFM one-step W2² ratio against the reference's: "consistent" (both > 1 and within a factor
    of 3), "smaller" / "larger" (right direction, more than 3× apart), "inconsistent" (OT-CFM not better)."""
    if ours <= 1:
        return "inconsistent"
    if ours * 3 >= reported and ours <= reported * 3:
        return "consistent"
    return "smaller" if ours < reported else "larger"


def flow(e: dict[str, Any], floors: dict[str, float]) -> dict[str, Any]:
    st, summary = e["settings"], e["summary"]
    k1 = min(st["euler_steps"])
    methods = flow_methods(e)  # the methods with results, in the settings' order (what the figures draw)
    pairs = [flow_pair(FLOW_PAIR_LABELS[p], summary[p], k1, floors[p]) for p in st["pairs"]
             if "icfm" in summary[p] and "otcfm" in summary[p]]
    better = sum(p["euler_case"] == "otcfm_better" for p in pairs)
    w2_1 = f"w2_euler_{k1}"
    lip_rows = [{"label": FLOW_PAIR_LABELS[p],
                 **_means(summary[p]["lipman"], lipman_w2_1=w2_1, lipman_w2_d="w2_dopri5", lipman_nfe="nfe_dopri5"),
                 "icfm_w2_1": summary[p]["icfm"][w2_1]["mean"], "otcfm_w2_1": summary[p]["otcfm"][w2_1]["mean"]}
                for p in st["pairs"] if all(m in summary[p] for m in ("lipman", "icfm", "otcfm"))]
    closer = sum(abs(x["lipman_w2_1"] - x["icfm_w2_1"]) < abs(x["lipman_w2_1"] - x["otcfm_w2_1"]) for x in lip_rows)
    ratio, reported = e["anchor"]["euler_1_ratio_icfm_over_otcfm"], e["anchor"]["reported_w2_squared"]["euler_1"]
    return {
        "k1": k1, "methods": methods, "pairs": pairs,
        "method_label": {m: FLOW_METHOD_LABELS.get(m, m) for m in methods},
        "method_short": {m: method_label(m) for m in methods},
        "table": [{"pair": p, "label": FLOW_PAIR_LABELS[p], "floor": floors[p],
                   "methods": [m for m in methods if m in summary[p]]} for p in st["pairs"]],
        "ot_summary": "none" if not pairs or better == 0 else ("all" if better == len(pairs) else "some"),
        "structured_source": "8gaussians-moons" in st["pairs"],
        "lipman": None if not lip_rows else {
            "rows": lip_rows, "closer_case": "all_closer_to_icfm" if closer == len(lip_rows) else "not_all"},
        "anchor": {"case": anchor_case(ratio["ours"], ratio["reported"]), "ours": ratio["ours"],
                   "reported": ratio["reported"], "icfm_reported": reported["icfm"]["mean"],
                   "otcfm_reported": reported["otcfm"]["mean"]},
    }


# ------------------------------------------------------------------------------------------------ ablation

TIME_GROWTH = 1.5  # a step of the largest rank under 1.5× that of the smallest counts as nearly constant


def rank_effect(rows: list[dict[str, Any]]) -> str:
    """What the measured exact match says about the rank: "within_noise" (every rank's exact match lies inside
    the best rank's 95 % interval), "grows_with_rank" (the best is the largest rank and a smaller one lies
    outside that interval), "peaks_below_max" (the best is a smaller rank, the others outside its interval)."""
    best = max(rows, key=lambda x: (x["exact_match"], -x["rank"]))
    lo, hi = best["exact_match_ci"]
    if all(lo <= x["exact_match"] <= hi for x in rows):
        return "within_noise"
    return "grows_with_rank" if best["rank"] == max(x["rank"] for x in rows) else "peaks_below_max"


def ablation(ab: dict[str, Any]) -> dict[str, Any]:
    """The rank ablation's table rows, its named cases, or (disabled) the time estimate."""
    st, est = ab["settings"], ab["estimate"]
    out: dict[str, Any] = {"enabled": ab["enabled"], "skipped_ranks": [x["rank"] for x in ab["skipped"]],
                           "estimate_minutes": None if est["total_seconds"] is None else est["total_seconds"] / 60,
                           "planned_runs": est["runs"], "steps": st["steps"]}
    if not ab["enabled"]:
        return out
    rows = [{**x, "peak_gpu_gib": None if x["peak_gpu_bytes"] is None else gib(x["peak_gpu_bytes"]),
             "adapter_state_mib": x["adapter_state_bytes"] / 2 ** 20,
             "ms_per_step": None if x["seconds_per_step"] is None else 1000 * x["seconds_per_step"],
             "main_base": x["quantization"] == st["quantization"]} for x in ab["runs"]]
    main = [x for x in rows if x["main_base"]]
    best = max(main, key=lambda x: (x["exact_match"], -x["rank"]))
    for x in rows:
        x["is_best"] = x is best
    small, large = min(main, key=lambda x: x["rank"]), max(main, key=lambda x: x["rank"])
    timed = small["seconds_per_step"] is not None and large["seconds_per_step"] is not None
    comparison = None
    u = next((x for x in rows if not x["main_base"]), None)
    same = next((x for x in main if x["rank"] == u["rank"]), None) if u else None
    if same is not None:
        comparison = {"rank": u["rank"], "quantized": same, "unquantized": u,
                      "quality_case": _higher(same["exact_match_ci"], u["exact_match_ci"],
                                              ("quantized_better", "unquantized_better", "within_noise")),
                      "speed_ratio": None if not (same["seconds_per_step"] and u["seconds_per_step"])
                      else same["seconds_per_step"] / u["seconds_per_step"]}
    return {**out, "rows": rows, "best": best, "smallest": small, "largest": large,
            "effect": rank_effect(main), "on_gpu": all(x["peak_gpu_gib"] is not None for x in rows),
            "params_ratio": large["trainable_params"] / small["trainable_params"],
            "rank_ratio": large["rank"] / small["rank"],
            "time_ratio": large["seconds_per_step"] / small["seconds_per_step"] if timed else None,
            "time_case": "not_measured" if not timed else (
                "nearly_constant" if large["seconds_per_step"] < TIME_GROWTH * small["seconds_per_step"] else "grows"),
            "comparison": comparison}


# ------------------------------------------------------------------------------------------------ entry

def attribution(manifests: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """This tool's identity for the «منابع کد و ابزارها» section: its package version and the commit(s) the
    stages ran (a `-dirty` suffix means uncommitted changes), from the manifests."""
    commits: dict[str, list[str]] = {}
    for stage, m in manifests.items():
        commits.setdefault(str(m.get("code_version", "?")), []).append(stage)
    versions = sorted({str((m.get("packages") or {}).get("tamrin")) for m in manifests.values()
                       if (m.get("packages") or {}).get("tamrin")})
    return {"tool_versions": versions,
            "commits": [{"commit": c.removesuffix("-dirty")[:12], "dirty": c.endswith("-dirty"), "stages": st}
                        for c, st in commits.items()]}


def layout(n_examples: int, n_samples: int, n_flow_methods: int) -> dict[str, int]:
    """Grid columns and figure widths that depend on how many items there are."""
    return {"example_columns": min(n_examples, 4), "sample_columns": min(n_samples, 5),
            "flow_samples_width_pct": min(n_flow_methods + 1, 4) * 25,
            "flow_traj_width_pct": min(n_flow_methods * 30, 100)}


def decisions(r: dict[str, Any], n_examples: int) -> dict[str, Any]:
    """Everything the templates select or print beyond the raw results, from the loaded results `r`."""
    ft = r["finetune"]
    cfg = ft["manifest"]["config"]
    fl = flow(r["flow"]["experiment"], sampling_floor(r["flow"]["experiment"]))
    return {
        "clevr": {"n_answers": len(ANSWERS), "n_colors": len(COLORS), "n_shapes": len(SHAPES),
                  "n_materials": len(MATERIALS), "n_sizes": len(SIZES), "min_number": int(NUMBERS[0]),
                  "max_number": int(NUMBERS[-1])},  # CLEVR's closed world, never typed into a template
        "training": training(ft["summary"], cfg["lora"], cfg["train"]),
        "heldout": heldout(ft.get("heldout", []), ft["summary"]),
        "rouge": rouge(r["eval"]["base"]["metrics"], r["eval"]["finetuned"]["metrics"]),
        "samples": samples(r["eval"]["samples"]),
        "discussion": discussion(r["eval"], r["data"]["qtypes"]),
        "memory": memory(r["memory"]),
        "flow": fl,
        "ablation": ablation(r["ablation"]),
        "attribution": attribution(manifests_of(r)),
        "layout": layout(n_examples, len(r["eval"]["samples"]), len(fl["methods"])),
    }
