"""Every choice the report's prose makes from numbers, as pure functions over the loaded results (context.py's
dicts): which sentence fits a comparison (a named case such as `loss_trend = "fell_by_half"`), counts over the
shown samples, derived numbers (ratios, sums, unit conversions) and layout numbers. Templates only print these
values and select a sentence with `⟦% if case == "…" %⟧`; they never compare or compute numbers themselves.

`decisions(r)` is the one entry point (build_context puts it in the template context as `case`); the unit
helpers `gib`, `millions`, `billions` are template globals too. Each function is tested branch by branch in
tests/test_report_cases.py.
"""
from __future__ import annotations

from typing import Any, Iterable, Literal

from ..contract.facts import (ANSWERS, COLORS, FLOW_METHOD_LABELS, FLOW_PAIR_LABELS, MATERIALS, NUMBERS, QTYPES, SHAPES,
                              SIZES, YES_NO, normalize_for_scoring)
from .figures import flow_methods, method_label

GIB = 2 ** 30


# ------------------------------------------------------------------------------------------------ units

def gib(n_bytes: float) -> float:
    """Bytes in GiB (2**30 B)."""
    return n_bytes / GIB


def millions(n: float) -> float:
    return n / 1e6


def billions(n: float) -> float:
    return n / 1e9


def _direction(new: float, old: float) -> str:
    return "up" if new > old else ("down" if new < old else "same")


# ------------------------------------------------------------------------------------------------ CLEVR facts

def clevr_facts() -> dict[str, int]:
    """Counts of CLEVR's closed world for the prose (from contract/facts.py, never typed into a template)."""
    return {"n_answers": len(ANSWERS), "n_qtypes": len(QTYPES), "n_colors": len(COLORS), "n_shapes": len(SHAPES),
            "n_materials": len(MATERIALS), "n_sizes": len(SIZES), "n_yes_no": len(YES_NO),
            "min_number": int(NUMBERS[0]), "max_number": int(NUMBERS[-1]), "n_numbers": len(NUMBERS)}


def qtype_names(qtype_fa: dict[str, str], qtypes: Iterable[str]) -> dict[str, str]:
    """The Persian name of every question type that occurs; a type outside CLEVR's eight keeps its key."""
    return {t: qtype_fa.get(t, t) for t in dict.fromkeys([*qtype_fa, *qtypes])}


# ------------------------------------------------------------------------------------------------ training

def loss_trend(first: float, last: float) -> str:
    """How the mean loss of the last window compares with that of the first: "fell_by_half" (below half),
    "fell" (lower, but not by half) or "flat_or_rose"."""
    if last < 0.5 * first:
        return "fell_by_half"
    if last < first:
        return "fell"
    return "flat_or_rose"


# The QLoRA paper's learning rate for models up to 13B (its appendix; 1e-4 above that): a configured peak rate up
# to 2.5× this is "in its range", a larger one needs the prose's reason for a large rate.
QLORA_LR = 2e-4


def lr_case(lr: float) -> Literal["qlora_range", "above_qlora_range"]:
    """Whether the configured peak learning rate lies within the QLoRA paper's range (≤ 2.5 × 2e-4)."""
    return "qlora_range" if lr <= 2.5 * QLORA_LR else "above_qlora_range"



HeldoutTrend = Literal["absent", "too_few", "still_falling", "flattened", "rising"]
HELDOUT_FLAT = 0.02  # a relative change of the held-out loss within ±2% over the last third of the run is flat
HELDOUT_RISE = 0.05  # ending 5% above its lowest point is a rise (overfitting)


def heldout_trend(losses: list[float]) -> HeldoutTrend:
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
    best = min(trained, key=lambda r: r["loss"]) if trained else None
    return {"trend": heldout_trend([r["loss"] for r in trained]), "n": block["n"], "every": block["every"],
            "start": rows[0]["loss"], "last": trained[-1]["loss"] if trained else None,
            "best": best and best["loss"], "best_step": best and best["step"],
            "last_step": trained[-1]["step"] if trained else None,
            "exact_match": trained[-1]["exact_match"] if trained else None, "share": block["share"]}


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


# ------------------------------------------------------------------------------------------------ ROUGE

def ci_case(base: dict[str, float], tuned: dict[str, float]) -> str:
    """Whether the two 95 % intervals are disjoint: "tuned_better", "base_better" or "overlap"."""
    if tuned["ci_low"] > base["ci_high"]:
        return "tuned_better"
    if base["ci_low"] > tuned["ci_high"]:
        return "base_better"
    return "overlap"




def rouge(base: dict[str, Any], tuned: dict[str, Any]) -> dict[str, Any]:
    """The comparisons the ROUGE analysis states, each a named case or a flag."""
    gap = lambda m: m["rouge1"]["r"] - m["rouge1"]["p"]  # noqa: E731 - recall above precision: verbose answers
    return {
        "rougeL_change": _direction(tuned["rougeL"]["f"], base["rougeL"]["f"]),
        "em_change": _direction(tuned["exact_match"], base["exact_match"]),
        "ci_case": ci_case(base["rougeL"], tuned["rougeL"]),
        "base_verbose": base["rouge1"]["p"] < base["rouge1"]["r"],
        "gap_shrank": gap(tuned) < gap(base),
    }


def per_qtype(per_q: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The question types with the highest and the lowest exact match (ties: the later type in the file's order
    is the best, the earlier the worst); None with fewer than 2 types."""
    if len(per_q) < 2:
        return None
    ranked = sorted(per_q.items(), key=lambda kv: kv[1]["exact_match"])
    (worst, w), (best, b) = ranked[0], ranked[-1]
    return {"best": {"qtype": best, "exact_match": b["exact_match"], "n": b["n"]},
            "worst": {"qtype": worst, "exact_match": w["exact_match"], "n": w["n"]}}


# ------------------------------------------------------------------------------------------------ samples

def in_vocabulary(answer: str) -> bool:
    """Whether an answer, normalised as the eval stage normalises it, is one of CLEVR's answers."""
    return normalize_for_scoring(answer) in ANSWERS


def samples(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts over the shown samples and the named format case of the discussion."""
    base_out = sum(not in_vocabulary(x["base"]) for x in rows)
    tuned_out = sum(not in_vocabulary(x["finetuned"]) for x in rows)
    if base_out > tuned_out:
        fmt = "base_off_format"
    elif base_out == 0 and tuned_out == 0:
        fmt = "all_in_format"
    else:
        fmt = "mixed"
    return {
        "n": len(rows),
        "base_ok": sum(x["base_ok"] for x in rows), "tuned_ok": sum(x["finetuned_ok"] for x in rows),
        "both_ok": sum(x["base_ok"] and x["finetuned_ok"] for x in rows),
        "only_tuned": sum(x["finetuned_ok"] and not x["base_ok"] for x in rows),
        "only_base": sum(x["base_ok"] and not x["finetuned_ok"] for x in rows),
        "base_out": base_out, "tuned_out": tuned_out,
        "base_long": sum(len(x["base"].split()) > 1 for x in rows),
        "base_empty": sum(not x["base"].strip() for x in rows),
        "format_case": fmt,
        "vocab_size": len(ANSWERS),
    }


# ------------------------------------------------------------------------------------------------ outputs (1.5.4)

CollapseCase = Literal["one_answer", "two_answers", "varied"]
DifferenceCase = Literal["a_better", "b_better", "within_noise"]
TruncationCase = Literal["none", "some", "not_generated"]
# A model "collapses" when it gives one answer to at least half of the test questions, or two answers to at least
# four fifths. CLEVR's own answers are far from that (yes and no together are about two fifths of its questions,
# the rest spread over 26 answers), so a correct model never meets either bar; the report prints the reference
# distribution beside the models' so a reader can check.
COLLAPSE_TOP1 = 0.5
COLLAPSE_TOP2 = 0.8
SHOWN_ANSWERS = 3  # the most frequent answers the discussion names per model
ANSWER_CHARS = 24  # a longer output is cut for display («…»); the distribution itself counts whole outputs
DISCUSSED_MODELS = ("base", "finetuned", "baseline")


def collapse_case(top: list[dict[str, Any]]) -> CollapseCase:
    """From the most frequent answers ({answer, share}, most frequent first): "one_answer" (the first has a share
    ≥ COLLAPSE_TOP1), "two_answers" (the first two together ≥ COLLAPSE_TOP2) or "varied"."""
    shares = [x["share"] for x in top]
    if shares and shares[0] >= COLLAPSE_TOP1:
        return "one_answer"
    if sum(shares[:2]) >= COLLAPSE_TOP2:
        return "two_answers"
    return "varied"


def difference_case(d: dict[str, float]) -> DifferenceCase:
    """A paired difference a − b with its 95 % interval: "a_better" / "b_better" when the interval excludes 0."""
    if d["ci_low"] > 0:
        return "a_better"
    if d["ci_high"] < 0:
        return "b_better"
    return "within_noise"


def truncation_case(t: dict[str, Any] | None) -> TruncationCase:
    """Whether any output stopped at the generation limit; "not_generated" for the baseline (t is None)."""
    if t is None:
        return "not_generated"
    return "some" if t["truncated"] > 0 else "none"


def shown_answer(answer: str, limit: int = ANSWER_CHARS) -> str:
    """An answer as the discussion prints it: cut to `limit` characters with «…» (an empty output stays "")."""
    return answer if len(answer) <= limit else answer[:limit].rstrip() + "…"


def _share_of(dist: dict[str, Any], answer: str) -> float:
    """The share of `answer` in a distribution (0 when it is not among the kept top answers)."""
    return next((x["share"] for x in dist["top"] if x["answer"] == answer), 0.0)


def model_outputs(name: str, outputs: dict[str, Any], metrics: dict[str, Any], reference: dict[str, Any]
                  ) -> dict[str, Any]:
    """One model's paragraph: its top answers (with their share among the correct answers), the collapse case,
    truncation, and its best and worst question types."""
    top = [{**_shown(x), "reference_share": _share_of(reference, x["answer"]), "count": x["count"]}
           for x in outputs["top"][:SHOWN_ANSWERS]]
    collapse = collapse_case(outputs["top"])
    ems = [q["exact_match"] for q in metrics["per_qtype"].values()]
    return {"model": name, "n": outputs["n"], "distinct": outputs["distinct"], "top": top,
            "collapse": collapse, "collapsed": collapse != "varied",
            "top2_share": sum(x["share"] for x in outputs["top"][:2]),
            "top2_reference_share": sum(x["reference_share"] for x in top[:2]),
            "top_never_correct": bool(top) and top[0]["reference_share"] == 0,
            "truncation_case": truncation_case(outputs["truncation"]), "truncation": outputs["truncation"],
            "exact_match": metrics["exact_match"], "per_qtype": per_qtype(metrics["per_qtype"]),
            "same_on_every_qtype": len(set(ems)) == 1}


def _shown(x: dict[str, Any]) -> dict[str, Any]:
    return {"answer": shown_answer(x["answer"]), "empty": x["answer"] == "", "share": x["share"]}


def comparison(c: dict[str, Any], qtypes: Iterable[str]) -> dict[str, Any]:
    """A paired comparison a − b: the overall case and only the question types whose interval excludes 0
    (in `qtypes` order), each with its direction."""
    order = list(dict.fromkeys([*qtypes, *c["per_qtype"]]))
    supported = [{"qtype": t, **c["per_qtype"][t], "size": abs(c["per_qtype"][t]["diff"]),
                  "case": difference_case(c["per_qtype"][t])}
                 for t in order if t in c["per_qtype"] and difference_case(c["per_qtype"][t]) != "within_noise"]
    return {"a": c["a"], "b": c["b"],
            "overall": {**c["overall"], "size": abs(c["overall"]["diff"]), "case": difference_case(c["overall"])},
            "supported": supported, "a_better": [x for x in supported if x["case"] == "a_better"],
            "b_better": [x for x in supported if x["case"] == "b_better"],
            # every type favours the same model: the prose names the smallest difference instead of the list
            "uniform": len(supported) == len(c["per_qtype"]) > 1 and len({x["case"] for x in supported}) == 1,
            "smallest": min(supported, key=lambda x: x["size"], default=None),
            "n_types": len(c["per_qtype"]), "n_within_noise": len(c["per_qtype"]) - len(supported)}


def discussion(ev: dict[str, Any], qtypes: Iterable[str]) -> dict[str, Any]:
    """Everything the computed discussion of the outputs (1.5.4) states: per model (base, fine-tuned, majority
    baseline) its answers, collapse and truncation cases and weakest types; the paired comparisons by pair name
    ("finetuned_vs_base", …); the collapsed models; the reference answer distribution."""
    a = ev["analysis"]
    qtypes = list(qtypes)
    models = {m: model_outputs(m, a["models"][m], ev[m]["metrics"], a["reference"])
              for m in DISCUSSED_MODELS if m in a["models"]}
    comparisons = {f"{c['a']}_vs_{c['b']}": comparison(c, qtypes) for c in a["comparisons"]}
    ref_top = a["reference"]["top"]
    return {"models": models, "comparisons": comparisons, "bootstrap": a["bootstrap"],
            "collapsed": [m for m in ("base", "finetuned") if m in models and models[m]["collapsed"]],
            "reference": {"distinct": a["reference"]["distinct"], "collapse": collapse_case(ref_top),
                          "top": [_shown(x) for x in ref_top[:SHOWN_ANSWERS]]},
            "truncated": [m for m in ("base", "finetuned") if m in models and models[m]["truncation_case"] == "some"]}


# ------------------------------------------------------------------------------------------------ memory

MEMORY_COLUMNS = ("full_ft", "full_ft_mixed_fp32_master", "lora", "qlora", "qlora_as_implemented")
MEMORY_ROWS = (("trainable_params", "count"), ("weights", "gib"), ("master_weights", "gib"), ("grads", "gib"),
               ("adam_fp32", "gib"), ("adam_bf16", "gib"), ("total_adam_fp32", "gib"), ("total_adam_bf16", "gib"),
               ("bytes_per_param_adam_fp32", "ratio"))
MEASURED_MODES = (("qlora_nf4", "qlora"), ("lora_bf16", "lora"), ("full_ft_bf16", "full_ft"))
SPEED_TOLERANCE = 1.10  # steady-state step times within 10 % of each other count as similar
RECONCILE_TOLERANCE = 0.01  # the as-implemented weights must match the measured ones to 1 %


def _budget_cell(budget: dict[str, Any], row: str) -> float | None:
    if row in ("weights", "grads", "trainable_params", "master_weights"):
        return budget.get(row)
    if row in ("adam_fp32", "adam_bf16"):
        return budget["optimizer"][row]
    if row.startswith("total_"):
        return budget["total"][row[len("total_"):]]
    return budget["bytes_per_param_total"]["adam_fp32"]


def _as_implemented_cell(mode: dict[str, Any], row: str, total_params: int) -> float | None:
    """The as-implemented QLoRA column: fp32 adapters, so its AdamW states sit in the fp32 rows."""
    if row in ("weights", "grads", "trainable_params"):
        return mode[row]
    if row == "adam_fp32":
        return mode["optimizer"]
    if row == "total_adam_fp32":
        return mode["total"]
    if row == "bytes_per_param_adam_fp32":
        return mode["total"] / total_params
    return None  # no fp32 master copy and no bf16 Adam states in this column


def memory_table(m: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of tab:memory: {key, kind ("count" | "gib" | "ratio"), cells (one per MEMORY_COLUMNS; None = —)};
    GiB cells are converted here."""
    P = m["params"]["total"]
    rows = []
    for key, kind in MEMORY_ROWS:
        cells = [_budget_cell(m["budgets"][c], key) for c in MEMORY_COLUMNS[:-1]]
        cells.append(_as_implemented_cell(m["as_implemented"]["qlora_nf4"], key, P))
        if kind == "gib":
            cells = [None if c is None else gib(c) for c in cells]
        rows.append({"key": key, "kind": kind, "cells": cells})
    return rows


# The report's own memory tables (the full view, with the as-implemented column and the measurement, is the
# supplement's): tab:memory breaks the model state into its parts under the assignment's textbook assumptions,
# and the final answer (tab:memory-answer) gives each method's total once.
MEMORY_BREAKDOWN_ROWS = ("trainable_params", "weights", "master_weights", "grads", "adam_fp32", "adam_bf16")
MEMORY_ANSWER_ROWS = (("full_adam_fp32", "full_ft", "adam_fp32"), ("full_adam_bf16", "full_ft", "adam_bf16"),
                      ("full_mixed", "full_ft_mixed_fp32_master", "adam_fp32"), ("lora", "lora", "adam_fp32"),
                      ("qlora", "qlora", "adam_fp32"))


def memory_breakdown(table: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """tab:memory's rows in the report: the parts of the state (no totals: the answer table has them), in the
    textbook columns only (the as-implemented column is the supplement's)."""
    return [{**row, "cells": row["cells"][:-1]} for row in table if row["key"] in MEMORY_BREAKDOWN_ROWS]


def memory_answer_rows(m: dict[str, Any]) -> list[dict[str, Any]]:
    """The final answer, one row per method: {key, gib (model state), bytes_per_param (over all P parameters)}."""
    B = m["budgets"]
    return [{"key": key, "gib": gib(B[b]["total"][adam]), "bytes_per_param": B[b]["bytes_per_param_total"][adam]}
            for key, b, adam in MEMORY_ANSWER_ROWS]


def _textbook_state(m: dict[str, Any], budget: str) -> float:
    """The textbook model state (bytes) of a measured mode: AdamW keeps bf16 states for a bf16 full fine-tune."""
    return m["budgets"][budget]["total"]["adam_bf16" if budget == "full_ft" else "adam_fp32"]


def memory_as_implemented(m: dict[str, Any]) -> list[dict[str, Any]]:
    """The supplement's table: per mode, what the code keeps (weights, gradients, AdamW states, total; GiB)
    beside the textbook state, and the difference."""
    rows = []
    for mode, budget in MEASURED_MODES:
        a, textbook = m["as_implemented"][mode], _textbook_state(m, budget)
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
    if qlora_s * SPEED_TOLERANCE < lora_s:
        return "qlora_faster"
    return "similar"


def measured(m: dict[str, Any]) -> dict[str, Any] | None:
    """The GPU measurement beside the as-implemented bytes, mode by mode (None when nothing was measured)."""
    mm, rec = m.get("measured"), m.get("measured_vs_computed")
    if not mm:
        return None
    rows = []
    for mode, budget in MEASURED_MODES:
        if mode not in mm["modes"]:
            continue
        x, r = mm["modes"][mode], rec["modes"][mode]
        row = {"mode": mode, "ok": bool(x["ok"]), "error": x.get("error") or "failed",
               "state_textbook_gib": gib(_textbook_state(m, budget)),
               "state_as_implemented_gib": gib(m["as_implemented"][mode]["total"])}
        if x["ok"]:
            row.update(weights_expected_gib=gib(r["weights_expected"]), weights_measured_gib=gib(r["weights_measured"]),
                       weights_rel_error=r["weights_rel_error"], peak_allocated_gib=gib(x["peak_allocated"]),
                       peak_reserved_gib=gib(x["peak_reserved"]), beyond_state_gib=gib(r["beyond_state"]),
                       seconds_per_step=x.get("seconds_per_step_steady"))
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
        "qlora_and_lora": both,
        "qlora": q, "lora": lo,
        "full_ft_case": "absent" if full is None else ("ok" if full["ok"] else "oom"),
        "full_ft": full,
        "max_weights_rel_error": max((abs(row["weights_rel_error"]) for row in ok), default=None),
        "reconciles": bool(ok) and all(abs(row["weights_rel_error"]) < RECONCILE_TOLERANCE for row in ok),
    }


def memory(m: dict[str, Any]) -> dict[str, Any]:
    """tab:memory's rows, the numbers the prose and the boxed answer state (GiB), and the measurement view."""
    B, A, act = m["budgets"], m["as_implemented"], m["activations_estimate"]
    sc = m["siglip_scope"]
    table = memory_table(m)
    return {
        "table": table,
        "breakdown": memory_breakdown(table),
        "answer_rows": memory_answer_rows(m),
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
        "answer": {  # the boxed final answer, GiB
            "full_adam_fp32": gib(B["full_ft"]["total"]["adam_fp32"]),
            "full_adam_bf16": gib(B["full_ft"]["total"]["adam_bf16"]),
            "full_mixed": gib(B["full_ft_mixed_fp32_master"]["total"]["adam_fp32"]),
            "lora": gib(B["lora"]["total"]["adam_fp32"]),
            "qlora": gib(B["qlora"]["total"]["adam_fp32"]),
            "qlora_as_implemented": gib(A["qlora_nf4"]["total"]),
            "activations_ckpt": gib(act["with_grad_ckpt"]["total_suffix_loss"]),
            "activations_no_ckpt": gib(act["without_grad_ckpt"]["total_suffix_loss"]),
        },
        "measured": measured(m),
    }


# ------------------------------------------------------------------------------------------------ flow

def _mean(summary: dict[str, Any], metric: str) -> float:
    return summary[metric]["mean"]


def flow_pair(pair: str, label: str, by_method: dict[str, Any], k1: int, floor: float) -> dict[str, Any]:
    """I-CFM against OT-CFM on one pair: the numbers the prose states and its named cases.
    euler_case: "otcfm_better" (lower W2 after k1 Euler steps) | "no_advantage";
    dopri_case: "equal_above_floor" (means within the sum of the seed std's, both above the sampling floor by
    more than that spread) | "equal_near_floor" | "differ"."""
    I, O = by_method["icfm"], by_method["otcfm"]
    w2 = f"w2_euler_{k1}"
    i1, o1 = _mean(I, w2), _mean(O, w2)
    idp, odp = _mean(I, "w2_dopri5"), _mean(O, "w2_dopri5")
    spread = I["w2_dopri5"]["std"] + O["w2_dopri5"]["std"]
    if abs(idp - odp) > spread:
        dopri = "differ"
    elif min(idp, odp) - spread > floor:
        dopri = "equal_above_floor"
    else:
        dopri = "equal_near_floor"
    return {
        "pair": pair, "label": label, "k1": k1, "floor": floor,
        "icfm": {"w2_1": i1, "w2_d": idp, "nfe": _mean(I, "nfe_dopri5"), "straight": _mean(I, "straightness"),
                 "ms": _mean(I, "ms_per_step"), "pair_cost": _mean(I, "pair_cost")},
        "otcfm": {"w2_1": o1, "w2_d": odp, "nfe": _mean(O, "nfe_dopri5"), "straight": _mean(O, "straightness"),
                  "ms": _mean(O, "ms_per_step"), "pair_cost": _mean(O, "pair_cost"),
                  "ms_ot": _mean(O, "ms_ot_per_step")},
        "euler_case": "otcfm_better" if o1 < i1 else "no_advantage",
        "euler_ratio": i1 / o1,
        "dopri_case": dopri,
        "ms_ratio": _mean(O, "ms_per_step") / _mean(I, "ms_per_step"),
    }


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
    labels = {"methods": FLOW_METHOD_LABELS, "pairs": FLOW_PAIR_LABELS}
    k1 = min(st["euler_steps"])
    methods = flow_methods(e)  # the methods with results, in the settings' order (what the figures draw)
    pairs = [flow_pair(p, labels["pairs"][p], summary[p], k1, floors[p]) for p in st["pairs"]
             if "icfm" in summary[p] and "otcfm" in summary[p]]
    better = sum(p["euler_case"] == "otcfm_better" for p in pairs)
    lip_rows = [{"label": labels["pairs"][p], "lipman_w2_1": _mean(summary[p]["lipman"], f"w2_euler_{k1}"),
                 "icfm_w2_1": _mean(summary[p]["icfm"], f"w2_euler_{k1}"),
                 "otcfm_w2_1": _mean(summary[p]["otcfm"], f"w2_euler_{k1}"),
                 "lipman_w2_d": _mean(summary[p]["lipman"], "w2_dopri5"),
                 "lipman_nfe": _mean(summary[p]["lipman"], "nfe_dopri5")}
                for p in st["pairs"] if all(m in summary[p] for m in ("lipman", "icfm", "otcfm"))]
    closer = sum(abs(x["lipman_w2_1"] - x["icfm_w2_1"]) < abs(x["lipman_w2_1"] - x["otcfm_w2_1"]) for x in lip_rows)
    ratio = e["anchor"]["euler_1_ratio_icfm_over_otcfm"]
    return {
        "k1": k1, "methods": methods, "pairs": pairs,
        "method_label": {m: labels["methods"].get(m, m) for m in methods},
        "method_short": {m: method_label(e, m) for m in methods},
        "table": [{"pair": p, "label": labels["pairs"][p], "floor": floors[p],
                   "methods": [m for m in methods if m in summary[p]]} for p in st["pairs"]],
        "ot_summary": "none" if not pairs or better == 0 else ("all" if better == len(pairs) else "some"),
        "structured_source": "8gaussians-moons" in st["pairs"],
        "lipman": None if not lip_rows else {
            "rows": lip_rows, "closer_case": "all_closer_to_icfm" if closer == len(lip_rows) else "not_all"},
        "anchor": {"case": anchor_case(ratio["ours"], ratio["reported"]), "ours": ratio["ours"],
                   "reported": ratio["reported"],
                   "icfm_reported": e["anchor"]["reported_w2_squared"]["euler_1"]["icfm"]["mean"],
                   "otcfm_reported": e["anchor"]["reported_w2_squared"]["euler_1"]["otcfm"]["mean"]},
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


def _interval_case(a: dict[str, Any], b: dict[str, Any]) -> str:
    """Exact match of run a against run b: "a_better" / "b_better" when the 95 % intervals are disjoint,
    else "within_noise"."""
    if a["exact_match_ci"][0] > b["exact_match_ci"][1]:
        return "a_better"
    if b["exact_match_ci"][0] > a["exact_match_ci"][1]:
        return "b_better"
    return "within_noise"


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
             "ms_per_step": None if x["seconds_per_step"] is None else 1000 * x["seconds_per_step"]}
            for x in ab["runs"]]
    main = [x for x in rows if x["quantization"] == st["quantization"]]
    other = [x for x in rows if x["quantization"] != st["quantization"]]
    best = max(main, key=lambda x: (x["exact_match"], -x["rank"]))
    for x in rows:
        x["is_best"], x["main_base"] = x is best, x["quantization"] == st["quantization"]
    small, large = min(main, key=lambda x: x["rank"]), max(main, key=lambda x: x["rank"])
    timed = small["seconds_per_step"] is not None and large["seconds_per_step"] is not None
    comparison = None
    if other:
        u = other[0]
        same = next((x for x in main if x["rank"] == u["rank"]), None)
        if same is not None:
            comparison = {"rank": u["rank"], "quantized": same, "unquantized": u,
                          "quality_case": {"a_better": "quantized_better", "b_better": "unquantized_better",
                                           "within_noise": "within_noise"}[_interval_case(same, u)],
                          "speed_ratio": None if not (same["seconds_per_step"] and u["seconds_per_step"])
                          else same["seconds_per_step"] / u["seconds_per_step"]}
    return {**out, "rows": rows, "main": main, "best": best, "smallest": small, "largest": large,
            "effect": rank_effect(main), "on_gpu": all(x["peak_gpu_gib"] is not None for x in rows),
            "params_ratio": large["trainable_params"] / small["trainable_params"],
            "rank_ratio": large["rank"] / small["rank"],
            "time_ratio": large["seconds_per_step"] / small["seconds_per_step"] if timed else None,
            "time_case": "not_measured" if not timed else (
                "nearly_constant" if large["seconds_per_step"] < TIME_GROWTH * small["seconds_per_step"] else "grows"),
            "comparison": comparison}


# ------------------------------------------------------------------------------------------------ attribution

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


# ------------------------------------------------------------------------------------------------ layout

def layout(n_examples: int, n_samples: int, n_flow_methods: int) -> dict[str, int]:
    """Grid columns and figure widths that depend on how many items there are."""
    return {"example_columns": min(n_examples, 4), "sample_columns": min(n_samples, 5),
            "flow_samples_width_pct": min(n_flow_methods + 1, 4) * 25,
            "flow_traj_width_pct": min(n_flow_methods * 30, 100)}


# ------------------------------------------------------------------------------------------------ entry

def decisions(r: dict[str, Any], floors: dict[str, float], n_examples: int,
              manifests: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Everything the templates select or print beyond the raw results, from the loaded results `r`."""
    ft = r["finetune"]
    cfg = ft["manifest"]["config"]
    exp = r["flow"]["experiment"]
    fl = flow(exp, floors)
    out = {
        "clevr": clevr_facts(),
        "training": training(ft["summary"], cfg["lora"], cfg["train"]),
        "heldout": heldout(ft.get("heldout", []), ft["summary"]),
        "rouge": rouge(r["eval"]["base"]["metrics"], r["eval"]["finetuned"]["metrics"]),
        "samples": samples(r["eval"]["samples"]),
        "discussion": discussion(r["eval"], r["data"]["qtypes"]),
        "memory": memory(r["memory"]),
        "flow": fl,
        "ablation": ablation(r["ablation"]),
        "attribution": attribution(manifests or {}),
        "layout": layout(n_examples, len(r["eval"]["samples"]), len(fl["methods"])),
    }
    return out
