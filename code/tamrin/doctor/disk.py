"""Free disk space where the model is cached and where results (checkpoints included) are written."""
from __future__ import annotations

import shutil
from pathlib import Path

from .result import FAIL, OK, Check

GB = 10 ** 9
# google/paligemma-3b-pt-224's safetensors are stored in float32 (≈ 2.9 B parameters × 4 bytes; not confirmed
# offline), plus the tokenizer; results: dataset images (~0.2 GB), adapters and resumable checkpoints.
NEEDS_GB = {"paper": {"model cache": 13.0, "results": 2.0}, "demo": {"model cache": 0.0, "results": 0.5}}


def _existing(path: Path) -> Path:
    path = Path(path).expanduser()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_disk(profile: str, paths, local_model: bool) -> Check:
    from ..hub_errors import cache_dir

    needs = dict(NEEDS_GB.get(profile, NEEDS_GB["paper"]))
    if local_model:
        needs["model cache"] = 0.0
    where = {"model cache": Path(cache_dir()), "results": paths.results}
    found, short = [], []
    for name, path in where.items():
        free = shutil.disk_usage(_existing(path)).free / GB
        found.append(f"{name} {free:.0f} GB free")
        if free < needs[name]:
            short.append(f"{name} needs {needs[name]:g} GB ({free:.1f} GB free at {paths.rel(_existing(path))})")
    if short:
        return Check("disk", FAIL, "; ".join(short), "free space, or set HF_HOME / --results-dir to a larger disk")
    return Check("disk", OK, ", ".join(found))
