"""User-facing errors: one clear line (what, why, what to do) and a non-zero exit, never a traceback; and `explain`,
which turns a Hugging Face hub failure anywhere in an exception's cause chain into such a line (for the access probe
and the model and dataset loaders). What huggingface_hub raises (`utils/_http.py` `hf_raise_for_status`, `errors.py`):
`GatedRepoError` (a `RepositoryNotFoundError`; X-Error-Code `GatedRepo`: this account has not accepted the license);
`RepositoryNotFoundError` (`RepoNotFound`, or a 401 on a repo URL other than "Invalid credentials in Authorization
header": missing and private repos answer alike); a plain `HfHubHTTPError` with 401 (the token is refused), 403 (a
fine-grained token lacks a permission), 429 (rate-limited) or 5xx; `OfflineModeIsEnabled` (a `ConnectionError`) under
HF_HUB_OFFLINE; httpx's `ConnectError` / `TimeoutException` (not `OSError`s) without network. transformers wraps some
in an `OSError` raised `from` the original, and `datasets` in `DatasetNotFoundError` / `ConnectionError`.
"""
from __future__ import annotations

import errno
import os
from typing import Iterator, Optional


class TamrinError(Exception):
    """An error the user can act on. `str(err)` is the single line printed; `exit_code` is returned."""

    exit_code = 2


class ConfigError(TamrinError):
    """A bad key, type or value in the configuration."""


class MissingResultError(TamrinError):
    """A results file another stage must produce first."""


TOKENS_PAGE = "https://huggingface.co/settings/tokens"
_NETWORK_CLASSES = {"ConnectError", "ConnectTimeout", "ReadTimeout", "TimeoutException", "NetworkError",
                    "ProxyError", "gaierror", "LocalEntryNotFoundError"}


def cause_chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _status(exc: BaseException) -> Optional[int]:
    code = getattr(getattr(exc, "response", None), "status_code", None)
    return int(code) if isinstance(code, int) else None


def hub_cache_dir() -> str:
    """The hub cache downloads go to (HF_HUB_CACHE / HF_HOME), for the disk-full message."""
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except Exception:  # noqa: BLE001 - only used in a message
        return os.path.join(os.environ.get("HF_HOME", "~/.cache/huggingface"), "hub")


def explain(exc: BaseException, repo_id: str, *, repo_type: str = "model", has_token: bool = True) -> Optional[str]:
    """One line (cause, then what to do) for a hub failure anywhere in `exc`'s cause chain; None when `exc` is not
    a hub failure (the caller re-raises it)."""
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, OfflineModeIsEnabled, RepositoryNotFoundError

    what = f"{'dataset' if repo_type == 'dataset' else 'model'} {repo_id}"
    page = f"https://huggingface.co/{'datasets/' if repo_type == 'dataset' else ''}{repo_id}"  # accept licenses there
    login = "set HF_TOKEN (or run `hf auth login`)"
    chain = list(cause_chain(exc))
    text = " ".join(str(x) for x in chain).lower()
    http = [(x, _status(x)) for x in chain if isinstance(x, HfHubHTTPError)]
    # datasets turns GatedRepoError into DatasetNotFoundError("... is a gated dataset on the Hub ...")
    if any(isinstance(x, GatedRepoError) or "is a gated dataset" in str(x).lower() for x in chain):
        if not has_token:
            return (f"{what} is gated and no Hugging Face token was found: accept its license at {page} while "
                    f"logged in, then {login} and rerun")
        return (f"{what} is gated and this token's account has not been granted access: open {page} while "
                "logged in with that account, accept the license, then rerun")
    if any(code == 401 and not isinstance(x, RepositoryNotFoundError) for x, code in http):
        return (f"the Hugging Face hub refused the token (HTTP 401: invalid or revoked): create a new read "
                f"token at {TOKENS_PAGE}, then {login} with it and rerun")
    if any(isinstance(x, RepositoryNotFoundError) or "doesn't exist on the hub" in str(x).lower() for x in chain):
        hint = "" if has_token else f"; if it is private or gated, {login}"
        return f"{what} was not found on the Hugging Face hub (or this token cannot see it): check the id{hint}"
    for x, code in http:
        if code == 403:
            return (f"the token lacks a permission needed to read {what} (HTTP 403): a fine-grained token needs "
                    f"'Read access to contents of all public gated repos you can access' — edit it at {TOKENS_PAGE} "
                    "or use a classic read token")
        if code == 429:
            return (f"the Hugging Face hub rate-limited this machine (HTTP 429) while reading {what}: wait a few "
                    f"minutes and rerun{'' if has_token else f' ({login}: logged-in users get a higher limit)'}")
        if code is not None and code >= 500:
            return f"the Hugging Face hub had a server error (HTTP {code}) while reading {what}: rerun in a few minutes"
    if any(isinstance(x, OfflineModeIsEnabled) for x in chain) or "offlinemodeisenabled" in text \
            or "offline mode is enabled" in text:
        return (f"cannot read {what}: offline mode is on (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE): unset it and "
                "rerun, or point the configuration at a local copy")
    if any(isinstance(x, OSError) and x.errno == errno.ENOSPC for x in chain):
        return (f"the disk filled up while downloading {what} (no space left in {hub_cache_dir()}): free space "
                "there or set HF_HOME to a folder on a larger disk, then rerun (the download resumes)")
    if any({c.__name__ for c in type(x).__mro__} & _NETWORK_CLASSES or isinstance(x, (ConnectionError, TimeoutError))
           for x in chain) or "couldn't connect" in text or "couldn't reach" in text:
        return (f"cannot reach the Hugging Face hub to read {what} (no network answer): connect this machine "
                "to the internet (on Kaggle: Settings → Internet → on), or point the configuration at a local copy")
    return None
