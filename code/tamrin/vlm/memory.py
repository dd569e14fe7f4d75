"""The `memory` stage → results/memory/memory.json: the analysis of `memory_analysis` (always about the real
PaliGemma-3B architecture, on the meta device), plus a GPU measurement (`memory_measure`) when `memory.measure`
is on, or a committed earlier measurement named by `memory.measured_from`. The layout of memory.json is described
in `memory_analysis`'s docstring.
"""
from __future__ import annotations

from pathlib import Path

from .memory_analysis import MODEL_ID, analyse, reconcile


def run(ctx) -> None:
    """The `memory` stage: analysis on the meta device; a GPU measurement when `memory.measure` is on."""
    from .. import contract
    from ..atomic import read_json
    from ..errors import TamrinError

    mem = ctx.section("memory")
    lora = ctx.section("lora")
    measured_file = None
    if not mem.measure and mem.measured_from:  # checked first: a bad path fails before minutes of work
        from .. import ROOT

        measured_file = Path(mem.measured_from) if Path(mem.measured_from).is_absolute() else ROOT / mem.measured_from
        if not measured_file.exists():
            raise TamrinError(f"memory.measured_from points to {measured_file}, which does not exist; run the GPU "
                              "measurement (bench/gpu_run.sh) or unset memory.measured_from")
    ctx.log.info("counting parameters of %s on the meta device (shipped config, no download)", MODEL_ID)
    result = analyse(lora.rank, lora.alpha, list(lora.targets), lora.scope, mem.seq_len, mem.batch_size,
                     mem.suffix_len)
    p = result["params"]
    ctx.log.info("params: total %s, vision %s, projector %s, language model %s; LoRA r=%d (%s) trainable %s",
                 f"{p['total']:,}", f"{p['vision_tower']:,}", f"{p['projector']:,}", f"{p['language_model']:,}",
                 lora.rank, lora.scope, f"{result['lora']['trainable']:,}")
    if mem.measure:
        from .memory_measure import measure

        result["measured"] = measure(mem, lora, ctx.work_dir, ctx.log)
    elif measured_file is not None:
        from .memory_measure import committed_block

        result["measured"] = committed_block(read_json(measured_file), str(mem.measured_from))
    result["measured_vs_computed"] = reconcile(result)
    contract.write(ctx.out_dir, "memory/memory.json", result)
    ctx.extra["lora_trainable"] = result["lora"]["trainable"]

