"""Free disk space where the model is cached and where results (checkpoints included) are written; the model
cache's need is the first download's estimate (vlm/model.download_gb: the half-precision revision matching the
compute dtype, about 5.9 GB instead of main's 11.7 GB of float32 weights)."""
from __future__ import annotations

import shutil
from pathlib import Path

from .result import FAIL, OK, Check

GB = 10 ** 9
CACHE_EXTRA_GB = 1.3  # the processor and tokenizer files, and room to spare beside the weights
# results: dataset images (~0.2 GB), adapters and resumable checkpoints.
RESULTS_GB = {"paper": 2.0, "demo": 0.5}


def _existing(path: Path) -> Path:
    path = Path(path).expanduser()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def planned_dtype(cfg, gpu: bool):
    """The compute dtype the run will use: this GPU's (as `auto` resolves it), else a T4's (fp16), the notebook's."""
    import torch

    from ..vlm.model import resolve_compute_dtype

    if gpu:
        return resolve_compute_dtype(cfg.train.compute_dtype, torch.device("cuda", 0))
    return torch.float16 if cfg.train.compute_dtype in ("auto", "fp16") else resolve_compute_dtype(
        cfg.train.compute_dtype, torch.device("cpu"))


def check_disk(profile: str, paths, local_model: bool, model_id: str = "", compute_dtype=None) -> Check:
    from ..hub_errors import cache_dir
    from ..vlm.model import HALF_REVISIONS, MAIN_DOWNLOAD_GB, download_gb

    download = 0.0 if local_model or not model_id else download_gb(model_id, compute_dtype)
    needs = {"model cache": download + CACHE_EXTRA_GB if download else 0.0,
             "results": RESULTS_GB.get(profile, RESULTS_GB["paper"])}
    where = {"model cache": Path(cache_dir()), "results": paths.results}
    found, short = [], []
    for name, path in where.items():
        free = shutil.disk_usage(_existing(path)).free / GB
        found.append(f"{name} {free:.0f} GB free")
        if free < needs[name]:
            short.append(f"{name} needs {needs[name]:.1f} GB ({free:.1f} GB free at {paths.rel(_existing(path))})")
    if download:
        revision = HALF_REVISIONS.get(compute_dtype)
        found.append(f"first model download about {download:.1f} GB ("
                     + (f"the {revision} revision; {MAIN_DOWNLOAD_GB:g} GB if it is missing)" if revision
                        else "main's float32 weights)"))
    if short:
        return Check("disk", FAIL, "; ".join(short), "free space, or set HF_HOME / --results-dir to a larger disk")
    return Check("disk", OK, ", ".join(found))
