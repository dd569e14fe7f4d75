"""Compute dtype on CUDA is decided by compute capability (bf16 only with native support, ≥ 8.0), not by
`torch.cuda.is_bf16_supported()`, which says True on a T4 through emulation; eval follows the same choice."""
from __future__ import annotations

import pytest
import torch

from tamrin.errors import TamrinError
from tamrin.vlm.evaluate import eval_precision
from tamrin.vlm.model import resolve_compute_dtype

CUDA = torch.device("cuda", 0)


def fake_gpu(monkeypatch, capability: tuple[int, int], bf16_supported: bool) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16_supported)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4" if capability < (8, 0) else "A100")


@pytest.mark.parametrize("bf16_supported", [True, False])
def test_t4_gets_fp16_whatever_is_bf16_supported_says(monkeypatch, bf16_supported):
    fake_gpu(monkeypatch, (7, 5), bf16_supported)
    assert resolve_compute_dtype("auto", CUDA) == torch.float16
    with pytest.raises(TamrinError, match="no native bf16"):
        resolve_compute_dtype("bf16", CUDA)
    assert resolve_compute_dtype("fp16", CUDA) == torch.float16


@pytest.mark.parametrize("bf16_supported", [True, False])
def test_ampere_and_newer_get_bf16(monkeypatch, bf16_supported):
    fake_gpu(monkeypatch, (8, 0), bf16_supported)
    assert resolve_compute_dtype("auto", CUDA) == torch.bfloat16
    assert resolve_compute_dtype("bf16", CUDA) == torch.bfloat16
    fake_gpu(monkeypatch, (9, 0), bf16_supported)
    assert resolve_compute_dtype("auto", CUDA) == torch.bfloat16


@pytest.mark.parametrize("trained_with", ["bf16", "auto", "fp16"])
def test_eval_precision_follows_the_capability(monkeypatch, trained_with):
    """A model trained in bf16 elsewhere is evaluated in fp16 on a T4; on an A100 as trained."""
    fake_gpu(monkeypatch, (7, 5), True)
    summary = {"quantization": "none", "compute_dtype": trained_with}
    assert eval_precision(summary, CUDA) == ("none", torch.float16)
    fake_gpu(monkeypatch, (8, 6), True)
    expected = torch.float16 if trained_with == "fp16" else torch.bfloat16
    assert eval_precision(summary, CUDA) == ("none", expected)
