"""A stand-in for the Hugging Face hub: huggingface_hub's own HTTP client with a mock transport, so the
library's real code (auth_check, hf_raise_for_status, transformers' and datasets' loaders) builds the real
exceptions from real responses (`huggingface_hub.utils._http.set_client_factory` is the documented hook)."""
from __future__ import annotations

import contextlib
from typing import Callable

from huggingface_hub.utils import _http

HTTP = getattr(_http, "httpx2", None) or getattr(_http, "httpx")  # huggingface_hub ≥ 2 uses httpx2, 1.x httpx

GATED = {"X-Error-Code": "GatedRepo", "X-Error-Message": "Access to model google/paligemma-3b-pt-224 is restricted "
         "and you are not in the authorized list. Visit https://huggingface.co/google/paligemma-3b-pt-224 to ask "
         "for access."}
# The hub's answers for each case (status, headers), as `hf_raise_for_status` reads them.
ANSWERS = {
    "gated": (403, GATED),
    "bad_token": (401, {"X-Error-Message": "Invalid credentials in Authorization header"}),
    "not_found": (404, {"X-Error-Code": "RepoNotFound"}),
    "forbidden": (403, {"X-Error-Message": "This fine-grained token does not have the required permissions"}),
    "rate_limited": (429, {"RateLimit": '"api";r=0;t=120', "RateLimit-Policy": '"fixed window";"api";q=500;w=300'}),
    "server_error": (503, {}),
    "ok": (200, {}),
}


def handler_for(case: str) -> Callable:
    def handle(request):
        if case == "no_network":
            raise HTTP.ConnectError("[Errno -2] Name or service not known", request=request)
        status, headers = ANSWERS[case]
        return HTTP.Response(status, headers=headers, request=request, json={} if status == 200 else None)
    return handle


@contextlib.contextmanager
def mock_hub(monkeypatch, case: str, offline: bool = False):
    """Every hub request answered as `case`; HF_HUB_OFFLINE as `offline` for huggingface_hub and datasets."""
    with serve(monkeypatch, handler_for(case), offline):
        yield


@contextlib.contextmanager
def serve(monkeypatch, handler: Callable, offline: bool = False):
    """Every hub request answered by `handler(request) -> response`; HF_HUB_OFFLINE as `offline`."""
    import datasets.config
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", offline)
    _http.set_client_factory(lambda: HTTP.Client(transport=HTTP.MockTransport(handler), follow_redirects=True,
                                                 event_hooks={"request": [_http.hf_request_event_hook]}))
    try:
        yield
    finally:
        _http.set_client_factory(_http.default_client_factory)


def raised_by_hub(monkeypatch, case: str, offline: bool = False) -> BaseException:
    """The exception huggingface_hub's `auth_check` raises for `case` (built by the library from the response)."""
    from huggingface_hub import auth_check

    with mock_hub(monkeypatch, case, offline):
        try:
            auth_check("google/paligemma-3b-pt-224", token="hf_test")
        except BaseException as e:  # noqa: BLE001
            return e
    raise AssertionError(f"auth_check raised nothing for {case}")
