"""Stage `flow`: question 2 — sympy-checked derivations and the I-CFM vs OT-CFM experiment.

Writes into ctx.out_dir (→ results/flow/):

derivations.json — a JSON list, in report order, of records (see records.Derivation):
  {
    "name":            str    stable id: "thm2_gradients_agree", "thm2_monte_carlo", "thm3_conditional_field",
                              "thm3_continuity", "thm3_ot_path", "thm3_ve_path", "thm3_vp_path", "thm3_ode_samples"
    "title":           str    one English line
    "title_fa":        str    the same in academic Persian — Typst markup (see below)
    "part":            str    assignment part answered: "2.1" (∇θ L_FM = ∇θ L_CFM) or "2.2" (u_t of Theorem 3)
    "statement_typst": str    the claim, Typst math without the surrounding `$`
    "steps_typst":     [str]  the derivation, one Typst math string per step (without `$`)
    "step_notes":      [str]  one English justification per step (same length as steps_typst)
    "step_notes_fa":   [str]  the same in Persian, Typst markup, one per step
    "residual":        float  0.0 for a symbolic identity that sympy reduced to exactly 0 (1.0 if it did not);
                              for a numeric check the measured discrepancy (thm2_monte_carlo: max per-parameter |t|
                              of the paired gradient difference; thm3_ode_samples: max relative error vs ψ_t)
    "tolerance":       float  passed ⇔ residual <= tolerance (0.0 for symbolic records)
    "passed":          bool
    "method":          str    how it was checked (sympy reduction / Monte Carlo / ODE solver)
    "method_fa":       str    the same in Persian, Typst markup
    "assumptions":     [{"typst": str, "text": str, "text_fa": str (Persian, Typst markup),
                         "enters_at_step": int (1-based index into steps_typst)}]   (Theorem 2 only; [] elsewhere)
    "numeric":         null | {...}  numbers behind a numeric check:
        thm2_monte_carlo: samples, batches, parameters, max_abs_z, z_crit, fraction_abs_z_over_1.96,
            grad_norm_fm, grad_norm_cfm, relative_difference, mean_se_fm, mean_se_cfm,
            largest_components [{index, fm, fm_ci95, cfm, cfm_ci95}], loss_fm, loss_cfm, loss_gap, variance_term,
            gap_minus_variance_z, gap_z_crit, negative_control {what, max_abs_z, z_crit, rejected},
            target {means, weights, std}, path {name, sigma_min}, model, checks {gradients_equal,
            gap_equals_variance, test_has_power}
        thm3_ode_samples: paths {ot|ve|vp: {t_end, solver, nfev, times [{t, max_rel_error_vs_psi,
            ks_pvalues [2], ode_mean [2], ode_std [2], path_mean [2], path_std}]}}, min_ks_pvalue, ks_p_crit
  }
  The Persian fields (`*_fa`) are Typst markup, printed by the report as they are: Persian prose in which every
  formula, symbol and Greek letter is inline math `$…$` (the text font has no Greek), code in raw spans, prose
  numbers in Persian digits, technical terms followed by their English name in parentheses at first use.
  Every Typst string (math and markup) is compiled with the `typst` package before the file is written; a
  record that fails its check or does not compile fails the stage (TamrinError naming it).

experiment.json — one object:
  schema_version: 1, profile: "demo" | "paper"
  settings: {pairs, methods, seeds, steps, batch_size, lr, lr_schedule ("constant" | "cosine"), optimizer, hidden,
             model, sigma, sigma_min, n_eval, euler_steps, dopri_tol, ot, w2, threads, workers}
  labels: {methods: {icfm|otcfm|lipman: display name}, pairs: {"gaussian-moons"|"8gaussians-moons": display name}}
  runs: [{pair, method, seed, metrics: {<metric>: float}}]   one per (pair, method, seed); metric keys:
      w2_euler_<n>, w2sq_euler_<n> for every n in settings.euler_steps (W2 and W2² vs held-out target samples),
      w2_dopri5, w2sq_dopri5, nfe_dopri5 (adaptive dopri5, function evaluations),
      path_energy (mean ∫‖v‖² dt), npe (|path_energy − W2²(p0,p1)| / W2²(p0,p1)), straightness
      (mean ∫‖(x_1 − x_0) − v‖² dt) — all three along the finest Euler path,
      train_seconds, ms_per_step, ms_ot_per_step, ms_per_step_without_ot (training cost with/without the OT solve),
      final_loss (mean of the last 5 % of steps), pair_cost (mean ‖x1 − x0‖² of the training pairs)
  reference: [{pair, seed, w2_floor, w2sq_floor (two independent held-out target sets: the sampling floor),
               w2sq_source_target (W2²(p0, p1) on the eval sets, the NPE denominator),
               w2sq_collapse_to_mean (E‖x1 − E x1‖²: the limit of a perfect I-CFM's 1-step Euler W2²)}]
  summary: {pair: {method: {<metric>: {mean, std, n}}}}      over seeds (std with ddof 0)
  w2_vs_steps: {pair: {method: {steps [n...], w2_mean, w2_std, w2sq_mean, w2sq_std (lists aligned with steps),
                                dopri5: {w2, w2sq, nfe, w2_std, w2sq_std, nfe_std}}}}
  anchor: {source, pair, runs, quantity, their_setup,
           reported_w2_squared: {euler_1|adaptive: {icfm|otcfm: {mean, std}}},
           ours_w2_squared: {icfm|otcfm: {euler_1|adaptive: {mean, std}}},
           ours_settings: {steps, batch_size, lr, lr_schedule, n_eval, seeds, hidden} (the run these numbers come
                           from),
           euler_1_ratio_icfm_over_otcfm: {ours, reported}, icfm_euler_1_limit_w2_squared, explanation}
          (ours_* / ratio / limit / explanation only when 8gaussians-moons was run)
  figures: {seed (the seed the arrays come from); every pair and every method of settings is present,
            samples: {pair: {source [[x, y]...], target [[x, y]...] (a seeded random subset of the held-out set),
                             generated: {method: {dopri5 [[x, y]...], euler_1 [[x, y]...]}}}},
            trajectories: {pair: {method: {times [t...], xy [trajectory][time][2]}}}   (dopri5 states),
            loss_curves: {pair: {method: {step [...], loss_mean [...], loss_std [...]}}}}   (window means, over seeds)
"""
from __future__ import annotations

import json
import re
from typing import Any

from ..atomic import write_json, write_text
from ..errors import TamrinError
from . import derivations, experiment


# A list of numbers as json.dumps(indent=...) lays it out: one element per line. Literal newlines never occur
# inside JSON strings, so text that merely looks like a list is left alone.
_NUMBER_LIST = re.compile(r"\[\n\s*(-?[0-9][0-9.eE+-]*(?:,\n\s*-?[0-9][0-9.eE+-]*)*)\n\s*\]")


def dumps_compact(obj: Any) -> str:
    """Indented JSON whose innermost lists of numbers stay on one line (the figure arrays stay small)."""
    text = json.dumps(obj, ensure_ascii=False, indent=1)
    return _NUMBER_LIST.sub(lambda m: "[" + ",".join(v.strip() for v in m.group(1).split(",")) + "]", text) + "\n"


def check_derivations(records: list[Any]) -> None:
    """Raise TamrinError naming every derivation that failed its check or whose Typst does not compile."""
    failed = [r for r in records if not r.passed]
    if failed:
        names = "; ".join(f"{r.name} (residual {r.residual:g} > tolerance {r.tolerance:g}, {r.method})" for r in failed)
        raise TamrinError(f"flow: derivation check failed: {names} — the derivation or its check is wrong; "
                          "fix code/tamrin/flow before building the report")
    bad_typst = derivations.typst_errors(records)
    if bad_typst:
        names = "; ".join(f"{n}: {msg}" for n, msg in bad_typst.items())
        raise TamrinError(f"flow: Typst math of a derivation does not compile: {names} — fix the printer or step")


def run(ctx: Any) -> None:
    import torch

    cfg = ctx.section("flow")
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        records = derivations.build(cfg.numeric_samples, ctx.log)
        check_derivations(records)
        write_json(ctx.out_dir / "derivations.json", [r.to_json() for r in records])
        ctx.log.info(f"derivations: {len(records)} passed")
        result = experiment.run(cfg, ctx.profile, ctx.work_dir, ctx.log)
        write_text(ctx.out_dir / "experiment.json", dumps_compact(result))
    finally:
        torch.set_num_threads(threads)
    anchor = result["anchor"].get("ours_w2_squared", {})
    ctx.extra["flow"] = {"derivations_passed": len(records),
                         "euler_1_w2_squared_8gaussians_moons": {m: v["euler_1"]["mean"] for m, v in anchor.items()}}
