"""Resumable training state in the stage's work folder (survives a kill).

A checkpoint is a folder `ckpt-<step>` holding the trainable (LoRA) weights, optimizer, scheduler and
grad-scaler states, the RNG state of every process, and the loss log so far. `complete.json` is written
last, so a folder without it (a kill mid-save) is ignored; only the newest complete checkpoint is kept.
The quantized base model is never saved here — it is reloaded from its source.
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
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model, state: dict[str, torch.Tensor]) -> None:
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if set(params) != set(state):
        raise RuntimeError("checkpoint does not match the model's trainable parameters")
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(state[n].to(p.device, p.dtype))


def latest(work_dir: Path) -> Path | None:
    """The newest complete checkpoint folder, or None."""
    done = [d for d in Path(work_dir).glob("ckpt-*") if (d / DONE).exists()]
    return max(done, key=lambda d: int(d.name.split("-")[1]), default=None)


def save(work_dir: Path, step: int, *, rank: int, is_main: bool, model=None, optimizer=None, scheduler=None,
         scaler=None, meta: dict | None = None) -> Path:
    """Write this process's part of checkpoint `step` (every rank its RNG; the main process the rest).
    The caller must synchronise processes before `finish` marks it complete."""
    folder = Path(work_dir) / f"ckpt-{step:07d}"
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(rng_state(), folder / f"rng-{rank}.pt")
    if is_main:
        torch.save({"model": trainable_state(model), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler else None},
                   folder / "state.pt")
        write_json(folder / "meta.json", {"step": step, **(meta or {})})
    return folder


def finish(folder: Path) -> None:
    """Mark `folder` complete and delete older checkpoints (main process only)."""
    write_json(folder / DONE, {"step": int(folder.name.split("-")[1])})
    for old in folder.parent.glob("ckpt-*"):
        if old != folder and int(old.name.split("-")[1]) < int(folder.name.split("-")[1]):
            shutil.rmtree(old, ignore_errors=True)


def load(folder: Path, rank: int, *, model, optimizer, scheduler, scaler=None) -> dict:
    """Restore the states saved in `folder`; returns its meta.json."""
    state = torch.load(folder / "state.pt", map_location="cpu", weights_only=False)
    load_trainable_state(model, state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    rng = folder / f"rng-{rank}.pt"
    if rng.exists():  # a run resumed on a different number of GPUs reseeds the extra ranks instead
        set_rng_state(torch.load(rng, weights_only=False))
    return read_json(folder / "meta.json")
