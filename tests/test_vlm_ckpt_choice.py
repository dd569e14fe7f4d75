"""train.grad_ckpt = auto: the memory estimate agrees with every peak measured on the GPU (bench/results/*.json),
and the decision follows it branch by branch — including through finetune's own `checkpointing_choice`."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures"))
from vlm_support import lora_cfg, model_cfg, tiny_base, train_cfg  # noqa: E402

from tamrin.vlm import ckpt_choice as cc  # noqa: E402
from tamrin.vlm import memory_analysis as ma  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
D = ma.Dims.from_dict(ma.load_config_dict())  # google/paligemma-3b-pt-224
TARGETS = list(ma.GEMMA_LINEARS)


def _estimate(**kw) -> float:
    args = dict(quantized=True, double_quant=True, rank=16, targets=TARGETS, scope="language_model", dropout=0.05,
                seq_len=280, batch=8, suffix_len=3, loss="suffix", grad_ckpt=True)
    return cc.estimate_peak(D, **{**args, **kw})["total"]


def measured_peaks() -> list[tuple[dict, float]]:
    """(estimate arguments, measured peak bytes) of every committed H200 measurement of the LoRA r16 language-model
    setting: the benchmark's training rows and the memory stage's measured modes."""
    out = []
    for path in sorted((ROOT / "bench" / "results").glob("*.json")):
        data = json.loads(path.read_text())
        for r in data.get("training") or []:
            if r.get("ok") and r.get("rank") == 16 and r.get("peak_allocated_gib"):
                args = dict(quantized=r["mode"].startswith("nf4"), batch=r["batch"], seq_len=r["seq_len"],
                            suffix_len=r.get("suffix_len", 3), loss=r["loss"], grad_ckpt=r.get("grad_ckpt", True))
                out.append((args, r["peak_allocated_gib"] * 2**30))
        for mode, m in (data.get("modes") or {}).items():
            if m.get("ok") and mode in ("qlora_nf4", "lora_bf16") and data.get("lora_scope") == "language_model":
                args = dict(quantized=mode == "qlora_nf4", batch=data["batch"], seq_len=data["seq_len"],
                            loss=data["loss"], grad_ckpt=data["grad_ckpt"])
                out.append((args, m["peak_allocated"]))
    return out


def test_estimate_is_within_tolerance_of_every_measured_peak():
    peaks = measured_peaks()
    assert len(peaks) >= 5  # b8/b32 × suffix/full QLoRA and the bf16-base LoRA mode, at least
    errors = [(args, _estimate(**args) / peak - 1) for args, peak in peaks]
    bad = [(a, round(e, 3)) for a, e in errors if abs(e) > cc.ESTIMATE_TOLERANCE]
    assert not bad, bad
    # e.g. QLoRA r16 seq 280 batch 8, suffix loss, checkpointing: measured 5.09 GiB
    assert _estimate() / 2**30 == pytest.approx(5.088, rel=cc.ESTIMATE_TOLERANCE)


def test_estimate_terms_behave():
    on, off = _estimate(), _estimate(grad_ckpt=False)
    assert off > 2 * on  # 18 layers' saved tensors instead of 18 layer inputs
    assert _estimate(batch=32, grad_ckpt=False) > off  # more tokens, more activations
    assert _estimate(loss="full") > on  # logits at every position
    # QLoRA keeps the residual stream (and so the MLP intermediates) in fp32: more per token than a bf16 base
    q = cc.layer_bytes_per_token(D, stream=4, targets=TARGETS, dropout=True)
    b = cc.layer_bytes_per_token(D, stream=2, targets=TARGETS, dropout=True)
    assert q["saved"] > b["saved"] and q["checkpoint"] == 4 * D.t_hidden and b["checkpoint"] == 2 * D.t_hidden
    # without dropout the LoRA layers keep no masks
    assert cc.layer_bytes_per_token(D, stream=4, targets=TARGETS, dropout=False)["saved"] < q["saved"]
    # the state term is the memory stage's as_implemented
    pl = ma.closed_form_lora(D, 16, TARGETS, "language_model")["formula"]
    assert cc.estimate_peak(D, quantized=True, double_quant=True, rank=16, targets=TARGETS, scope="language_model",
                            dropout=0.05, seq_len=280, batch=8, suffix_len=3, loss="suffix",
                            grad_ckpt=True)["state"] == round(cc.training_state(D, quantized=True, double_quant=True,
                                                                                lora_trainable=pl))


def test_choice_branch_by_branch():
    gib = 2**30
    assert cc.choose("true", cuda=True) == cc.Choice(True, "on: train.grad_ckpt = true")
    assert cc.choose(False, cuda=True).on is False and cc.choose(True, cuda=False).on is True
    cpu = cc.choose("auto", cuda=False)
    assert cpu.on is False and "CPU" in cpu.reason
    est = {"total": 10 * gib}
    fits = cc.choose("auto", cuda=True, estimate=est, free_bytes=12 * gib)  # 10 ≤ 0.85 × 12 = 10.2
    assert fits.on is False and "10.0 GiB" in fits.reason and "fits" in fits.reason and "85%" in fits.reason
    tight = cc.choose("auto", cuda=True, estimate=est, free_bytes=11 * gib)  # 10 > 9.35
    assert tight.on is True and "exceeds" in tight.reason
    assert fits.as_dict() == {"grad_ckpt": False, "grad_ckpt_reason": fits.reason}
    with pytest.raises(ValueError):
        cc.choose("sometimes", cuda=True)


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
    for free, expect in ((2**40, False), (2**10, True)):
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None, free=free: (free, 2**40))
        got = finetune.checkpointing_choice(src, model_cfg(), lora_cfg(), train_cfg(grad_ckpt="auto"),
                                            torch.device("cuda"), "nf4", seq_len=40)
        assert got.on is expect and got.free_gib == round(free / 2**30, 2)
        assert got.peak_off_gib is not None and got.peak_off_gib < 1  # the tiny model's estimate, not the 3B's
