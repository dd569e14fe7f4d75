"""The GPU: name, memory, and the compute dtype `auto` picks there (bf16 only with native support)."""
from __future__ import annotations

from .result import FAIL, OK, SKIP, Check, Facts

T4_CLASS_GIB = 14.0  # the paper profile is sized for a 16 GB T4 (15 GiB usable)


def check_gpu(facts: Facts, cfg) -> Check:
    import torch

    from ..vlm.model import DTYPE_NAMES, resolve_compute_dtype

    if not torch.cuda.is_available():
        if facts.profile == "demo":
            return Check("gpu", SKIP, "no CUDA GPU (the demo runs on CPU)")
        return Check("gpu", FAIL, "no CUDA GPU visible to torch",
                     "the paper profile needs one: Colab Runtime → Change runtime type → T4 GPU; Kaggle Settings → "
                     "Accelerator → GPU (or use --profile demo)")
    facts.gpu = True
    props = torch.cuda.get_device_properties(0)
    facts.device_name = props.name
    mem = props.total_memory / 2 ** 30
    dtype = resolve_compute_dtype(cfg.train.compute_dtype, torch.device("cuda", 0))
    how = "bf16" if dtype == torch.bfloat16 else f"{DTYPE_NAMES[dtype]} (no native bf16: fp32 LoRA weights + grad scaler)"
    line = f"{props.name}, {mem:.1f} GiB, compute capability {props.major}.{props.minor} → compute {how}"
    if mem < T4_CLASS_GIB and facts.profile == "paper":
        return Check("gpu", FAIL, line, f"below the {T4_CLASS_GIB:g} GiB the paper profile is sized for: lower "
                     "train.batch_size and raise train.grad_accum, or use a larger GPU")
    return Check("gpu", OK, line)
