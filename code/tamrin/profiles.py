"""Profile choice: `paper` (real PaliGemma on CUDA) or `demo` (offline, CPU); `auto` picks and says why."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import threading
from typing import Any, Callable

PAPER_MODEL = "google/paligemma-3b-pt-224"


def cuda_available(light: bool = False) -> tuple[bool, str]:
    """(available, detail) — asks torch when it is installed (unless `light`), else nvidia-smi."""
    if not light and importlib.util.find_spec("torch") is not None:
        import torch

        return (True, torch.cuda.get_device_name(0)) if torch.cuda.is_available() else (False, "torch sees no CUDA GPU")
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
    from .provenance import TOKEN_VARS, stored_token

    return next((os.environ[v] for v in TOKEN_VARS if os.environ.get(v)), None) or stored_token()


def within(fn: Callable[[], Any], seconds: float | None) -> tuple[bool, Any, BaseException | None]:
    """(finished, result, error) of `fn()` in a daemon thread given `seconds`: a call that hangs (a network that never
    answers) costs `seconds`, not forever; its thread is left to die with the process."""
    box: dict[str, Any] = {}

    def call() -> None:
        try:
            box["result"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            box["error"] = e

    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    worker.join(seconds)
    return bool(box), box.get("result"), box.get("error")


def _auth_check(model: str, token: str | bool, timeout: float) -> tuple[bool, BaseException | None]:
    """(finished, error) of `huggingface_hub.auth_check` within `timeout` seconds (the hub client sets no timeout of
    its own for this call).

    It asks the hub's `/api/models/<id>/auth-check` endpoint, which (unlike `GET /api/models/<id>`, 200 for a gated
    repo whatever the license state) raises `GatedRepoError` when the license is not accepted and
    `RepositoryNotFoundError` when the repo cannot be seen (huggingface_hub `hf_api.py`, `auth_check`; it does not
    retry, so a failure costs one request)."""
    from huggingface_hub import auth_check

    finished, _, error = within(lambda: auth_check(model, token=token), timeout)
    return finished, error


def hub_access(model: str = PAPER_MODEL, timeout: float = 15.0) -> tuple[bool, str]:
    """(ok, reason): is there a token, is it valid, and has its account been granted access to `model`?"""
    token = hf_token()
    if not token:
        return False, "no Hugging Face token: set HF_TOKEN or run `hf auth login` (a read token from " \
                      "https://huggingface.co/settings/tokens)"
    finished, error = _auth_check(model, token, timeout)
    if not finished:
        return False, f"the Hugging Face hub did not answer within {timeout:.0f} s: check this machine's network"
    if error is None:
        return True, f"token valid, access to {model} granted"
    from .errors import explain

    first = str(error).splitlines()[0] if str(error) else ""
    return False, explain(error, model, has_token=True) or f"access check failed ({type(error).__name__}: {first})"


def hub_reachable(timeout: float = 10.0) -> tuple[bool, str]:
    """(reachable, reason): does the hub answer at all? An anonymous auth check: any HTTP answer (even a
    refusal) means reachable; offline mode or no network means not."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    finished, error = _auth_check(PAPER_MODEL, False, timeout)
    if not finished:
        return False, f"the Hugging Face hub did not answer within {timeout:.0f} s: check this machine's network"
    if error is None or isinstance(error, HfHubHTTPError):
        return True, "the Hugging Face hub answers"
    if isinstance(error, OfflineModeIsEnabled):
        return False, "offline mode is on (HF_HUB_OFFLINE): unset it to reach the Hugging Face hub"
    return False, ("cannot reach the Hugging Face hub (no network answer): connect this machine to the internet "
                   "(on Kaggle: Settings → Internet → on)")


def resolve_profile(requested: str, light: bool = False) -> tuple[str, str]:
    """(profile, reason). `auto` → paper when a CUDA GPU is present and the hub answers, else demo.
    `light` asks nvidia-smi instead of importing torch (for commands that must not load it)."""
    if requested != "auto":
        return requested, "chosen with --profile"
    has_cuda, detail = cuda_available(light)
    if not has_cuda:
        return "demo", detail
    ok, why = hub_access()
    return ("paper", f"CUDA GPU ({detail}) and {why}") if ok else ("demo", f"CUDA GPU present ({detail}) but {why}")
