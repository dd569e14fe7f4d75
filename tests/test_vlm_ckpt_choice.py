"""train.grad_ckpt = auto: the memory estimate agrees with every peak measured on the GPU (bench/results/*.json),
the layer settings are what transformers really sets, and the decision follows the estimate branch by branch —
including through finetune's own `checkpointing_choice` on the real model code."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures"))
from vlm_support import lora_cfg, model_cfg, tiny_base, train_cfg  # noqa: E402

from tamrin.vlm import footprint as fp  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
D = fp.Dims.of(fp.load_config())  # google/paligemma-3b-pt-224
TARGETS = list(D.gemma_linear_shapes())  # the seven Gemma linears


R16 = lora_cfg(rank=16, targets=TARGETS, scope="language_model", dropout=0.05)


def _estimate(**kw) -> float:
    args = dict(quantized=True, double_quant=True, seq_len=280, batch=8, suffix_len=3, loss="suffix",
                ckpt_layers=D.t_layers)
    return fp.estimate_peak(D, R16, **{**args, **kw})["total"]


def _layers(row: dict) -> int:
    """Checkpointed decoder layers of a measured row (older rows say only on/off)."""
    if "grad_ckpt_layers" in row:
        return row["grad_ckpt_layers"]
    return D.t_layers if row.get("grad_ckpt", True) else 0


def measured_peaks() -> list[tuple[dict, float]]:
    """(estimate arguments, measured peak bytes) of every committed H200 measurement of the LoRA r16 language-model
    setting: the benchmark's training rows and the memory stage's measured modes."""
    out = []
    for path in sorted((ROOT / "bench" / "results").glob("*.json")):
        data = json.loads(path.read_text())
        for r in data.get("training") or []:
            if r.get("ok") and r.get("rank") == 16 and r.get("peak_allocated_gib"):
                args = dict(quantized=r["mode"].startswith("nf4"), batch=r["batch"], seq_len=r["seq_len"],
                            suffix_len=r.get("suffix_len", 3), loss=r["loss"], ckpt_layers=_layers(r))
                out.append((args, r["peak_allocated_gib"] * 2**30))
        for mode, m in (data.get("modes") or {}).items():
            if m.get("ok") and mode in ("qlora_nf4", "lora_bf16") and data.get("lora_scope") == "language_model":
                args = dict(quantized=mode == "qlora_nf4", batch=data["batch"], seq_len=data["seq_len"],
                            loss=data["loss"], ckpt_layers=_layers(data))
                out.append((args, m["peak_allocated"]))
    return out


def test_estimate_is_within_tolerance_of_every_measured_peak():
    peaks = measured_peaks()
    assert len(peaks) >= 5  # b8/b32 × suffix/full QLoRA and the bf16-base LoRA mode, at least
    errors = [(args, _estimate(**args) / peak - 1) for args, peak in peaks]
    bad = [(a, round(e, 3)) for a, e in errors if abs(e) > fp.ESTIMATE_TOLERANCE]
    assert not bad, bad
    # e.g. QLoRA r16 seq 280 batch 8, suffix loss, checkpointing: measured 5.09 GiB
    assert _estimate() / 2**30 == pytest.approx(5.088, rel=fp.ESTIMATE_TOLERANCE)


def test_estimate_terms_behave():
    on, off = _estimate(), _estimate(ckpt_layers=0)
    assert off > 2 * on  # 18 layers' saved tensors instead of 18 layer inputs
    assert _estimate(batch=32, ckpt_layers=0) > off  # more tokens, more activations
    # each checkpointed layer trades its saved set for its input, the first one also pays one recompute
    per = fp.layer_bytes_per_token(D, stream=4, targets=TARGETS, dropout=True)
    tokens = 8 * 280
    assert _estimate(ckpt_layers=1) - off == tokens * per["checkpoint"]
    assert _estimate(ckpt_layers=6) - _estimate(ckpt_layers=7) == tokens * (per["saved"] - per["checkpoint"])
    assert off > _estimate(ckpt_layers=6) > on
    with pytest.raises(ValueError):
        _estimate(ckpt_layers=D.t_layers + 1)
    assert _estimate(loss="full") > on  # logits at every position
    # QLoRA keeps the residual stream (and so the MLP intermediates) in fp32: more per token than a bf16 base
    q = fp.layer_bytes_per_token(D, stream=4, targets=TARGETS, dropout=True)
    b = fp.layer_bytes_per_token(D, stream=2, targets=TARGETS, dropout=True)
    assert q["saved"] > b["saved"] and q["checkpoint"] == 4 * D.t_hidden and b["checkpoint"] == 2 * D.t_hidden
    # without dropout the LoRA layers keep no masks
    assert fp.layer_bytes_per_token(D, stream=4, targets=TARGETS, dropout=False)["saved"] < q["saved"]
    # the state term is the memory stage's as_implemented
    pl = fp.closed_form_lora(D, 16, TARGETS, "language_model")["formula"]
    state = fp.as_implemented(fp.closed_form_params(D)["total"], pl, fp.closed_form_quantized(D), True)
    assert fp.estimate_peak(D, R16, quantized=True, double_quant=True, seq_len=280, batch=8, suffix_len=3,
                            loss="suffix", ckpt_layers=18)["state"] == state["qlora_nf4"]["total"]


def test_settings_are_what_transformers_sets():
    """Each every_n of the real 3B architecture: the counts read off a meta model, and on a model built for real
    (the tiny one) the same N really leaves those layers checkpointed after attach_lora."""
    found = fp.settings(fp.load_config())
    assert found[None] == fp.Pattern(None, 0, 0)
    assert found[1] == fp.Pattern(1, 18, 27)  # every layer: Gemma's 18 and SigLIP's 27
    assert max(k for k in found if k) == 45  # one setting per checkpointable layer count
    # transformers counts SigLIP's layers first: every 3rd of the 45 hits decoder layers 27, 30, …, 42 → 6 of 18
    assert found[3].decoder == 6 and found[2].decoder == 9
    order = fp.candidates(found)
    assert [p.decoder for p in order] == sorted({p.decoder for p in found.values()})
    assert order[0].every_n is None and order[-1].every_n == 1
    assert all(p.decoder > 0 for p in order[1:])


def test_partial_checkpointing_on_a_real_model_trains():
    """every_n on the tiny PaliGemma: the flags transformers sets match `settings`, and the loss still falls."""
    from transformers import PaliGemmaConfig

    from tamrin.vlm.model import attach_lora, load_base_model

    src = tiny_base()
    cfg = PaliGemmaConfig.from_pretrained(src)
    found = fp.settings(cfg)
    n = next(k for k, p in found.items() if k and 0 < p.decoder < cfg.text_config.num_hidden_layers)
    base = load_base_model(src, quantization="none", compute_dtype=torch.float32, device=torch.device("cpu"))
    model, _ = attach_lora(base, lora_cfg(rank=4, alpha=8, dropout=0.0, targets=TARGETS), quantized=False,
                           ckpt_every=n)
    assert fp.checkpointed_layers(model)[0] == found[n].decoder
    model.train()
    from tamrin.vlm.memory_analysis import synthetic_batch
    from tamrin.vlm.step import TrainStep, suffix_loss

    # a checkpointed layer enters its MLP again in the backward pass, the others once (a pre-hook: torch's
    # non-reentrant checkpoint stops the recompute right after the last saved tensor, inside down_proj)
    layers = model.get_base_model().model.language_model.layers
    calls = [0] * len(layers)
    hooks = [layer.mlp.register_forward_pre_hook(lambda *a, i=i: calls.__setitem__(i, calls[i] + 1))
             for i, layer in enumerate(layers)]
    batch = synthetic_batch(model.config, 2, 30, 3, torch.device("cpu"))
    loss, _ = suffix_loss(model, batch)
    loss.backward()
    for h in hooks:
        h.remove()
    assert calls == [2 if layer.gradient_checkpointing else 1 for layer in layers] and calls.count(2) == found[n].decoder
    model.zero_grad(set_to_none=True)
    losses = TrainStep.for_measuring(model, lr=5e-3).run(batch, 6)
    assert losses[-1] < losses[0]


def _settings():
    return {None: fp.Pattern(None, 0, 0), 1: fp.Pattern(1, 18, 27), 2: fp.Pattern(2, 9, 14),
            3: fp.Pattern(3, 6, 9), 4: fp.Pattern(4, 5, 7), 14: fp.Pattern(14, 2, 2), 8: fp.Pattern(8, 2, 4),
            40: fp.Pattern(40, 0, 1)}


def test_choice_branch_by_branch():
    gib = 2**30
    found = _settings()
    kw = dict(found=found, layers=18)
    assert fp.choose("true", cuda=True, **kw) == fp.Choice(found[1], 18, "on: train.grad_ckpt = true")
    assert fp.choose(False, cuda=True, **kw).on is False and fp.choose(True, cuda=False, **kw).on is True
    three = fp.choose("3", cuda=True, **kw)
    assert three.every_n == 3 and three.as_dict()["grad_ckpt_layers"] == 6 and "6 of 18" in three.reason
    cpu = fp.choose("auto", cuda=False, **kw)
    assert cpu.on is False and "CPU" in cpu.reason
    # one candidate per decoder count; for 2 layers every 14th (2 SigLIP layers) beats every 8th (4)
    assert [(p.every_n, p.decoder) for p in fp.candidates(found)] == [(None, 0), (14, 2), (4, 5), (3, 6), (2, 9),
                                                                        (1, 18)]
    est = {k: {"total": (10 - 0.5 * k) * gib} for k in (0, 2, 5, 6, 9, 18)}  # 10 GiB off, 0.5 GiB per layer
    fits = fp.choose("auto", cuda=True, estimates=est, free_bytes=12 * gib, **kw)  # 10 ≤ 0.85 × 12 = 10.2
    assert fits.on is False and "10.0 GiB" in fits.reason and "fits" in fits.reason and "85%" in fits.reason
    some = fp.choose("auto", cuda=True, estimates=est, free_bytes=10 * gib, **kw)  # 8.5: 5 layers → 7.5 GiB
    assert some.every_n == 4 and some.pattern.decoder == 5 and "5 of 18" in some.reason and some.peak_gib == 7.5
    assert some.as_dict() == {"grad_ckpt": True, "grad_ckpt_layers": 5, "decoder_layers": 18,
                              "grad_ckpt_reason": some.reason}
    every = fp.choose("auto", cuda=True, estimates=est, free_bytes=2 * gib, **kw)  # 1.7: only all 18 → 1.0 GiB
    assert every.every_n == 1 and "only with every layer" in every.reason
    over = fp.choose("auto", cuda=True, estimates=est, free_bytes=1 * gib, **kw)  # nothing fits
    assert over.every_n == 1 and "exceeds" in over.reason and "batch_size" in over.reason
    assert fits.as_dict() == {"grad_ckpt": False, "grad_ckpt_layers": 0, "decoder_layers": 18,
                              "grad_ckpt_reason": fits.reason}
    from tamrin.errors import ConfigError

    for bad in ("sometimes", "99"):
        with pytest.raises(ConfigError):
            fp.choose(bad, cuda=True, **kw)


def test_config_refuses_a_bad_value():
    from tamrin.errors import ConfigError
    from tamrin.config import TrainConfig

    for good in ("auto", "true", "false", "3"):
        assert TrainConfig(grad_ckpt=good).grad_ckpt == good  # a section checks itself when built
    from tamrin.config import load_config

    # `--set train.grad_ckpt=true` reads a TOML boolean: the documented value, not "not a string"
    assert load_config("demo", overrides=["train.grad_ckpt=true"]).train.grad_ckpt == "true"
    for bad in ("sometimes", "-2"):
        with pytest.raises(ConfigError, match="train.grad_ckpt"):
            TrainConfig(grad_ckpt=bad)


def test_finetune_resolves_auto_from_the_model_config(monkeypatch):
    """finetune's checkpointing_choice: off on a CPU; on CUDA it estimates from the model's own config and the
    free memory (both faked here: this machine has no GPU)."""
    from tamrin.vlm import finetune

    src = tiny_base()
    cpu = finetune.checkpointing_choice(src, model_cfg(), lora_cfg(), train_cfg(grad_ckpt="auto"),
                                        torch.device("cpu"), "nf4")
    assert cpu.on is False
    forced = finetune.checkpointing_choice(src, model_cfg(), lora_cfg(), train_cfg(grad_ckpt="true"),
                                           torch.device("cpu"), "nf4")
    assert forced.on is True
    for free, expect in ((2**40, None), (2**10, 1)):
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None, free=free: (free, 2**40))
        got = finetune.checkpointing_choice(src, model_cfg(), lora_cfg(), train_cfg(grad_ckpt="auto"),
                                            torch.device("cuda"), "nf4", seq_len=40)
        assert got.every_n == expect and f"{free / 2**30:.1f} GiB free" in got.reason
        assert got.peak_gib is not None and got.peak_gib < 1  # the tiny model's estimate, not the 3B's
