"""Install path: the tested constraints agree with pyproject's bounds, and the installer refuses torch < 2.6
with one line (a stand-in torch package on PYTHONPATH plays the old platform build)."""
from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def requirements() -> dict[str, Requirement]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return {Requirement(d).name.lower().replace("_", "-"): Requirement(d) for d in deps}


def pinned() -> dict[str, str]:
    out = {}
    for line in (ROOT / "constraints" / "tested.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            out[name] = version
    return out


def test_every_pin_satisfies_the_bounds_and_no_torch_pin():
    reqs, pins = requirements(), pinned()
    assert "torch" not in pins  # the platform's CUDA build is kept
    for name in ("transformers", "peft", "datasets", "huggingface-hub", "accelerate", "bitsandbytes", "ijson"):
        assert name in pins, name
    for name, version in pins.items():
        if name in reqs:
            assert reqs[name].specifier.contains(version), (name, version, str(reqs[name].specifier))


def test_bounds_cap_the_next_majors():
    reqs = requirements()
    assert not reqs["transformers"].specifier.contains("6.0") and reqs["transformers"].specifier.contains("5.24.0")
    assert not reqs["peft"].specifier.contains("1.0") and not reqs["peft"].specifier.contains("0.17.0")
    assert not reqs["datasets"].specifier.contains("3.3.2") and reqs["datasets"].specifier.contains("3.4.0")
    assert not reqs["torch"].specifier.contains("2.5.1") and reqs["torch"].specifier.contains("2.6.0")


def test_installer_refuses_an_old_platform_torch(tmp_path):
    fake = tmp_path / "site" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('__version__ = "2.5.1+cu121"\n')
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site"), "TAMRIN_NO_VENV": "1", "PYTHON": sys.executable}
    res = subprocess.run(["bash", str(ROOT / "scripts" / "install.sh")], capture_output=True, text=True, env=env,
                         timeout=60)
    assert res.returncode == 2, res.stdout + res.stderr
    errors = [l for l in res.stderr.splitlines() if l.strip()]
    assert len(errors) == 1 and "torch 2.5.1+cu121 is older than 2.6" in errors[0], res.stderr
    assert "Traceback" not in res.stderr and "pip install" in errors[0]
