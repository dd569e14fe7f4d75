"""Stage `flow`: question 2, part 3 — the I-CFM vs OT-CFM experiment → results/flow/experiment.json (its layout:
contract/flow.py). The derivations are the `derive` stage."""
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
