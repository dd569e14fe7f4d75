"""The first download: google/paligemma-3b-pt-224 from the revision that stores its weights in the compute dtype
(half of main's float32), falling back to main with one log line when the revision is missing. Offline, through
the real libraries: transformers' `from_pretrained` and huggingface_hub's downloader talk to a stand-in hub
(tests/hub_mock.py) that serves the tiny PaliGemma's files on main and answers a missing revision as the hub does
(404, X-Error-Code RevisionNotFound), so huggingface_hub builds the real `RevisionNotFoundError`."""
from __future__ import annotations

import hashlib
import logging
import re
import sys
from pathlib import Path
from urllib.parse import unquote

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures"))
from hub_mock import ANSWERS, HTTP, serve  # noqa: E402
from vlm_support import one_thread, tiny_base  # noqa: E402

from tamrin.errors import TamrinError  # noqa: E402
from tamrin.vlm.model import download_gb, load_base_model, weights_revision  # noqa: E402

REPO = "google/paligemma-3b-pt-224"
CPU = torch.device("cpu")


class StandInHub:
    """Serves `folder`'s files as `REPO` at the revisions in `revisions`; any other revision is missing."""

    def __init__(self, folder: Path, revisions: set[str]) -> None:
        self.folder, self.revisions, self.asked = folder, revisions, []

    def __call__(self, request):
        path = unquote(request.url.path)
        m = re.match(rf"^/{REPO}/resolve/([^/]+)/(.+)$", path)
        if m is None:  # API calls (file listings, …): not part of loading weights here
            return HTTP.Response(404, headers={"X-Error-Code": "EntryNotFound"}, request=request)
        revision, name = m.groups()
        self.asked.append((revision, name))
        if revision not in self.revisions:
            return HTTP.Response(404, headers={"X-Error-Code": "RevisionNotFound",
                                               "X-Error-Message": f"Invalid rev id: {revision}"}, request=request)
        file = self.folder / name
        if not file.is_file():
            return HTTP.Response(404, headers={"X-Error-Code": "EntryNotFound",
                                               "X-Error-Message": "Entry not found"}, request=request)
        data = file.read_bytes()
        commit = hashlib.sha1(revision.encode()).hexdigest()
        headers = {"ETag": f'"{hashlib.sha1(data).hexdigest()}"', "X-Repo-Commit": commit,
                   "Content-Length": str(len(data))}
        return HTTP.Response(200, headers=headers, content=b"" if request.method == "HEAD" else data,
                             request=request)

    def revisions_asked(self) -> set[str]:
        return {r for r, _ in self.asked}


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.delenv("HF_TOKEN", raising=False)


def test_the_revision_follows_the_compute_dtype_and_a_folder_has_none():
    assert weights_revision(REPO, torch.bfloat16) == "bfloat16"
    assert weights_revision(REPO, torch.float16) == "float16"  # a T4
    assert weights_revision(REPO, torch.float32) is None  # main: the float32 weights themselves
    folder = tiny_base()
    assert all(weights_revision(folder, d) is None for d in (torch.bfloat16, torch.float16, torch.float32))
    assert weights_revision(str(folder), torch.float16) is None
    assert download_gb(REPO, torch.float16) == pytest.approx(5.85) and download_gb(REPO, torch.float32) == 11.7
    assert download_gb(folder, torch.float16) == 0.0


def test_a_local_folder_loads_without_a_revision():
    with one_thread():
        model = load_base_model(tiny_base(), quantization="none", compute_dtype=torch.bfloat16, device=CPU)
    assert model.dtype == torch.bfloat16


def test_the_half_revision_is_downloaded_when_the_hub_has_it(monkeypatch, empty_cache, caplog):
    hub = StandInHub(tiny_base(), {"main", "bfloat16"})
    with serve(monkeypatch, hub), one_thread(), caplog.at_level(logging.INFO, logger="tamrin"):
        model = load_base_model(REPO, quantization="none", compute_dtype=torch.bfloat16, device=CPU)
    assert model.dtype == torch.bfloat16
    assert hub.revisions_asked() == {"bfloat16"} and ("bfloat16", "model.safetensors") in hub.asked
    assert "revision" not in caplog.text


def test_a_missing_revision_falls_back_to_main_with_one_line(monkeypatch, empty_cache, caplog):
    hub = StandInHub(tiny_base(), {"main"})
    with serve(monkeypatch, hub), one_thread(), caplog.at_level(logging.INFO, logger="tamrin"):
        model = load_base_model(REPO, quantization="none", compute_dtype=torch.float16, device=CPU)
    assert model.dtype == torch.float16
    assert hub.asked[0][0] == "float16" and hub.revisions_asked() == {"float16", "main"}
    assert ("main", "model.safetensors") in hub.asked and ("float16", "model.safetensors") not in hub.asked
    lines = [r.getMessage() for r in caplog.records if "revision" in r.getMessage()]
    assert lines == [f"{REPO} has no 'float16' revision: loading main (float32 weights, about 11.7 GB the first time)"]


def test_other_hub_failures_are_not_retried_on_main(monkeypatch, empty_cache):
    status, headers = ANSWERS["gated"]
    asked = []

    def gated(request):
        asked.append(unquote(request.url.path))
        return HTTP.Response(status, headers=headers, request=request)

    with serve(monkeypatch, gated), pytest.raises(TamrinError, match="is gated"):
        load_base_model(REPO, quantization="none", compute_dtype=torch.bfloat16, device=CPU)
    assert asked and all("/resolve/bfloat16/" in p for p in asked if "/resolve/" in p)
