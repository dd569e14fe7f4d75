"""The finetune stage under a distributed launch (torchrun ≡ `accelerate launch`, 2 CPU processes, gloo):
rank 0 alone writes the result, the run is one DDP training, and 2 processes × batch 4 follow the same loss
curve as 1 process × batch 8 (same examples per step, gradients averaged over the step's answer tokens)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures"))
from vlm_support import DATA, data_manifest, one_thread  # noqa: E402

from tamrin.atomic import read_jsonl  # noqa: E402
from tamrin.config import load_config  # noqa: E402
from tamrin.runner import Paths, run_stage  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ["train.max_steps=8", "train.save_every=4", "lora.dropout=0.0", "train.grad_accum=1"]

SCRIPT = """
import sys
sys.path.insert(0, {code!r})
from pathlib import Path
from tamrin.config import load_config
from tamrin.runner import Paths, run_stage
run_stage("finetune", load_config("demo", overrides={settings!r}), Paths(root=Path({root!r})))
"""


def _root(tmp: Path) -> Paths:
    paths = Paths(root=tmp)
    shutil.copytree(DATA, paths.stage_dir("data"), ignore=shutil.ignore_patterns("make.py"))
    data_manifest(paths.stage_dir("data") / "manifest.json")
    return paths


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(tmp_path):
    ddp = _root(tmp_path / "ddp")
    script = SCRIPT.format(code=str(ROOT / "code"), settings=SETTINGS + ["train.batch_size=4"], root=str(ddp.root))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", str(_free_port()), str(_write(tmp_path / "ddp.py", script))],
                          text=True, capture_output=True, timeout=400, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = ddp.stage_dir("finetune")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["effective_batch"] == 8 and summary["steps_done"] == 8
    assert json.loads((out / "manifest.json").read_text())["cache_key"]
    assert not list((tmp_path / "ddp").rglob("ckpt-*"))  # the work folder was cleaned by rank 0

    single = _root(tmp_path / "single")
    with one_thread():
        run_stage("finetune", load_config("demo", overrides=SETTINGS + ["train.batch_size=8"]), single)
    a = read_jsonl(out / "loss.jsonl")
    b = read_jsonl(single.stage_dir("finetune") / "loss.jsonl")
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, 9))
    for x, y in zip(a, b):
        assert x["loss"] == pytest.approx(y["loss"], rel=2e-4), (x, y)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
