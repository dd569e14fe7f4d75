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
    cached: bool = True  # False: always re-run (cheap product stages: report, zip)
    summary: str = ""

    @property
    def module(self) -> str:
        return self.entry.split(":")[0]


STAGES: dict[str, Stage] = {s.name: s for s in (
    Stage("data", ("data",), (), "tamrin.data.stage:run",
          summary="CLEVR subset (hub / official folder) or synthetic scenes → results/data/"),
    Stage("finetune", ("model", "lora", "train"), ("data",), "tamrin.vlm.finetune:run",
          summary="QLoRA fine-tuning of PaliGemma → results/finetune/"),
    Stage("eval", ("model", "eval"), ("data", "finetune"), "tamrin.vlm.evaluate:run",
          summary="ROUGE / exact match of base vs fine-tuned → results/eval/"),
    Stage("ablation", ("ablation", "model", "lora", "train", "eval"), ("data", "finetune", "eval"),
          "tamrin.vlm.ablation:run",
          summary="LoRA rank ablation (ranks × same data, steps, seed) → results/ablation/"),
    Stage("memory", ("memory", "lora"), (), "tamrin.vlm.memory:run",
          summary="memory budget of full FT vs LoRA vs QLoRA for PaliGemma-3B → results/memory/"),
    Stage("derive", ("derive",), (), "tamrin.flow.derive_stage:run",
          summary="flow-matching derivations, checked with sympy and numerically → results/derive/"),
    Stage("flow", ("flow",), (), "tamrin.flow.stage:run",
          summary="the I-CFM vs OT-CFM experiment → results/flow/"),
    Stage("report", ("report", "student"), ("data", "finetune", "eval", "ablation", "memory", "derive", "flow"),
          "tamrin.report.build:run", cached=False,
          summary="figures + Persian Typst report → figures/, report/report.pdf"),
    Stage("zip", ("zip", "student"), ("report",), "tamrin.submit.pack:run", cached=False,
          summary="submission zip → dist/<name>.zip"),
)}

COMPUTE_STAGES = tuple(n for n, s in STAGES.items() if s.cached)


def ancestors(name: str) -> list[str]:
    """`name`'s upstream stages in run order (not including `name`)."""
    seen: list[str] = []

    def visit(n: str) -> None:
        for d in STAGES[n].deps:
            visit(d)
            if d not in seen:
                seen.append(d)

    visit(name)
    return [n for n in STAGES if n in seen]


def descendants(name: str) -> list[str]:
    return [n for n in STAGES if name in ancestors(n)]
