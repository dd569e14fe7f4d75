"""Resumable training state: a folder `ckpt-<step>` in the work folder with the trainable (LoRA) weights, optimizer,
scheduler and grad-scaler states, every process's RNG state and the logs so far — tensors and plain data only, loaded
with `torch.load(weights_only=True)` (a checkpoint cannot run code). `complete.json` is written last (a kill mid-save
leaves a folder that is ignored); the two newest complete ones are kept, so one that fails to load resumes from the
one before. The quantized base is never saved: it is reloaded from source.
"""
from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import read_json, write_json

DONE = "complete.json"


def rng_state() -> dict[str, Any]:
    """Every generator's state as tensors and plain data (what `torch.load(weights_only=True)` accepts)."""
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": [version, list(mt), gauss],
             "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), pos, has_gauss, cached],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _step_of(folder: Path) -> int:
    return int(folder.name.split("-")[1])


def complete(work_dir: Path) -> list[Path]:
    """The complete checkpoint folders, newest first."""
    return sorted((d for d in Path(work_dir).glob("ckpt-*") if (d / DONE).exists()), key=_step_of, reverse=True)


def save(work_dir: Path, step: int, *, rank: int, is_main: bool, model=None, optimizer=None, scheduler=None,
         scaler=None, meta: dict | None = None) -> Path:
    """Write this process's part of checkpoint `step` (every rank its RNG; the main process the rest).
    The caller must synchronise processes before `finish` marks it complete."""
    folder = Path(work_dir) / f"ckpt-{step:07d}"
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(rng_state(), folder / f"rng-{rank}.pt")
    if is_main:
        trained = {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}
        torch.save({"model": trained, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict() if scaler else None}, folder / "state.pt")
        write_json(folder / "meta.json", {"step": step, **(meta or {})})
    return folder


def finish(folder: Path, keep: int = 2) -> None:
    """Mark `folder` complete and delete all but the `keep` newest complete checkpoints (main process only);
    incomplete folders older than it (killed saves) go too."""
    write_json(folder / DONE, {"step": _step_of(folder)})
    kept = complete(folder.parent)[:keep]
    for old in folder.parent.glob("ckpt-*"):
        if old not in kept and _step_of(old) < _step_of(folder):
            shutil.rmtree(old, ignore_errors=True)


def load(folder: Path, rank: int, *, model, optimizer, scheduler, scaler=None) -> dict:
    """Restore the states saved in `folder`; returns its meta.json."""
    state = torch.load(folder / "state.pt", map_location="cpu", weights_only=True)
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if set(params) != set(state["model"]):
        raise RuntimeError("checkpoint does not match the model's trainable parameters")
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(state["model"][n].to(p.device, p.dtype))
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    rng = folder / f"rng-{rank}.pt"
    if rng.exists():  # a run resumed on a different number of GPUs reseeds the extra ranks instead
        set_rng_state(torch.load(rng, weights_only=True))
    return read_json(folder / "meta.json")


def resume(work_dir: Path, rank: int, log, **states) -> tuple[Path, dict] | None:
    """Load the newest complete checkpoint that loads (`states` as for `load`); None when there is none. One that does
    not load is reported and renamed `broken-ckpt-*` (kept for inspection, never tried again)."""
    for folder in complete(work_dir):
        try:
            return folder, load(folder, rank, **states)
        except Exception as e:  # noqa: BLE001 - any unreadable or mismatched file: fall back to the one before
            log.warning(f"checkpoint {folder.name} could not be loaded ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:200] if str(e) else ''}); resuming from the one before it")
            if rank == 0:
                folder.rename(folder.with_name("broken-" + folder.name))
    return None
