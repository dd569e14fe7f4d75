"""`finetune` stage: QLoRA fine-tuning of PaliGemma on the CLEVR train split → results/finetune/.

A plain training loop on 🤗 Accelerate (so `accelerate launch --multi_gpu build.py finetune` runs it with
DDP unchanged): seeded, gradient accumulation normalised by the step's label-token count, warm-up + cosine /
linear schedule, gradient checkpointing, a resumable checkpoint every `train.save_every` steps in the work
folder, `train.max_minutes` for time-limited sessions.

Outputs: loss.jsonl (one line per optimizer step), adapter/ (peft), summary.json, and for the demo's tiny
model base_model/ (the exact random-weight base that was fine-tuned, so `eval` compares against it).

Reusable pieces (the benchmark imports them): `base_source`, `build_training_model`; the optimizer step
itself is `step.train_step`.
"""
from __future__ import annotations

import itertools
import math
import os
import resource
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import contract
from ..contract.facts import ANSWERS
from ..errors import TamrinError
from . import batches, checkpoint
from .loss import LOSSES
from .model import DTYPE_NAMES, LoraInfo, attach_lora, load_base_model, load_processor, param_counts, \
    resolve_compute_dtype, resolve_quantization, threads_for
from .schedule import Plan, make_plan
from .step import train_step

BASE_DIR = "base_model"


# ---------------------------------------------------------------- model construction

def base_source(model_cfg, work_dir: Path, train_rows: list[dict]) -> Path | str:
    """Where the base model loads from: `model.id` (hub id or folder), or for `model.kind = tiny` a folder
    in the work dir holding the tiny random PaliGemma built offline (built once; a resumed run reuses it)."""
    if model_cfg.kind != "tiny":
        return model_cfg.id
    from .tiny import save_tiny_base

    folder = Path(work_dir) / BASE_DIR
    if not (folder / "config.json").exists() or not (folder / "processor_config.json").exists():
        texts = [model_cfg.prompt_prefix] + [r["question"] for r in train_rows] + \
                [str(r["answer"]) for r in train_rows] + list(ANSWERS)  # the test split's answers too
        tmp = folder.with_name(BASE_DIR + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        save_tiny_base(tmp, texts, width=model_cfg.tiny_width, layers=model_cfg.tiny_layers,
                       image_size=model_cfg.tiny_image_size, seed=model_cfg.tiny_seed)
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
    return folder


@dataclass
class TrainingModel:
    model: torch.nn.Module  # peft model (LoRA on the frozen, possibly 4-bit, base)
    processor: object
    lora: LoraInfo
    quantization: str  # "nf4" | "none"
    compute_dtype: torch.dtype


def build_training_model(source, model_cfg, lora_cfg, train_cfg, device: torch.device) -> TrainingModel:
    """Load the base (NF4 when configured and supported), prepare it for k-bit training, attach LoRA."""
    quant = resolve_quantization(model_cfg.quantization, device)
    dtype = resolve_compute_dtype(train_cfg.compute_dtype, device)
    processor = load_processor(source)
    base = load_base_model(source, quantization=quant, compute_dtype=dtype, device=device,
                           double_quant=model_cfg.double_quant)
    model, info = attach_lora(base, rank=lora_cfg.rank, alpha=lora_cfg.alpha, dropout=lora_cfg.dropout,
                              targets=lora_cfg.targets, scope=lora_cfg.scope, quantized=quant == "nf4",
                              grad_ckpt=train_cfg.grad_ckpt)
    # LoRA weights (the only trained ones) stay fp32 whatever the compute dtype: AdamW updates keep their
    # precision, and fp16's gradient scaler refuses to unscale fp16 gradients (the T4 path).
    for p in model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
    return TrainingModel(model, processor, info, quant, dtype)


# ---------------------------------------------------------------- data

class StepBatches(torch.utils.data.Dataset):
    """Item i = (step, encoded micro-batch) for the i-th micro-batch from `start` to the last step."""

    def __init__(self, plan: Plan, start: int, rank: int, rows: list[dict], processor, images, prefix: str):
        self.items = [(s, idx) for s in range(start, plan.total_steps) for idx in plan.step_batches(s, rank)]
        self.rows, self.processor, self.images, self.prefix = rows, processor, images, prefix

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        step, idx = self.items[i]
        return step, batches.encode(self.processor, [self.rows[j] for j in idx], self.images, self.prefix,
                                    with_answers=True)


def keep_fitting(rows: list[dict], processor, prefix: str, max_length: int) -> tuple[list[dict], int]:
    """Rows whose full sequence fits `max_length` tokens, and how many were dropped."""
    kept = [r for r in rows if batches.sequence_length(processor, r, prefix) <= max_length]
    return kept, len(rows) - len(kept)



# ---------------------------------------------------------------- the loop

def _mixed_precision(dtype: torch.dtype) -> str:
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "no")


def _peak_rss_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux reports KiB


def _oom_message(train_cfg) -> str:
    b, a = train_cfg.batch_size, train_cfg.grad_accum
    return (f"CUDA out of memory at train.batch_size = {b}: use a smaller batch and more accumulation "
            f"(same effective batch), e.g. --set train.batch_size={max(1, b // 2)} --set train.grad_accum={a * 2}")


def run(ctx) -> None:
    """Stage entry point."""
    model_cfg = ctx.section("model")
    with threads_for(model_cfg.kind, torch.device("cuda" if torch.cuda.is_available() else "cpu")):
        summary = train(data_dir=ctx.inputs["data"], out_dir=ctx.out_dir, work_dir=ctx.work_dir,
                        model_cfg=model_cfg, lora_cfg=ctx.section("lora"), train_cfg=ctx.section("train"),
                        log=ctx.log)
    from accelerate import PartialState

    if not PartialState().is_main_process:
        # Under `accelerate launch` every process runs the stage runner; only the main process's output
        # folder is the result. The others leave here (exit status 0) so the runner never swaps their
        # empty staging folder in, and they do not go on to run later stages a second time.
        raise SystemExit(0)
    ctx.extra["stopped_early"] = summary["stopped_early"]


def train(*, data_dir: Path, out_dir: Path, work_dir: Path, model_cfg, lora_cfg, train_cfg, log) -> dict:
    """Fine-tune and write loss.jsonl, adapter/, summary.json (and base_model/ for the tiny model) to
    `out_dir`; checkpoints go to `work_dir`. Returns the summary."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm
    from transformers import get_scheduler

    t_start = time.perf_counter()
    out_dir, work_dir = Path(out_dir), Path(work_dir)
    is_cuda = torch.cuda.is_available()
    dtype0 = resolve_compute_dtype(train_cfg.compute_dtype, torch.device("cuda" if is_cuda else "cpu"))
    # Under a distributed launch this waits for every process, so all of them read the same, finished data.
    accelerator = Accelerator(mixed_precision=_mixed_precision(dtype0), cpu=not is_cuda)
    rows = batches.read_split(data_dir, "train")
    device, main, rank = accelerator.device, accelerator.is_main_process, accelerator.process_index
    set_seed(train_cfg.seed)

    with accelerator.main_process_first():  # the main process builds the tiny base; the others then load it
        source = base_source(model_cfg, work_dir, rows)
    tm = build_training_model(source, model_cfg, lora_cfg, train_cfg, device)
    rows, skipped = keep_fitting(rows, tm.processor, model_cfg.prompt_prefix, train_cfg.max_length)
    if skipped:
        log.warning(f"skipped {skipped} training examples longer than train.max_length = {train_cfg.max_length}")
    plan = make_plan(len(rows), batch_size=train_cfg.batch_size, grad_accum=train_cfg.grad_accum,
                     world=accelerator.num_processes, epochs=train_cfg.epochs, max_steps=train_cfg.max_steps,
                     seed=train_cfg.seed)

    params = [p for p in tm.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    warmup = math.ceil(train_cfg.warmup_ratio * plan.total_steps)
    sched_name = "constant_with_warmup" if train_cfg.scheduler == "constant" else train_cfg.scheduler
    scheduler = get_scheduler(sched_name, optimizer, num_warmup_steps=warmup, num_training_steps=plan.total_steps)
    model, optimizer = accelerator.prepare(tm.model, optimizer)  # the scheduler steps once per optimizer step

    # Resume from the newest complete checkpoint of this exact configuration (the work dir is keyed by it).
    start, history, seconds_before = 0, [], 0.0
    resumed = checkpoint.resume(work_dir, rank, log, model=accelerator.unwrap_model(model), optimizer=optimizer,
                                scheduler=scheduler, scaler=accelerator.scaler)
    if resumed is not None:
        ckpt, meta = resumed
        start, history, seconds_before = meta["step"], meta["history"], meta["seconds"]
        log.info(f"resuming from step {start}/{plan.total_steps} ({ckpt.name})")

    log.info(f"training: {len(rows)} examples, {plan.total_steps} steps of {train_cfg.batch_size}×"
             f"{train_cfg.grad_accum}×{plan.world} examples; LoRA r={lora_cfg.rank} on {len(tm.lora.matched)} "
             f"modules ({tm.lora.scope}); weights {tm.quantization}, compute {DTYPE_NAMES[tm.compute_dtype]}")
    loss_path = out_dir / "loss.jsonl"
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        with open(loss_path, "w", encoding="utf-8") as f:
            f.writelines(contract.json_line(contract.validate("finetune/loss.jsonl", [r])[0]) for r in history)

    data = StepBatches(plan, start, rank, rows, tm.processor, batches.ImageStore(data_dir), model_cfg.prompt_prefix)
    # Its own generator: creating the iterator draws a worker seed, which must not shift the global RNG
    # that dropout uses (a resumed run would otherwise diverge from an uninterrupted one).
    loader = torch.utils.data.DataLoader(data, batch_size=None, shuffle=False, num_workers=train_cfg.num_workers,
                                         collate_fn=_identity, pin_memory=is_cuda,
                                         generator=torch.Generator().manual_seed(train_cfg.seed))
    if train_cfg.num_workers:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # forked workers + a threaded tokenizer can hang
    loss_fn = LOSSES[train_cfg.loss]
    if is_cuda:
        torch.cuda.reset_peak_memory_stats(device)
    model.train()  # gradient checkpointing only acts in train mode
    bar = tqdm(total=plan.total_steps, initial=start, desc="finetune", unit="step", disable=not main,
               dynamic_ncols=True)
    t_loop, samples, step, stopped = time.perf_counter(), 0, start, None
    try:
        for step_idx, group in itertools.groupby(loader, key=lambda item: item[0]):
            micro = [batches.to_device(b, device) for _, b in group]
            lr = scheduler.get_last_lr()[0]
            loss = train_step(model, micro, loss_fn, accelerator)
            if train_cfg.max_grad_norm:
                accelerator.clip_grad_norm_(params, train_cfg.max_grad_norm)
            optimizer.step()
            if not accelerator.optimizer_step_was_skipped:  # fp16 overflow: the scaler skipped this update
                scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step = step_idx + 1
            samples += sum(len(b["input_ids"]) for b in micro) * plan.world
            elapsed = seconds_before + time.perf_counter() - t_loop
            record = {"step": step, "loss": round(loss, 6), "lr": lr, "epoch": round(plan.epoch_of(step), 4),
                      "seconds": round(elapsed, 2)}
            history.append(record)
            if main:
                with open(loss_path, "a", encoding="utf-8") as f:
                    f.write(contract.json_line(contract.validate("finetune/loss.jsonl", [record])[0]))
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")
            if not math.isfinite(loss):
                raise TamrinError(f"the training loss became {loss} at step {step}; lower train.lr "
                                  "(or use train.compute_dtype = fp32/bf16 instead of fp16)")
            if _time_is_up(accelerator, train_cfg.max_minutes, t_start) and step < plan.total_steps:
                stopped = f"train.max_minutes = {train_cfg.max_minutes} reached after step {step}"
                log.warning(f"stopping early: {stopped}; the adapter trained so far is saved")
                break
            if step % train_cfg.save_every == 0 and step < plan.total_steps:
                _save_checkpoint(accelerator, work_dir, step, model, optimizer, scheduler,
                                 {"history": history, "seconds": elapsed})
    except torch.OutOfMemoryError:
        raise TamrinError(_oom_message(train_cfg)) from None
    finally:
        bar.close()
    loop_seconds = time.perf_counter() - t_loop

    accelerator.wait_for_everyone()
    summary = {
        "model": "tiny" if model_cfg.kind == "tiny" else str(model_cfg.id),
        "base_model": BASE_DIR if model_cfg.kind == "tiny" else str(model_cfg.id),
        "base_model_in_results": model_cfg.kind == "tiny",
        **param_counts(accelerator.unwrap_model(model)),
        "lora": {**tm.lora.as_dict(), "rank": lora_cfg.rank, "alpha": lora_cfg.alpha, "dropout": lora_cfg.dropout},
        "quantization": tm.quantization, "double_quant": model_cfg.double_quant if tm.quantization == "nf4" else None,
        "compute_dtype": DTYPE_NAMES[tm.compute_dtype], "loss": train_cfg.loss, "grad_ckpt": train_cfg.grad_ckpt,
        "n_train": len(rows), "skipped_too_long": skipped,
        "batch_size": train_cfg.batch_size, "grad_accum": train_cfg.grad_accum, "world_size": plan.world,
        "effective_batch": train_cfg.batch_size * train_cfg.grad_accum * plan.world,
        "steps_per_epoch": plan.steps_per_epoch, "total_steps": plan.total_steps, "steps_done": step,
        "epochs_done": round(plan.epoch_of(step), 4), "resumed_from_step": start or None,
        "stopped_early": stopped,
        "first_loss": history[0]["loss"] if history else None, "final_loss": history[-1]["loss"] if history else None,
        **_loss_ends(history),
        "samples_per_s": round(samples / loop_seconds, 3) if loop_seconds > 0 and samples else None,
        "train_seconds": round(seconds_before + loop_seconds, 2), "wall_seconds": round(time.perf_counter() - t_start, 2),
        "peak_gpu_mem_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 3) if is_cuda else None,
        "peak_cpu_rss_mib": _peak_rss_mib(),
        "device": torch.cuda.get_device_name(device) if is_cuda else "cpu",
        "torch_threads": torch.get_num_threads(),
    }
    if main:
        unwrapped = accelerator.unwrap_model(model)
        if model_cfg.kind == "tiny":  # the adapter's base is the copy saved beside it, not the scratch folder
            unwrapped.peft_config["default"].base_model_name_or_path = f"../{BASE_DIR}"
            shutil.copytree(source, out_dir / BASE_DIR, dirs_exist_ok=True)
        unwrapped.save_pretrained(out_dir / "adapter")
        contract.write(out_dir, "finetune/summary.json", summary)
        log.info(f"mean loss of the first / last {summary['loss_window']} steps: {summary['loss_first_mean']:.3f} → "
                 f"{summary['loss_last_mean']:.3f} ({step} steps, {summary['samples_per_s']} samples/s)")
    accelerator.wait_for_everyone()
    return summary


def _loss_ends(history: list[dict]) -> dict:
    """Mean loss of the first and the last tenth of the steps (single steps are noisy)."""
    if not history:
        return {"loss_window": 0, "loss_first_mean": None, "loss_last_mean": None}
    k = max(1, len(history) // 10)
    mean = lambda rs: round(sum(r["loss"] for r in rs) / len(rs), 6)  # noqa: E731
    return {"loss_window": k, "loss_first_mean": mean(history[:k]), "loss_last_mean": mean(history[-k:])}


def _identity(item):
    return item


def _time_is_up(accelerator, max_minutes: float | None, t_start: float) -> bool:
    """Every process stops at the same step: time is up when it is up on any process."""
    if max_minutes is None:
        return False
    flag = torch.tensor(float(time.perf_counter() - t_start > 60 * max_minutes), device=accelerator.device)
    return bool(accelerator.reduce(flag, "max") > 0)


def _save_checkpoint(accelerator, work_dir: Path, step: int, model, optimizer, scheduler, meta: dict) -> None:
    folder = checkpoint.save(work_dir, step, rank=accelerator.process_index, is_main=accelerator.is_main_process,
                             model=accelerator.unwrap_model(model), optimizer=optimizer, scheduler=scheduler,
                             scaler=accelerator.scaler, meta=meta)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        checkpoint.finish(folder)
