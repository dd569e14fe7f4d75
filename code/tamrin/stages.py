"""The stage graph: what each stage reads (config sections, upstream stages) and where its entry point lives.
The code a stage hashes is derived from its entry module's imports (`codehash`). Entry points are imported
lazily so `status` and `report-only` never import torch.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    name: str
    sections: tuple[str, ...]  # config sections whose values enter the cache key
    deps: tuple[str, ...]  # upstream stages whose cache keys enter the cache key
    entry: str  # "module:function" taking a StageContext; the sources it imports enter the cache key
    help: str  # one line for `build.py --help`
    cached: bool = True  # False: always re-run (cheap product stages: report, zip)
    # Hours on a GPU: when only the stage's code changed (not its config or inputs), `all` keeps its results and
    # says which files changed, unless build.strict (Snakemake's --rerun-triggers without "code", by default).
    expensive: bool = False

    @property
    def module(self) -> str:
        return self.entry.split(":")[0]


STAGES: dict[str, Stage] = {s.name: s for s in (
    Stage("data", ("data",), (), "tamrin.data.stage:run",
          "build the CLEVR subset (or synthetic scenes) → results/data/"),
    Stage("finetune", ("model", "lora", "train"), ("data",), "tamrin.vlm.finetune:run",
          "QLoRA fine-tune PaliGemma on the train split → results/finetune/", expensive=True),
    Stage("eval", ("model", "eval"), ("data", "finetune"), "tamrin.vlm.evaluate:run",
          "ROUGE and exact match of the base and fine-tuned models → results/eval/", expensive=True),
    Stage("ablation", ("ablation", "model", "lora", "train", "eval"), ("data", "finetune", "eval"),
          "tamrin.vlm.ablation:run",
          "LoRA rank ablation: one adapter per rank, same data, steps and seed → results/ablation/", expensive=True),
    Stage("memory", ("memory", "lora"), (), "tamrin.vlm.memory_analysis:run",
          "memory budget of full fine-tuning vs LoRA/QLoRA for PaliGemma-3B → results/memory/"),
    Stage("derive", ("derive",), (), "tamrin.flow.derive_stage:run",
          "flow-matching derivations, checked with sympy and numerically → results/derive/"),
    Stage("flow", ("flow",), (), "tamrin.flow.stage:run",
          "the flow-matching experiment: I-CFM vs OT-CFM on 2-D data → results/flow/"),
    Stage("report", ("report", "student"), ("data", "finetune", "eval", "ablation", "memory", "derive", "flow"),
          "tamrin.report.build:run",
          "render figures and the Persian Typst report from cached results → report/report.pdf", cached=False),
    Stage("zip", ("zip", "student"), ("report",), "tamrin.submit:run",
          "pack the submission zip → dist/<name>.zip", cached=False),
)}

COMPUTE_STAGES = tuple(n for n, s in STAGES.items() if s.cached)


def ancestors(name: str) -> list[str]:
    """`name`'s upstream stages in run order (not including `name`)."""
    seen = {n for dep in STAGES[name].deps for n in [dep, *ancestors(dep)]}
    return [n for n in STAGES if n in seen]
