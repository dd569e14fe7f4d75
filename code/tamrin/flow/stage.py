"""Stage `flow`: question 2, part 3 — the I-CFM vs OT-CFM experiment (the derivations are the `derive` stage).

Writes into ctx.out_dir (→ results/flow/):

experiment.json — one object:
  schema_version: 1, profile: "demo" | "paper"
  settings: {pairs, methods, seeds, steps, batch_size, lr, lr_schedule ("constant" | "cosine"), optimizer, hidden,
             sigma, sigma_min, n_eval, euler_steps, dopri_tol, threads, device, ot_threads}
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
  anchor: {pair, runs,
           reported_w2_squared: {euler_1|adaptive: {icfm|otcfm: {mean, std}}},
           ours_w2_squared: {icfm|otcfm: {euler_1|adaptive: {mean, std}}},
           ours_settings: {steps, batch_size, lr, lr_schedule, n_eval, seeds, hidden} (the run these numbers come
                           from),
           euler_1_ratio_icfm_over_otcfm: {ours, reported}, icfm_euler_1_limit_w2_squared}
          (ours_* / ratio / limit only when 8gaussians-moons was run; the literature's setup is described in
          experiment.ANCHOR_REPORTED's comment, the methods' and pairs' display names in contract.facts)
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

from .. import contract
from . import experiment


# A list of numbers as json.dumps(indent=...) lays it out: one element per line. Literal newlines never occur
# inside JSON strings, so text that merely looks like a list is left alone.
_NUMBER_LIST = re.compile(r"\[\n\s*(-?[0-9][0-9.eE+-]*(?:,\n\s*-?[0-9][0-9.eE+-]*)*)\n\s*\]")


def dumps_compact(obj: Any) -> str:
    """Indented JSON whose innermost lists of numbers stay on one line (the figure arrays stay small)."""
    text = json.dumps(obj, ensure_ascii=False, indent=1)
    return _NUMBER_LIST.sub(lambda m: "[" + ",".join(v.strip() for v in m.group(1).split(",")) + "]", text) + "\n"


def run(ctx: Any) -> None:
    import torch

    cfg = ctx.section("flow")
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        result = experiment.run(cfg, ctx.profile, ctx.work_dir, ctx.log)
        contract.write(ctx.out_dir, "flow/experiment.json", result, dumps=dumps_compact)
    finally:
        torch.set_num_threads(threads)
    anchor = result["anchor"].get("ours_w2_squared", {})
    ctx.extra["flow"] = {"euler_1_w2_squared_8gaussians_moons": {m: v["euler_1"]["mean"] for m, v in anchor.items()}}
