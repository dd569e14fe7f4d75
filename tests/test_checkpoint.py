"""Resumable checkpoints: plain tensors and data (loaded with weights_only=True), the RNG of every generator
restored exactly, and a checkpoint that fails to load set aside for the previous complete one, losing nothing."""
from __future__ import annotations

import logging
import random

import numpy as np
import pytest
import torch

from tamrin.vlm import checkpoint


def _states(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
    model(torch.randn(3, 4)).sum().backward()
    opt.step()
    sched.step()
    return model, opt, sched


def _save(work, step, model, opt, sched):
    folder = checkpoint.save(work, step, rank=0, is_main=True, model=model, optimizer=opt, scheduler=sched,
                             meta={"history": [{"step": step}], "seconds": 1.0 * step})
    checkpoint.finish(folder)
    return folder


def test_state_loads_with_weights_only_and_restores_every_rng(tmp_path):
    model, opt, sched = _states()
    random.seed(3), np.random.seed(4), torch.manual_seed(5)
    folder = _save(tmp_path, 10, model, opt, sched)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    for f in folder.glob("*.pt"):
        torch.load(f, weights_only=True)  # raises on any pickled object
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    fresh, fresh_opt, fresh_sched = _states(seed=1)
    meta = checkpoint.load(folder, 0, model=fresh, optimizer=fresh_opt, scheduler=fresh_sched)
    assert meta["step"] == 10
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
    torch.testing.assert_close(fresh.weight, model.weight)
    assert fresh_opt.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]
    assert fresh_sched.last_epoch == sched.last_epoch


def test_a_broken_checkpoint_falls_back_to_the_previous_complete_one(tmp_path, caplog):
    model, opt, sched = _states()
    _save(tmp_path, 5, model, opt, sched)
    newest = _save(tmp_path, 10, model, opt, sched)
    _save(tmp_path, 15, model, opt, sched)
    assert [f.name for f in checkpoint.complete(tmp_path)] == ["ckpt-0000015", "ckpt-0000010"]  # two kept
    (tmp_path / "ckpt-0000015" / "state.pt").write_bytes(b"truncated")
    fresh, fresh_opt, fresh_sched = _states(seed=1)
    with caplog.at_level(logging.WARNING):
        folder, meta = checkpoint.resume(tmp_path, 0, logging.getLogger("test"), model=fresh, optimizer=fresh_opt,
                                         scheduler=fresh_sched)
    assert folder == newest and meta["step"] == 10 and meta["history"] == [{"step": 10}]
    assert "ckpt-0000015 could not be loaded" in caplog.text
    assert (tmp_path / "broken-ckpt-0000015").exists() and checkpoint.complete(tmp_path)[0] == newest


def test_no_checkpoint_means_a_fresh_start(tmp_path):
    model, opt, sched = _states()
    assert checkpoint.resume(tmp_path, 0, logging.getLogger("t"), model=model, optimizer=opt, scheduler=sched) is None


def test_a_checkpoint_of_another_model_is_refused(tmp_path):
    model, opt, sched = _states()
    folder = _save(tmp_path, 5, model, opt, sched)
    other = torch.nn.Linear(4, 3)
    with pytest.raises(RuntimeError):
        checkpoint.load(folder, 0, model=other, optimizer=torch.optim.AdamW(other.parameters()), scheduler=sched)
