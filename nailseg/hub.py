"""What talks to the Hugging Face Hub: is it reachable, download into its cache, upload a commit.

Which files a model's publication holds, and its card, are :mod:`nailseg.publish`'s. A token
(``$HF_TOKEN``, e.g. a Space secret) is handed to ``huggingface_hub`` and never printed.
"""

from __future__ import annotations

import os
from pathlib import Path

from nailseg.errors import HubUnreachable, WeightsError
from nailseg.paths import hub_cache_dir

_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY")


def reachable(url: str, timeout: float = 3.0) -> bool:
    """A TCP connection to ``url``'s host opens (assumed true behind a proxy, which we cannot probe)."""
    import socket
    from urllib.parse import urlsplit

    if any(os.environ.get(k) for k in _PROXY_VARS):
        return True
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        socket.create_connection((parts.hostname, port), timeout).close()
        return True
    except (OSError, ValueError):
        return False


def download(repo_id: str, filename: str, revision: str | None = None) -> Path:
    """A file of a Hub model repo, from the local Hub cache or downloaded into it.

    Raises:
        HubUnreachable: offline and not cached.
        WeightsError: the repo, revision or file does not exist.
    """
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (
        LocalEntryNotFoundError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    # Offline, hf_hub_download retries for ~25 s before giving up; the cache answers at once.
    offline = not reachable(constants.ENDPOINT)
    try:
        return Path(
            hf_hub_download(repo_id, filename, revision=revision, cache_dir=hub_cache_dir(), local_files_only=offline)
        )
    except LocalEntryNotFoundError as err:  # offline and not cached (a subclass of EntryNotFoundError)
        raise HubUnreachable(f"cannot reach the Hugging Face Hub for {repo_id}/{filename}") from err
    except (RemoteEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError) as err:
        raise WeightsError(f"{filename} not found in Hub repo {repo_id}") from err


def upload(
    repo_id: str, files: list[tuple[str, bytes | Path]], message: str, token: str | None = None, private: bool = False
) -> str:
    """Create ``repo_id`` if needed (a model repo) and upload ``files`` (``(path in repo, content)``)
    in one commit. Returns the commit's URL.

    Args:
        token: a write token; default ``$HF_TOKEN`` or the saved login. Never logged.
        private: create the repo private (an existing repo keeps its visibility).

    Raises:
        HubUnreachable: no connection to the Hub.
        HubRefused: the Hub refused (bad token, no write access...); the message never holds the token.
    """
    from httpx2 import TransportError  # huggingface_hub's HTTP client
    from huggingface_hub import CommitOperationAdd, HfApi, constants, get_token
    from huggingface_hub.errors import HfHubHTTPError

    token = token or None
    secret = token or get_token()  # what huggingface_hub will send: kept out of every message
    api = HfApi(token=token)
    operations = [
        CommitOperationAdd(path_in_repo=name, path_or_fileobj=content if isinstance(content, bytes) else str(content))
        for name, content in files
    ]
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        info = api.create_commit(repo_id, operations, commit_message=message)
    except TransportError as err:
        raise HubUnreachable(redact(f"cannot reach the Hub at {constants.ENDPOINT}: {err}", secret)) from None
    except HfHubHTTPError as err:
        raise HubRefused(redact(f"the Hub refused the upload: {err}", secret)) from None
    return str(info.commit_url)


class HubRefused(RuntimeError):
    """The Hub answered but refused (bad token, no write access, bad repo id)."""


def redact(message: str, secret: str | None) -> str:
    """``message`` with ``secret`` (a token) replaced by ``***``."""
    return message.replace(secret, "***") if secret else message
