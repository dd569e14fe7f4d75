"""Hub failures become one actionable line: the access probe (auth_check), the model loader
(`friendly_hub_errors`) and the dataset loader, each fed the real huggingface_hub exceptions that the library
builds from the hub's responses (tests/hub_mock.py)."""
from __future__ import annotations

import errno

import pytest

from hub_mock import mock_hub, raised_by_hub
from tamrin import profiles
from tamrin.errors import TamrinError
from tamrin.vlm.model import friendly_hub_errors

MODEL = "google/paligemma-3b-pt-224"
# case → words the one line must contain (cause and what to do)
EXPECTED = {
    "gated": ["is gated", "https://huggingface.co/google/paligemma-3b-pt-224", "accept the license"],
    "bad_token": ["refused the token", "HTTP 401", "https://huggingface.co/settings/tokens"],
    "not_found": ["was not found", "check the id"],
    "forbidden": ["HTTP 403", "fine-grained"],
    "rate_limited": ["rate-limited", "HTTP 429", "wait"],
    "server_error": ["server error", "HTTP 503"],
    "no_network": ["cannot reach the Hugging Face hub", "internet"],
}


def one_line_with(msg: str, words: list[str]) -> None:
    assert "\n" not in msg and "Traceback" not in msg, msg
    for w in words:
        assert w in msg, (w, msg)


@pytest.mark.parametrize("case", list(EXPECTED))
def test_probe_names_each_failure(monkeypatch, case):
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    with mock_hub(monkeypatch, case):
        ok, why = profiles.hub_access(MODEL)
    assert not ok
    one_line_with(why, EXPECTED[case])


def test_probe_passes_when_access_is_granted_and_refuses_without_token(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    with mock_hub(monkeypatch, "ok"):
        assert profiles.hub_access(MODEL) == (True, f"token valid, access to {MODEL} granted")
    monkeypatch.setattr(profiles, "hf_token", lambda: None)
    ok, why = profiles.hub_access(MODEL)
    assert not ok and "no Hugging Face token" in why and "HF_TOKEN" in why


def test_probe_offline_mode(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    with mock_hub(monkeypatch, "ok", offline=True):
        ok, why = profiles.hub_access(MODEL)
    assert not ok
    one_line_with(why, ["offline mode is on", "HF_HUB_OFFLINE"])


@pytest.mark.parametrize("case", list(EXPECTED))
@pytest.mark.parametrize("wrapped", [False, True])
def test_model_loader_turns_hub_errors_into_one_line(monkeypatch, case, wrapped):
    """Raw, and wrapped in an OSError the way transformers' `cached_files` re-raises them."""
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    error = raised_by_hub(monkeypatch, case)
    with pytest.raises(TamrinError) as err:
        with friendly_hub_errors(MODEL):
            if wrapped:
                raise OSError(f"There was a specific connection error when trying to load {MODEL}:\n{error}") from error
            raise error
    one_line_with(str(err.value), EXPECTED[case])


def test_disk_full_while_downloading(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(TamrinError) as err:
        with friendly_hub_errors(MODEL):
            raise OSError(errno.ENOSPC, "No space left on device")
    one_line_with(str(err.value), ["disk filled up", str(tmp_path / "hub"), "HF_HOME"])


def test_unrelated_errors_pass_through():
    with pytest.raises(FileNotFoundError):
        with friendly_hub_errors("some/model"):
            raise FileNotFoundError("disk")
    with pytest.raises(ValueError):
        with friendly_hub_errors("some/model"):
            raise ValueError("a bug")


@pytest.mark.slow
def test_gated_model_through_the_real_processor_loader(monkeypatch):
    """transformers' own download path (PaliGemmaProcessor.from_pretrained) against a gated answer."""
    from tamrin.vlm.model import load_processor

    monkeypatch.setenv("HF_TOKEN", "hf_test")
    with mock_hub(monkeypatch, "gated"):
        with pytest.raises(TamrinError) as err:
            load_processor(MODEL)
    one_line_with(str(err.value), EXPECTED["gated"])


# --- the dataset loader, through datasets.load_dataset and the mocked hub ---------------------------------------
DATA_EXPECTED = {
    "gated": ["is gated", "https://huggingface.co/datasets/HuggingFaceM4/the_cauldron", "accept the license"],
    "bad_token": ["refused the token", "HTTP 401"],
    "not_found": ["was not found"],
}


@pytest.mark.parametrize("case", list(DATA_EXPECTED))
def test_dataset_loader_names_each_failure(monkeypatch, case):
    from tamrin.data import hub
    from tamrin.config import DataConfig

    monkeypatch.setenv("HF_TOKEN", "hf_test")
    with mock_hub(monkeypatch, case):
        with pytest.raises(TamrinError) as err:
            hub.load_stream(DataConfig())
    one_line_with(str(err.value), DATA_EXPECTED[case] + ["data.source=synthetic"])


@pytest.mark.parametrize("case", ["rate_limited", "no_network"])
def test_dataset_loader_rate_limit_and_network(monkeypatch, case):
    """`datasets` retries these for minutes against the real hub, so the library-built exception is raised from
    load_dataset directly."""
    import datasets

    from tamrin.data import hub
    from tamrin.config import DataConfig

    monkeypatch.setenv("HF_TOKEN", "hf_test")
    error = raised_by_hub(monkeypatch, case)

    def fail(*a, **k):
        raise error

    monkeypatch.setattr(datasets, "load_dataset", fail)
    with pytest.raises(TamrinError) as err:
        hub.load_stream(DataConfig())
    one_line_with(str(err.value), EXPECTED[case])


def test_dataset_loader_without_token_on_a_gated_dataset(monkeypatch):
    from tamrin.data import hub
    from tamrin.config import DataConfig

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(hub, "_token", lambda: None)
    with mock_hub(monkeypatch, "gated"):
        with pytest.raises(TamrinError) as err:
            hub.load_stream(DataConfig())
    one_line_with(str(err.value), ["is gated", "no Hugging Face token"])
