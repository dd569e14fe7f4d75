"""Profile choice: `paper` (real PaliGemma on CUDA) or `demo` (offline, CPU); `auto` picks and says why."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import urllib.error
import urllib.request

PAPER_MODEL = "google/paligemma-3b-pt-224"


def cuda_available(light: bool = False) -> tuple[bool, str]:
    """(available, detail) — asks torch when it is installed (unless `light`), else nvidia-smi."""
    if not light and importlib.util.find_spec("torch") is not None:
        import torch

        if torch.cuda.is_available():
            return True, torch.cuda.get_device_name(0)
        return False, "torch sees no CUDA GPU"
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
            if out.returncode == 0 and out.stdout.strip():
                return True, out.stdout.strip().splitlines()[0]
        except (OSError, subprocess.SubprocessError):
            pass
    return False, "no CUDA GPU found"


def hf_token() -> str | None:
    """The HF token from the environment or the `hf auth login` cache (never logged)."""
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        if os.environ.get(var):
            return os.environ[var]
    try:
        from huggingface_hub import get_token

        return get_token()
    except Exception:  # noqa: BLE001 - any failure here just means "no token"
        return None


def hub_access(model: str = PAPER_MODEL, timeout: float = 4.0) -> tuple[bool, str]:
    """(ok, reason): can this machine read the gated model's metadata from the hub right now?"""
    token = hf_token()
    if not token:
        return False, "no Hugging Face token (set HF_TOKEN or run `hf auth login`)"
    req = urllib.request.Request(f"https://huggingface.co/api/models/{model}",
                                 headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status == 200, "hub reachable, token accepted"
    except urllib.error.HTTPError as e:
        if e.code in (401, 403):
            return False, f"the token cannot read {model} (HTTP {e.code}): accept the license on its model page"
        return False, f"the hub answered HTTP {e.code}"
    except (urllib.error.URLError, OSError, TimeoutError):
        return False, f"the Hugging Face hub did not answer within {timeout:.0f} s"


def resolve_profile(requested: str, light: bool = False) -> tuple[str, str]:
    """(profile, reason). `auto` → paper when a CUDA GPU is present and the hub answers, else demo.
    `light` asks nvidia-smi instead of importing torch (for commands that must not load it)."""
    if requested != "auto":
        return requested, "chosen with --profile"
    has_cuda, detail = cuda_available(light)
    if not has_cuda:
        return "demo", f"{detail}"
    ok, why = hub_access()
    if not ok:
        return "demo", f"CUDA GPU present ({detail}) but {why}"
    return "paper", f"CUDA GPU ({detail}) and {why}"
