"""`finetune` stage: QLoRA fine-tuning of PaliGemma on the CLEVR train split → results/finetune/ (for the demo's tiny
model also base_model/, the exact base `eval` compares). A plain loop on 🤗 Accelerate (`accelerate launch --multi_gpu
build.py finetune` runs it with DDP unchanged); the optimizer step is `step.TrainStep`. At the benchmark's speed
(bench/bench_vlm.py, "loop vs bench"): questions tokenised once, pixel values computed once per process in the
DataLoader workers, batches pinned, and one wait for the GPU per step (for the loss the non-finite guard needs).
"""
from __future__ import annotations

import collections
import contextlib
import itertools
import math
import resource
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch

from .. import contract
from ..contract.facts import ANSWERS
from ..errors import TamrinError
from . import batches, checkpoint
from .batches import IGNORE
from .footprint import Choice, Dims, candidates, checkpointed_layers, choose, estimate_peak, settings
from .model import DTYPE_NAMES, attach_lora, load_base_model, load_model_config, load_processor, \
    on_device, resolve_compute_dtype, resolve_quantization
from .step import TrainStep, make_accelerator, suffix_logits, token_ce_sum

BASE_DIR = "base_model"
HELDOUT_BUDGET = 0.05  # of the training steps' time the held-out evaluations may take: above it, the run warns


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
    lora: dict  # the summary's `lora` block
    quantization: str  # "nf4" | "none"
    compute_dtype: torch.dtype
    grad_ckpt: Choice


def checkpointing_choice(source, model_cfg, lora_cfg, train_cfg, device: torch.device, quant: str, *,
                         seq_len: int | None = None, suffix_len: int = 3, free_bytes: int | None = None) -> Choice:
    """`train.grad_ckpt` resolved for this device: for `auto` on CUDA, the estimated peak of `train.batch_size`
    sequences of `seq_len` tokens (default `train.max_length`) per count of checkpointed layers against the GPU's
    free memory before the weights load (or `free_bytes`: the benchmark's "what would auto pick on a T4")."""
    cuda = device.type == "cuda"
    config = load_model_config(source)
    found, layers = settings(config), config.text_config.num_hidden_layers
    if str(train_cfg.grad_ckpt).lower() != "auto" or not cuda:
        return choose(train_cfg.grad_ckpt, cuda=cuda, found=found, layers=layers)
    estimates = {p.decoder: estimate_peak(Dims.of(config), lora_cfg, quantized=quant == "nf4",
                                          double_quant=model_cfg.double_quant, seq_len=seq_len or train_cfg.max_length,
                                          batch=train_cfg.batch_size, suffix_len=suffix_len, loss=train_cfg.loss,
                                          ckpt_layers=p.decoder, vision_ckpt_layers=p.vision)
                 for p in candidates(found)}
    free = free_bytes if free_bytes is not None else torch.cuda.mem_get_info(device)[0]
    return choose("auto", cuda=True, found=found, layers=layers, estimates=estimates, free_bytes=free)


def build_training_model(source, model_cfg, lora_cfg, train_cfg, device: torch.device, *, processor=None,
                         seq_len: int | None = None, suffix_len: int = 3) -> TrainingModel:
    """Load the base (NF4 when configured and supported), prepare it for k-bit training, attach LoRA; gradient
    checkpointing as `checkpointing_choice` decides (`seq_len`, `suffix_len`: the longest batch, for `auto`)."""
    quant = resolve_quantization(model_cfg.quantization, device)
    dtype = resolve_compute_dtype(train_cfg.compute_dtype, device)
    processor = processor if processor is not None else load_processor(source)
    ckpt = checkpointing_choice(source, model_cfg, lora_cfg, train_cfg, device, quant, seq_len=seq_len,
                                suffix_len=suffix_len)
    base = load_base_model(source, quantization=quant, compute_dtype=dtype, device=device,
                           double_quant=model_cfg.double_quant)
    model, info = attach_lora(base, lora_cfg, quantized=quant == "nf4", ckpt_every=ckpt.every_n)
    done = checkpointed_layers(model)[0]
    if done != ckpt.pattern.decoder:  # the library did not do what the choice counted on
        raise AssertionError(f"{done} decoder layers checkpointed, {ckpt.pattern.decoder} expected for "
                             f"every_n = {ckpt.every_n}")
    return TrainingModel(model, processor, info, quant, dtype, ckpt)


# ---------------------------------------------------------------- data

@dataclass
class TrainingData:
    """The train split as training uses it: the rows trained on (the held-out slice carved out, the ones longer
    than `train.max_length` dropped) tokenised once, the held-out slice's examples, the processor and pixel cache."""
    processor: object
    pixels: batches.PixelCache
    pad_id: int
    rows: list[dict]
    examples: list[batches.Example]
    skipped: int  # longer than train.max_length
    heldout: list[batches.Example]

    @classmethod
    def load(cls, source, data_dir: Path, rows: list[dict], prefix: str, train_cfg, log) -> "TrainingData":
        """Stops when the installed processor would build other inputs than Tamrin's tokeniser."""
        processor = load_processor(source)
        images = batches.ImageStore(data_dir)
        rows, held = carve_heldout(rows, train_cfg.heldout_size, train_cfg.seed)  # never trained on
        mismatch = batches.processor_mismatch(processor, rows[:4], images, prefix)
        if mismatch:
            raise TamrinError(f"the installed transformers' PaliGemmaProcessor builds other training inputs than "
                              f"Tamrin's tokeniser ({mismatch}); install the tested versions "
                              "(pip install -e . -c constraints/tested.txt) and rerun")
        kept = [(r, e) for r, e in zip(rows, batches.tokenize(processor, rows, prefix, with_answers=True))
                if len(e) <= train_cfg.max_length]
        if len(kept) < len(rows):
            log.warning(f"skipped {len(rows) - len(kept)} training examples longer than train.max_length = "
                        f"{train_cfg.max_length}")
        if not kept:
            raise TamrinError("no training examples left (all were longer than train.max_length?); "
                              "raise train.max_length or check results/data/train.jsonl")
        held_examples = [e for e in batches.tokenize(processor, held, prefix, with_answers=True)
                         if len(e) <= train_cfg.max_length] if held else []
        return cls(processor, batches.PixelCache(processor.image_processor, images), processor.tokenizer.pad_token_id,
                   [r for r, _ in kept], [e for _, e in kept], len(rows) - len(kept), held_examples)


# ---------------------------------------------------------------- the held-out curve
# Loss and exact match every `train.heldout_every` steps on a fixed slice of the TRAIN split that training never sees
# (what shows overfitting; the test split stays untouched until `eval`). The slice is whole images (CLEVR asks several
# questions about one scene), chosen by a seeded permutation of the image names: the same rows on every process and
# after a resume. Exact match is teacher-forced: the argmax is right at every answer position, <eos> included — exactly
# when greedy decoding reproduces the answer (`eval` compares normalised generated answers: it can only match more).

def carve_heldout(rows: list[dict], size: int, seed: int) -> tuple[list[dict], list[dict]]:
    """(rows to train on, held-out rows): whole images in a seeded order until at least `size` questions are held
    out (0 = none). Both keep the split's order; a split too small to keep anything for training holds none out."""
    if size <= 0:
        return rows, []
    images = sorted({r["image"] for r in rows})
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed * 1_000_003 + 7)).tolist()
    per_image = collections.Counter(r["image"] for r in rows)
    chosen, n = set(), 0
    for i in order:
        if n >= size:
            break
        chosen.add(images[i])
        n += per_image[images[i]]
    held = [r for r in rows if r["image"] in chosen]
    train = [r for r in rows if r["image"] not in chosen]
    return (rows, []) if not train else (train, held)


@contextlib.contextmanager
def dropout_off(model) -> Iterator[None]:
    """Dropout modules in eval mode, everything else in train mode. Not `model.eval()`: bitsandbytes 0.50 repacks a
    Linear4bit's weight for a CPU kernel without a backward the first time the layer runs in eval mode on an input
    without grad (bitsandbytes/nn/modules.py, Linear4bit.forward, on CPUs with AVX512-BF16), cutting the training's
    gradient path. With dropout off no random number is drawn: evaluating leaves the training run unchanged."""
    dropouts = [m for m in model.modules() if isinstance(m, torch.nn.Dropout) and m.training]
    for m in dropouts:
        m.train(False)
    try:
        yield
    finally:
        for m in dropouts:
            m.train(True)


class HeldOutMonitor:
    """The held-out curve: the slice's `examples` collated once, on the host; `monitor(model, step, device)` evaluates
    them before the first step, every `every` steps and after the last (not again after a resume), appends the
    heldout.jsonl row to `log` and returns the seconds it took (0 when it did nothing: every process but the main)."""

    def __init__(self, examples: Sequence[batches.Example], pixels: batches.PixelCache, pad_id: int, batch_size: int,
                 *, every: int, total_steps: int, log, seconds_before: float = 0.0) -> None:
        chunks = [examples[i:i + batch_size] for i in range(0, len(examples), batch_size)]
        self.batches = [batches.collate(c, pixels([e.image for e in c]), pad_id, with_answers=True) for c in chunks]
        self.n, self.every, self.total, self.log = len(examples), every, total_steps, log
        self.seconds = seconds_before  # spent evaluating, over the whole run (a resumed run's earlier part too)

    @torch.no_grad()
    def evaluate(self, model, step: int, device: torch.device) -> dict:
        """{step, loss (mean over the answer tokens), exact_match, n} of `model` now."""
        loss_sum = torch.zeros((), device=device)
        tokens, exact = (torch.zeros((), device=device, dtype=torch.long) for _ in range(2))
        with dropout_off(model):
            for b in self.batches:
                logits, labels = suffix_logits(model, batches.to_device(b, device))
                s, n = token_ce_sum(logits, labels)
                loss_sum += s.float()
                tokens += n
                targets = labels[:, 1:]
                right = (logits[:, :-1].argmax(-1) == targets) | (targets == IGNORE)
                exact += right.all(dim=1).sum()
        loss = float(loss_sum / tokens)  # one wait for the device per evaluation
        return {"step": step, "loss": round(loss, 6) if math.isfinite(loss) else None,
                "exact_match": round(int(exact) / self.n, 6), "n": self.n}

    def __call__(self, model, step: int, device: torch.device) -> float:
        due = step == 0 or step == self.total or step % self.every == 0
        if not self.n or not due or any(r["step"] == step for r in self.log.rows):
            return 0.0
        t0 = time.perf_counter()
        self.log.append(self.evaluate(model, step, device))
        spent = time.perf_counter() - t0
        self.seconds += spent
        return spent

    def summary(self, step_seconds: float) -> dict | None:
        """summary.json's `heldout` block (contract HeldoutSummary); `share` excludes checkpoint saving."""
        if not self.n:
            return None
        return {"n": self.n, "every": self.every, "evaluations": len(self.log.rows),
                "seconds": round(self.seconds, 3), "step_seconds": round(step_seconds, 3),
                "share": round(self.seconds / step_seconds, 4) if step_seconds > 0 else None}


# ---------------------------------------------------------------- the loop

@on_device
def run(ctx, device: torch.device) -> None:
    summary = train(data_dir=ctx.inputs["data"], out_dir=ctx.out_dir, work_dir=ctx.work_dir,
                    model_cfg=ctx.section("model"), lora_cfg=ctx.section("lora"), train_cfg=ctx.section("train"),
                    log=ctx.log)
    from accelerate import PartialState

    if not PartialState().is_main_process:
        # Under `accelerate launch` every process runs the stage runner; only the main process's output is the result.
        # The others leave here (status 0): the runner never swaps their empty staging folder in, nor runs on.
        raise SystemExit(0)
    ctx.extra["stopped_early"] = summary["stopped_early"]


def train(*, data_dir: Path, out_dir: Path, work_dir: Path, model_cfg, lora_cfg, train_cfg, log) -> dict:
    """Fine-tune and write loss.jsonl, heldout.jsonl, adapter/, summary.json (and base_model/ for the tiny model)
    to `out_dir`; checkpoints go to `work_dir`. Returns the summary."""
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    # ---- setup: data, model, the step, the resumed state
    t_start = time.perf_counter()
    out_dir, work_dir = Path(out_dir), Path(work_dir)
    cuda = torch.cuda.is_available()
    dtype = resolve_compute_dtype(train_cfg.compute_dtype, torch.device("cuda" if cuda else "cpu"))
    # Under a distributed launch this waits for every process, so all of them read the same, finished data.
    accelerator = make_accelerator(dtype, cuda)
    device, main, rank = accelerator.device, accelerator.is_main_process, accelerator.process_index
    rows = batches.read_split(data_dir, "train")
    set_seed(train_cfg.seed)
    with accelerator.main_process_first():  # the main process builds the tiny base; the others then load it
        source = base_source(model_cfg, work_dir, rows)
    data = TrainingData.load(source, data_dir, rows, model_cfg.prompt_prefix, train_cfg, log)
    tm = build_training_model(source, model_cfg, lora_cfg, train_cfg, device, processor=data.processor,
                              seq_len=max(map(len, data.examples)),
                              suffix_len=max(sum(e.token_type_ids) for e in data.examples))
    plan = batches.make_plan(len(data.rows), train_cfg, world=accelerator.num_processes)
    step = TrainStep.for_training(tm.model, train_cfg, total_steps=plan.total_steps, accelerator=accelerator)
    start, meta = _resume(work_dir, rank, step, log)
    _log_start(log, tm, plan, train_cfg, len(data.rows))
    losses = _JsonlLog(out_dir, "finetune/loss.jsonl", meta.get("history", []), main)
    held = data.heldout if main else []  # evaluated by the main process only
    monitor = HeldOutMonitor(held, data.pixels, data.pad_id, train_cfg.batch_size, every=train_cfg.heldout_every,
                             total_steps=plan.total_steps, seconds_before=meta.get("heldout_seconds", 0.0),
                             log=_JsonlLog(out_dir, "finetune/heldout.jsonl", meta.get("heldout", []), bool(held)))
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    step.model.train()  # gradient checkpointing only acts in train mode
    bar = tqdm(total=plan.total_steps, initial=start, desc="finetune", unit="step", disable=not main,
               dynamic_ncols=True)
    clock = _StepClock(meta.get("seconds", 0.0))
    done, stopped = start, None
    clock.pause("heldout", monitor(step.unwrapped, done, device))  # before the first step: where the curve starts

    # ---- the loop: one optimizer step per group of micro-batches
    try:
        for step_idx, host_batches in _step_batches(plan, start, rank, data, train_cfg, cuda):
            micro = [batches.to_device(b, device) for b in host_batches]
            r = step(micro)
            done = step_idx + 1
            seconds = clock.step_done(sum(len(b["input_ids"]) for b in micro) * plan.world)
            losses.append({"step": done, "loss": round(r.loss, 6) if math.isfinite(r.loss) else None, "lr": r.lr,
                           "epoch": round(plan.epoch_of(done), 4), "seconds": round(seconds, 2),
                           "skipped": r.skipped})
            if r.skipped and not math.isfinite(r.loss):
                log.warning(f"step {done}: the loss is {r.loss}; update skipped ({step.guard.in_a_row} in a row)")
            bar.update(1)
            bar.set_postfix(loss=f"{r.loss:.4f}", lr=f"{r.lr:.2e}")
            if r.stop is not None:
                raise r.stop
            clock.pause("heldout", monitor(step.unwrapped, done, device))
            if _time_is_up(accelerator, train_cfg.max_minutes, t_start) and done < plan.total_steps:
                stopped = f"train.max_minutes = {train_cfg.max_minutes} reached after step {done}"
                log.warning(f"stopping early: {stopped}; the adapter trained so far is saved")
                break
            if done % train_cfg.save_every == 0 and done < plan.total_steps:
                t_save = time.perf_counter()
                _save_checkpoint(accelerator, work_dir, done, step, {
                    "history": losses.rows, "heldout": monitor.log.rows, "heldout_seconds": monitor.seconds,
                    "seconds": clock.seconds()})
                clock.pause("checkpoint", time.perf_counter() - t_save)
    except torch.OutOfMemoryError:
        raise TamrinError(_oom_message(train_cfg)) from None
    finally:
        bar.close()

    # ---- save: the summary, the adapter (and the demo's base model)
    accelerator.wait_for_everyone()
    summary = _summary(model_cfg, train_cfg, tm, step, plan, losses.rows, data, start=start, done=done,
                       stopped=stopped, clock=clock, t_start=t_start, heldout_block=monitor.summary(clock.seconds()))
    if main:
        _save_results(out_dir, step.unwrapped, source if model_cfg.kind == "tiny" else None, summary)
        _log_end(log, summary)
    accelerator.wait_for_everyone()
    return summary


# ---------------------------------------------------------------- helpers of the loop

def _step_batches(plan: batches.Plan, start: int, rank: int, data: TrainingData, train_cfg, cuda: bool
                  ) -> Iterator[tuple[int, list[dict]]]:
    """(step, its micro-batches on the host) for the steps from `start` on, built in `train.num_workers` workers."""
    items = [(s, idx) for s in range(start, plan.total_steps) for idx in plan.step_batches(s, rank)]
    collated = batches.Collated([idx for _, idx in items], data.examples, data.pixels, data.pad_id, with_answers=True)
    loader = batches.loader(collated, workers=train_cfg.num_workers, pin=cuda, seed=train_cfg.seed)
    steps_and_batches = zip((s for s, _ in items), loader)
    for s, group in itertools.groupby(steps_and_batches, key=lambda item: item[0]):
        yield s, [b for _, b in group]


def _resume(work_dir: Path, rank: int, step: TrainStep, log) -> tuple[int, dict]:
    """(first step to run, the checkpoint's meta: loss and held-out rows so far, seconds so far) from the newest
    complete checkpoint of this exact configuration (the work dir is keyed by it), or a fresh start."""
    resumed = checkpoint.resume(work_dir, rank, log, model=step.unwrapped, optimizer=step.optimizer,
                                scheduler=step.scheduler, scaler=step.acc.scaler)
    if resumed is None:
        return 0, {}
    ckpt, meta = resumed
    step.steps_done = meta["step"]
    log.info(f"resuming from step {meta['step']} ({ckpt.name})")
    return meta["step"], meta


class _JsonlLog:
    """A .jsonl results file, one validated line per row appended as it comes (main process only): a killed run
    leaves the rows so far."""

    def __init__(self, out_dir: Path, rel: str, rows: list[dict], write: bool) -> None:
        self.path, self.rel, self.rows, self.write = out_dir / rel.split("/", 1)[1], rel, [], write
        if write:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("", encoding="utf-8")
        for r in rows:
            self.append(r)

    def append(self, row: dict) -> None:
        self.rows.append(row)
        if self.write:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(contract.json_line(contract.validate(self.rel, [row])[0]))


class _StepClock:
    """Seconds of training steps without checkpoint saving and held-out evaluations (`pause`), and the throughput
    after this process's first (warm-up) step. A step's reading follows its wait for the loss; the update queued after
    it ends inside the next step's reading, so the steps' times add up to the GPU's."""

    def __init__(self, before: float) -> None:
        self.t0, self.before, self.paused = time.perf_counter(), before, {"checkpoint": 0.0, "heldout": 0.0}
        self.t_first = self.t_last = None  # ends of the first and the last step
        self.samples_after_first = 0

    def pause(self, what: str, seconds: float) -> None:
        self.paused[what] += seconds

    def seconds(self) -> float:
        """Seconds of training steps of the whole run (a resumed run's earlier ones included), pauses excluded."""
        return self.before + time.perf_counter() - self.t0 - sum(self.paused.values())

    def step_done(self, samples: int) -> float:
        """Notes a step's end; returns `seconds()`."""
        self.t_last = self.seconds()
        if self.t_first is None:
            self.t_first = self.t_last
        else:
            self.samples_after_first += samples
        return self.t_last

    def samples_per_s(self) -> float | None:
        seconds = self.t_last - self.t_first if self.samples_after_first else 0.0  # one step: only the warm-up
        return round(self.samples_after_first / seconds, 3) if seconds > 0 else None


def _save_results(out_dir: Path, model, tiny_source: Path | None, summary: dict) -> None:
    """adapter/ and summary.json (and, for the demo's tiny model, its base beside the adapter)."""
    if tiny_source is not None:  # the adapter's base is the copy saved beside it, not the scratch folder
        model.peft_config["default"].base_model_name_or_path = f"../{BASE_DIR}"
        shutil.copytree(tiny_source, out_dir / BASE_DIR, dirs_exist_ok=True)
    model.save_pretrained(out_dir / "adapter")
    contract.write(out_dir, "finetune/summary.json", summary)


def _oom_message(train_cfg) -> str:
    b, a = train_cfg.batch_size, train_cfg.grad_accum
    return (f"CUDA out of memory at train.batch_size = {b}: use a smaller batch and more accumulation "
            f"(same effective batch), e.g. --set train.batch_size={max(1, b // 2)} --set train.grad_accum={a * 2}")


def _log_start(log, tm: TrainingModel, plan: batches.Plan, train_cfg, n_train: int) -> None:
    log.info(f"gradient checkpointing {tm.grad_ckpt.reason}")
    log.info(f"training: {n_train} examples, {plan.total_steps} steps of {train_cfg.batch_size}×"
             f"{train_cfg.grad_accum}×{plan.world} examples; LoRA r={tm.lora['rank']} on {tm.lora['matched_modules']} "
             f"modules ({tm.lora['scope']}); weights {tm.quantization}, compute {DTYPE_NAMES[tm.compute_dtype]}")


def _log_end(log, summary: dict) -> None:
    n_skipped, ho = summary["skipped_steps"], summary["heldout"]
    fmt = lambda x: "n/a" if x is None else f"{x:.3f}"  # noqa: E731
    log.info(f"mean loss of the first / last {summary['loss_window']} steps: {fmt(summary['loss_first_mean'])} → "
             f"{fmt(summary['loss_last_mean'])} ({summary['steps_done']} steps, {summary['samples_per_s']} samples/s"
             f"{f', {n_skipped} updates skipped' if n_skipped else ''})")
    if ho and (ho["share"] or 0) > HELDOUT_BUDGET:
        log.warning(f"the held-out evaluations took {ho['share']:.0%} of the training time; lower "
                    "train.heldout_size or raise train.heldout_every")


def _summary(model_cfg, train_cfg, tm: TrainingModel, step: TrainStep, plan: batches.Plan,
             history: list[dict], data: TrainingData, *, start: int, done: int, stopped: str | None,
             clock: _StepClock, t_start: float, heldout_block: dict | None) -> dict:
    """summary.json's contents (see contract FinetuneSummary)."""
    cuda = torch.cuda.is_available()
    device = step.acc.device
    skipped_steps = [r for r in history if r.get("skipped")]
    tiny = model_cfg.kind == "tiny"
    trainable, total = step.unwrapped.get_nb_trainable_parameters()  # 4-bit weights counted unpacked, as peft does
    return {
        "model": "tiny" if tiny else str(model_cfg.id), "base_model": BASE_DIR if tiny else str(model_cfg.id),
        "base_model_in_results": tiny, "trainable_params": int(trainable), "total_params": int(total),
        "lora": tm.lora,
        "quantization": tm.quantization, "double_quant": model_cfg.double_quant if tm.quantization == "nf4" else None,
        "compute_dtype": DTYPE_NAMES[tm.compute_dtype], "loss": train_cfg.loss, **tm.grad_ckpt.as_dict(),
        "n_train": len(data.rows), "skipped_too_long": data.skipped,
        "batch_size": train_cfg.batch_size, "grad_accum": train_cfg.grad_accum, "world_size": plan.world,
        "effective_batch": train_cfg.batch_size * train_cfg.grad_accum * plan.world,
        "steps_per_epoch": plan.steps_per_epoch, "total_steps": plan.total_steps, "steps_done": done,
        "epochs_done": round(plan.epoch_of(done), 4), "resumed_from_step": start or None, "stopped_early": stopped,
        "skipped_steps": len(skipped_steps), "nonfinite_loss_steps": sum(r["loss"] is None for r in skipped_steps),
        **_loss_ends(history), "samples_per_s": clock.samples_per_s(),
        "checkpoint_seconds": round(clock.paused["checkpoint"], 2),
        "train_seconds": round(clock.before + time.perf_counter() - clock.t0, 2),
        "wall_seconds": round(time.perf_counter() - t_start, 2),
        "peak_gpu_mem_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 3) if cuda else None,
        "peak_cpu_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),  # Linux: KiB
        "device": torch.cuda.get_device_name(device) if cuda else "cpu", "torch_threads": torch.get_num_threads(),
        "heldout": heldout_block,
    }


def _loss_ends(history: list[dict]) -> dict:
    """First and final loss, and the mean loss of the first and the last tenth of the steps (single steps are
    noisy); skipped steps with a non-finite loss are left out."""
    history = [r for r in history if r["loss"] is not None]
    if not history:
        return {"first_loss": None, "final_loss": None, "loss_window": 0, "loss_first_mean": None,
                "loss_last_mean": None}
    k = max(1, len(history) // 10)
    mean = lambda rs: round(sum(r["loss"] for r in rs) / len(rs), 6)  # noqa: E731
    return {"first_loss": history[0]["loss"], "final_loss": history[-1]["loss"], "loss_window": k,
            "loss_first_mean": mean(history[:k]), "loss_last_mean": mean(history[-k:])}


def _time_is_up(accelerator, max_minutes: float | None, t_start: float) -> bool:
    """Every process stops at the same step: time is up when it is up on any process."""
    up = max_minutes is not None and time.perf_counter() - t_start > 60 * max_minutes
    if max_minutes is None or accelerator.num_processes == 1:  # no collective needed: no device round trip
        return up
    return bool(accelerator.reduce(torch.tensor(float(up), device=accelerator.device), "max") > 0)


def _save_checkpoint(accelerator, work_dir: Path, step_no: int, step: TrainStep, meta: dict) -> None:
    folder = checkpoint.save(work_dir, step_no, rank=accelerator.process_index, is_main=accelerator.is_main_process,
                             model=step.unwrapped, optimizer=step.optimizer, scheduler=step.scheduler,
                             scaler=step.acc.scaler, meta=meta)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        checkpoint.finish(folder)
