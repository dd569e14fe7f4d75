"""`eval` stage: the base and the fine-tuned model (and the majority baseline) on the same test questions →
results/eval/, and the batched greedy answering that eval, the ablation and doctor use. The base is exactly the
model that was fine-tuned (same source, quantization, compute dtype and 4-bit preparation) under `disable_adapter()`.

Answering (issue 15; H200 numbers in bench/results/): questions are tokenised once and generated in order of prompt
length (little padding; answers put back in input order), their images preprocessed ahead by DataLoader workers
into pinned memory. transformers' greedy loop already stops once every row has emitted EOS (`GenerationMixin._sample`
loops `while self._has_unfinished_sequences(...)`, `StopCheck.__call__` returns `unfinished_sequences.max() == 0`;
transformers 5.24, generation/utils.py). Only the new tokens are decoded, with `skip_special_tokens=True`: that drops
<pad>, <eos>, <bos>, <image> and keeps PaliGemma's <locNNNN>/<segNNN> pieces, which `PaliGemmaProcessor` registers as
ordinary added tokens (processing_paligemma.py: `tokenizer.add_tokens(EXTRA_TOKENS)`). fp16 guard: a forward hook
notes non-finite logits on the device (no sync per step); such a batch is generated again in fp32.
"""
from __future__ import annotations

import contextlib
import itertools
import random
import time
from pathlib import Path
from typing import Sequence

import torch

from .. import contract
from ..atomic import read_json
from ..errors import MissingResultError, TamrinError
from . import batches
from .metrics import analyse, compute_metrics, majority_baseline, prediction_rows
from .model import DTYPE_NAMES, load_base_model, load_processor, prepare_quantized, resolve_compute_dtype, \
    on_device, resolve_quantization


# ---------------------------------------------------------------- batched greedy answering

def vision_dtype(model) -> torch.dtype:
    """The dtype pixel values must have: that of the vision tower's first floating-point weight."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return next((p.dtype for p in base.model.vision_tower.parameters() if p.is_floating_point()), torch.float32)


def decode_new(processor, sequences: torch.Tensor, prompt_len: int) -> list[str]:
    """Text of the tokens after the prompt (generate returns prompt + new tokens), special tokens dropped."""
    return [t.strip() for t in processor.batch_decode(sequences[:, prompt_len:], skip_special_tokens=True)]


def _four_bit_layers(model) -> list:
    # bitsandbytes' Linear4bit (the only modules with `compute_type_is_set`) casts its input to `compute_dtype`
    return [m for m in model.modules() if hasattr(m, "compute_type_is_set")]


def below_fp32(model) -> bool:
    """Does any part of `model` compute below fp32: an fp16/bf16 weight, or a 4-bit layer's compute dtype (a
    4-bit base prepared as for training keeps everything else in fp32, so its weights alone do not tell)?"""
    return (any(p.dtype in (torch.float16, torch.bfloat16) for p in model.parameters())
            or any(m.compute_dtype != torch.float32 for m in _four_bit_layers(model)))


@contextlib.contextmanager
def fp32_compute(model):
    """Every fp16/bf16 parameter and buffer in fp32, and bitsandbytes' 4-bit layers computing in fp32, for the
    duration (the 4-bit weights themselves stay as they are); everything is put back afterwards."""
    changed = [(t, t.dtype) for t in itertools.chain(model.parameters(), model.buffers())
               if t.dtype in (torch.float16, torch.bfloat16)]
    layers = [(m, m.compute_dtype) for m in _four_bit_layers(model)]
    for t, _ in changed:
        t.data = t.data.float()
    for m, _ in layers:
        m.compute_dtype = torch.float32
    try:
        yield
    finally:
        for m, dtype in layers:
            m.compute_dtype = dtype
        for t, dtype in changed:
            t.data = t.data.to(dtype)


class _NonFiniteLogits:
    """A forward hook on the output embedding that sets a device flag when logits are inf/nan."""

    def __init__(self, model, device: torch.device) -> None:
        self.flag = torch.zeros((), dtype=torch.bool, device=device)
        self.handle = model.get_output_embeddings().register_forward_hook(self._hook)

    def _hook(self, module, args, out) -> None:
        self.flag |= ~torch.isfinite(out).all()

    def seen(self) -> bool:
        """Whether logits were non-finite since the last call (one wait for the device)."""
        seen = bool(self.flag)
        self.flag.zero_()
        return seen


def hit_limit(new_tokens: torch.Tensor, eos_token_id: int, max_new_tokens: int) -> list[bool]:
    """Per row of a batch's generated tokens: stopped at `max_new_tokens` rather than at EOS (the greedy loop ends a
    batch once every row has emitted EOS: a row was cut short when the batch ran the full budget without its EOS)."""
    if new_tokens.shape[1] < max_new_tokens:
        return [False] * new_tokens.shape[0]
    return (~(new_tokens[:, :max_new_tokens] == eos_token_id).any(dim=1)).tolist()


def greedy(model, batch: dict, *, max_new_tokens: int, tok) -> torch.Tensor:
    """`model.generate` of one left-padded batch on the device: prompt + new tokens."""
    batch = dict(batch)
    batch.pop("position_ids", None)  # generate derives them from the attention mask (PaliGemma adds its +1)
    batch["pixel_values"] = batch["pixel_values"].to(vision_dtype(model))
    return model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, use_cache=True,
                          eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)


def length_groups(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices in order of length (stable), cut into batches of `batch_size`."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[s:s + batch_size] for s in range(0, len(order), batch_size)]


def answer(model, processor, rows: Sequence[dict], images, prefix: str, *, batch_size: int, max_new_tokens: int,
           device: torch.device, desc: str = "generate", progress: bool = True, num_workers: int = 0,
           pixels: batches.PixelCache | None = None, stats: dict | None = None,
           truncated: list[bool] | None = None) -> list[str]:
    """Greedy answers for `rows`, in their order, `batch_size` questions per `generate` call. `pixels`: a cache to
    share between calls (base and fine-tuned); `stats` gets `fp32_fallback_batches` and `nonfinite_batches`
    (non-finite even in fp32); `truncated`, when given, is filled with one `hit_limit` flag per row."""
    from tqdm.auto import tqdm

    model.eval()
    tok = processor.tokenizer
    examples = batches.tokenize(processor, rows, prefix, with_answers=False)
    groups = length_groups([len(e) for e in examples], batch_size)
    pixels = pixels if pixels is not None else batches.PixelCache(processor.image_processor, images, 2**30)
    loader = batches.loader(batches.Collated(groups, examples, pixels, tok.pad_token_id, with_answers=False),
                            workers=num_workers, pin=device.type == "cuda")
    out: list[str | None] = [None] * len(rows)
    cut: list[bool] = [False] * len(rows)
    counts = {"fp32_fallback_batches": 0, "nonfinite_batches": 0}
    watch = _NonFiniteLogits(model, device)
    bar = tqdm(total=len(rows), desc=desc, unit="q", disable=not progress, dynamic_ncols=True)
    try:
        with torch.no_grad():
            for group, cpu_batch in zip(groups, loader):
                batch = batches.to_device(cpu_batch, device)
                seqs = greedy(model, batch, max_new_tokens=max_new_tokens, tok=tok)
                nonfinite = watch.seen()
                if nonfinite and below_fp32(model):
                    counts["fp32_fallback_batches"] += 1
                    with fp32_compute(model):
                        seqs = greedy(model, batch, max_new_tokens=max_new_tokens, tok=tok)
                    nonfinite = watch.seen()
                counts["nonfinite_batches"] += int(nonfinite)
                seqs, prompt_len = seqs.cpu(), batch["input_ids"].shape[1]
                for i, text, hit in zip(group, decode_new(processor, seqs, prompt_len),
                                        hit_limit(seqs[:, prompt_len:], tok.eos_token_id, max_new_tokens)):
                    out[i], cut[i] = text, hit
                bar.update(len(group))
    finally:
        watch.handle.remove()
        bar.close()
    if stats is not None:
        stats.update(counts)
    if truncated is not None:
        truncated[:] = cut
    return out  # type: ignore[return-value]


# ---------------------------------------------------------------- the stage

def base_source_of(finetune_dir: Path, summary: dict, model_cfg) -> Path | str:
    """The base the adapter was trained on, as finetune's summary.json records it: a folder saved inside
    results/finetune/ (the demo's tiny random model), else `model.id`."""
    if not summary.get("base_model_in_results"):
        return model_cfg.id
    saved = Path(finetune_dir) / summary["base_model"]
    if not (saved / "config.json").exists():
        raise MissingResultError(f"missing {saved}/config.json: re-run `python build.py finetune --force finetune`")
    return saved


def eval_precision(summary: dict, device: torch.device) -> tuple[str, torch.dtype]:
    """Quantization and compute dtype of training, where this device supports them."""
    quant = resolve_quantization(summary.get("quantization", "auto"), device)
    try:
        dtype = resolve_compute_dtype(summary.get("compute_dtype", "auto"), device)
    except TamrinError:
        dtype = resolve_compute_dtype("auto", device)
    return quant, dtype


def load_for_eval(finetune_dir: Path, model_cfg, device: torch.device):
    """(peft model with the trained adapter, processor, info dict)."""
    from peft import PeftModel

    finetune_dir = Path(finetune_dir)
    summary_path = finetune_dir / "summary.json"
    if not summary_path.exists() or not (finetune_dir / "adapter" / "adapter_config.json").exists():
        raise MissingResultError(f"missing {summary_path} or {finetune_dir}/adapter/: run `python build.py finetune`")
    summary = read_json(summary_path)
    source = base_source_of(finetune_dir, summary, model_cfg)
    quant, dtype = eval_precision(summary, device)
    processor = load_processor(source)
    base = load_base_model(source, quantization=quant, compute_dtype=dtype, device=device,
                           double_quant=model_cfg.double_quant)
    if quant == "nf4":
        base = prepare_quantized(base)  # the numerics training used (fp32 residual stream), not a plain fp16 base
    model = PeftModel.from_pretrained(base, finetune_dir / "adapter", is_trainable=False)
    model.eval()
    info = {"base_model": str(summary.get("base_model")), "quantization": quant, "compute_dtype": DTYPE_NAMES[dtype]}
    return model, processor, info


def draw_samples(ids: list[str], n: int, seed: int) -> list[str]:
    """`n` ids drawn without replacement with a seeded generator (the report's sample table)."""
    return random.Random(seed).sample(list(ids), min(n, len(ids)))


@on_device
def run(ctx, device: torch.device) -> None:
    eval_cfg, model_cfg = ctx.section("eval"), ctx.section("model")
    data_dir, finetune_dir, out = Path(ctx.inputs["data"]), Path(ctx.inputs["finetune"]), Path(ctx.out_dir)
    rows = batches.read_split(data_dir, "test")[:eval_cfg.max_examples]  # None: all
    model, processor, info = load_for_eval(finetune_dir, model_cfg, device)
    images = batches.ImageStore(data_dir)
    ctx.log.info(f"evaluating {len(rows)} test questions (batch {eval_cfg.batch_size}, "
                 f"≤{eval_cfg.max_new_tokens} new tokens) on {device.type}")

    timings, predictions, guard = {}, {}, {"base": {}, "finetuned": {}}
    truncated: dict[str, list[bool]] = {"base": [], "finetuned": []}
    pixels = batches.PixelCache(processor.image_processor, images, 2**30)  # the test images, shared by both runs
    try:
        for name in ("base", "finetuned"):
            t0 = time.perf_counter()
            # the base: the same weights without the LoRA update
            with model.disable_adapter() if name == "base" else contextlib.nullcontext():
                preds = answer(model, processor, rows, images, model_cfg.prompt_prefix, desc=f"eval {name}",
                               batch_size=eval_cfg.batch_size, max_new_tokens=eval_cfg.max_new_tokens, device=device,
                               num_workers=eval_cfg.num_workers, pixels=pixels, stats=guard[name],
                               truncated=truncated[name])
            timings[name] = time.perf_counter() - t0
            if guard[name]["fp32_fallback_batches"] or guard[name]["nonfinite_batches"]:
                ctx.log.warning(f"{name}: {guard[name]['fp32_fallback_batches']} batches had non-finite logits in "
                                f"{info['compute_dtype']} and were generated again in fp32; "
                                f"{guard[name]['nonfinite_batches']} stayed non-finite")
            if any(truncated[name]):
                ctx.log.warning(f"{name}: {sum(truncated[name])} of {len(rows)} answers stopped at "
                                f"{eval_cfg.max_new_tokens} new tokens without an end of sequence")
            predictions[name] = prediction_rows(rows, preds)
    except torch.OutOfMemoryError:
        raise TamrinError(f"CUDA out of memory while generating with eval.batch_size = {eval_cfg.batch_size}: "
                          f"use --set eval.batch_size={max(1, eval_cfg.batch_size // 2)}") from None

    predictions["baseline"] = majority_baseline(batches.read_split(data_dir, "train"), rows)
    metrics = {}
    for name, preds in predictions.items():
        m = metrics[name] = compute_metrics(preds, resamples=eval_cfg.bootstrap, seed=eval_cfg.seed)
        contract.write(out, f"eval/{name}/predictions.jsonl", preds)
        contract.write(out, f"eval/{name}/metrics.json", m)
        ctx.log.info(f"{name}: exact match {m['exact_match']:.3f}, ROUGE-L F1 {m['rougeL']['f']:.3f} "
                     f"[{m['rougeL']['ci_low']:.3f}, {m['rougeL']['ci_high']:.3f}]")

    contract.write(out, "eval/analysis.json", analyse(predictions, truncated, eval_cfg.max_new_tokens,
                                                      resamples=eval_cfg.bootstrap, seed=eval_cfg.seed))
    ids = draw_samples([r["id"] for r in rows], eval_cfg.n_samples, eval_cfg.seed)
    samples = [{**{k: rows[j].get(k) for k in ("id", "image", "question", "answer", "qtype")},
                "base": predictions["base"][j]["prediction"], "finetuned": predictions["finetuned"][j]["prediction"]}
               for j in map({r["id"]: k for k, r in enumerate(rows)}.get, ids)]
    contract.write(out, "eval/samples.json", {"seed": eval_cfg.seed, "ids": ids, "samples": samples})
    contract.write(out, "eval/summary.json", {
        **info, "n": len(rows), "batch_size": eval_cfg.batch_size, "max_new_tokens": eval_cfg.max_new_tokens,
        "seconds": {k: round(v, 2) for k, v in timings.items()},
        "questions_per_s": {k: round(len(rows) / v, 2) for k, v in timings.items() if v > 0},
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "exact_match": {k: m["exact_match"] for k, m in metrics.items()},
        **{key: {k: v[key] for k, v in guard.items()} for key in ("fp32_fallback_batches", "nonfinite_batches")},
    })
