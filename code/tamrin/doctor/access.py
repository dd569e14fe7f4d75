"""The Hugging Face token: present, valid, and granted access to the gated model (huggingface_hub.auth_check)."""
from __future__ import annotations

from pathlib import Path

from .result import FAIL, OK, SKIP, Check, Facts


def check_access(facts: Facts, cfg) -> Check:
    from .. import profiles

    model = cfg.model.id
    if cfg.model.kind == "tiny":
        facts.hub_reachable = None
        return Check("hf token + access", SKIP, "the demo's tiny model is built offline; no hub needed")
    reachable, why = profiles.hub_reachable()
    facts.hub_reachable, facts.hub_reason = reachable, why
    if Path(str(model)).is_dir():
        return Check("hf token + access", OK, f"model.id is a local folder ({Path(model).name}); no token needed")
    if not profiles.hf_token():
        return Check("hf token + access", FAIL, "no Hugging Face token" + ("" if reachable else f"; {why.split(': ')[0]}"),
                     "store a read token (https://huggingface.co/settings/tokens) as HF_TOKEN or run `hf auth login`"
                     + ("" if reachable else f"; {why.split(': ', 1)[-1]}"))
    if not reachable:
        return Check("hf token + access", FAIL, why.split(": ")[0], why.split(": ", 1)[-1])
    ok, reason = profiles.hub_access(model)
    facts.model_access = ok
    if ok:
        return Check("hf token + access", OK, reason)
    cause, _, fix = reason.partition(": ")
    return Check("hf token + access", FAIL, cause, fix)
