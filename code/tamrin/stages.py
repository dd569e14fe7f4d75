"""The stage graph: what each stage reads (config sections, upstream stages), which code it hashes,
and where its entry point lives. Entry points are imported lazily so `status` and `report-only`
never import torch.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    name: str
    sections: tuple[str, ...]  # config sections whose values enter the cache key
    deps: tuple[str, ...]  # upstream stages whose cache keys enter the cache key
    code: tuple[str, ...]  # files or folders (relative to code/tamrin) whose source enters the cache key
    entry: str  # "module:function" taking a StageContext
    cached: bool = True  # False: always re-run (cheap product stages: report, zip)
    summary: str = ""


# The sources each stage runs (its imports), so that editing one stage's code re-runs only that stage.
_COMMON = ("atomic.py", "errors.py")
FINETUNE_CODE = _COMMON + tuple(f"vlm/{m}.py" for m in (
    "__init__", "config", "model", "tiny", "batches", "loss", "schedule", "checkpoint", "finetune"))
EVAL_CODE = FINETUNE_CODE + ("vlm/generate.py", "vlm/metrics.py", "vlm/evaluate.py")
# memory.measured_from names a committed measurement file: its contents count as the stage's input too.
MEMORY_CODE = FINETUNE_CODE + ("vlm/memory.py", "vlm/paligemma_3b_config.json", "../../bench/results")

STAGES: dict[str, Stage] = {s.name: s for s in (
    Stage("data", ("data",), (), ("data",) + _COMMON, "tamrin.data.stage:run",
          summary="CLEVR subset (hub / official folder) or synthetic scenes → results/data/"),
    Stage("finetune", ("model", "lora", "train"), ("data",), FINETUNE_CODE, "tamrin.vlm.finetune:run",
          summary="QLoRA fine-tuning of PaliGemma → results/finetune/"),
    Stage("eval", ("model", "eval"), ("data", "finetune"), EVAL_CODE, "tamrin.vlm.evaluate:run",
          summary="ROUGE / exact match of base vs fine-tuned → results/eval/"),
    Stage("memory", ("memory", "lora"), (), MEMORY_CODE, "tamrin.vlm.memory:run",
          summary="memory budget of full FT vs LoRA vs QLoRA for PaliGemma-3B → results/memory/"),
    Stage("flow", ("flow",), (), ("flow",) + _COMMON, "tamrin.flow.stage:run",
          summary="flow-matching derivations (sympy) and the I-CFM vs OT-CFM experiment → results/flow/"),
    Stage("report", ("report", "student"), ("data", "finetune", "eval", "memory", "flow"), ("report",),
          "tamrin.report.build:run", cached=False,
          summary="figures + Persian Typst report → figures/, report/report.pdf"),
    Stage("zip", ("zip", "student"), ("report",), ("submit",), "tamrin.submit.pack:run", cached=False,
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
