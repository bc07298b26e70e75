"""What the app puts in front of Gradio's routes: fair upload shares, and what Gradio's login lacks.

Pure ASGI middleware (each sees a request before Gradio does), installed by ``app.py`` through
``launch(app_kwargs={"middleware": stack()})``:

* :class:`UploadShares`: every request body counts against its client address, at most
  ``$NAILSEG_UPLOAD_QUOTA_GB`` (3) per :data:`UPLOAD_WINDOW_S` (Gradio deletes uploads 10 to 12
  minutes after they came), and nothing is taken that would leave less than
  ``$NAILSEG_DISK_RESERVE_GB`` (1) free where Gradio stores uploads. One client cannot fill the disk.
* :class:`OwnerFiles`: files the app names as the owner's (:func:`nailseg.access.owner_file_name`,
  e.g. exported weights) are served to the owner only; Gradio serves any cached file to anyone
  (logged in, when its login is on) who has the link.
* :class:`LoginGuard`, with Gradio's login on (``$NAILSEG_AUTH``): every route needs the login
  except those the login page itself uses (Gradio leaves some open: ``/gradio_api/cancel`` ended
  another user's job without one); the login page no longer embeds the API's description; wrong
  passwords from one address are limited to :data:`LOGIN_FAILURES` per :data:`LOGIN_WINDOW_S`.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
from collections import defaultdict, deque
from pathlib import PurePosixPath
from types import SimpleNamespace

import gradio as gr
from starlette.middleware import Middleware
from starlette.requests import Request

from nailseg import access
from nailseg.serving import upload_folder

UPLOAD_WINDOW_S = 12 * 60
LOGIN_FAILURES, LOGIN_WINDOW_S = 5, 5 * 60
# Routes the login page needs before anyone has logged in (GET, and POST /login).
_OPEN = re.compile(
    r"/(|login/?|logout/?|favicon\.ico|theme\.css|robots\.txt|manifest\.json|pwa_icon(/.*)?|config/?"
    r"|(assets|static|svelte)/.*|gradio_api/(login_check|user|token|app_id|startup-events|info)/?)"
)
_API_INFO = re.compile(rb"window\.gradio_api_info = .*?;</script>", re.DOTALL)


def stack() -> list[Middleware]:
    """The app's middleware, outermost first (Gradio's own come before them)."""
    guards = [Middleware(UploadShares), Middleware(OwnerFiles)]
    return [Middleware(LoginGuard), *guards] if access.auth_pairs() else guards


class _Window:
    """Amounts per client address over the last ``seconds`` (thread-safe); older ones are forgotten,
    and so are addresses with none left (swept once a window), so memory follows recent clients."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._events: dict[str, deque[tuple[float, float]]] = defaultdict(deque)
        self._swept = time.monotonic()
        self._lock = threading.Lock()

    def add(self, client: str, amount: float) -> None:
        with self._lock:
            now = time.monotonic()
            self._events[client].append((now, amount))
            if now - self._swept > self.seconds:
                for other in list(self._events):
                    self._forget_old(other, now)
                self._swept = now

    def total(self, client: str) -> float:
        """The client's amounts within the window."""
        with self._lock:
            return sum(amount for _, amount in self._forget_old(client, time.monotonic()))

    def wait_s(self, client: str) -> float:
        """Seconds until the client's oldest amount leaves the window."""
        with self._lock:
            events = self._events.get(client)
            return max(0.0, events[0][0] + self.seconds - time.monotonic()) if events else 0.0

    def _forget_old(self, client: str, now: float) -> deque[tuple[float, float]]:
        events = self._events.get(client, deque())
        while events and events[0][0] < now - self.seconds:
            events.popleft()
        if not events:
            self._events.pop(client, None)
        return events


class UploadShares:
    """Request bodies per client address bounded over a window; none that would leave the disk short."""

    def __init__(self, app, quota_bytes: float | None = None, reserve_bytes: float | None = None) -> None:
        self.app = app
        self.quota = quota_bytes if quota_bytes is not None else _gb_env("NAILSEG_UPLOAD_QUOTA_GB", 3)
        self.reserve = reserve_bytes if reserve_bytes is not None else _gb_env("NAILSEG_DISK_RESERVE_GB", 1)
        self.sent = _Window(UPLOAD_WINDOW_S)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        client = access.client_address(Request(scope))
        declared = _content_length(scope)
        if refusal := self._refusal(client, declared):
            return await _answer(send, *refusal)
        counted = 0

        async def counting():
            nonlocal counted
            message = await receive()
            counted += len(message.get("body", b""))
            if counted > declared and (refusal := self._refusal(client, counted)):  # a body longer than declared
                raise _Refused(*refusal)
            return message

        started = _Started(send)
        try:
            await self.app(scope, counting, started)
        except _Refused as refused:
            if started.done:
                raise
            await _answer(send, refused.status, refused.text)
        finally:
            self.sent.add(client, counted)

    def _refusal(self, client: str, nbytes: int) -> tuple[int, str] | None:
        """Why a body of ``nbytes`` from ``client`` is refused (HTTP status, message), or None."""
        if self.sent.total(client) + nbytes > self.quota:
            minutes = max(1, round(self.sent.wait_s(client) / 60))
            return 413, (
                f"Upload refused: this address has sent {self.quota / 1024**3:g} GB in the last "
                f"{UPLOAD_WINDOW_S // 60} minutes, its share; try again in about {minutes} minute(s)."
            )
        if shutil.disk_usage(_uploads_disk()).free - nbytes < self.reserve:
            return 507, "Upload refused: the server is short of disk space; try again in a few minutes."
        return None


class OwnerFiles:
    """Files named as the owner's are served to the owner only (see :func:`nailseg.access.owner_file_name`)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and _is_owner_file(scope["path"]) and not _is_owner(scope):
            return await _answer(send, 403, "This file is for the owner of this server.")
        return await self.app(scope, receive, send)


class LoginGuard:
    """With Gradio's login on: the login everywhere but on the login page, no API description on it,
    and at most :data:`LOGIN_FAILURES` wrong passwords per address per :data:`LOGIN_WINDOW_S`."""

    def __init__(self, app) -> None:
        self.app = app
        self.failures = _Window(LOGIN_WINDOW_S)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, user = scope["path"], _gradio_user(scope)
        if path.rstrip("/") == "/login" and scope["method"] == "POST":
            return await self._login(scope, receive, send)
        if user is None and not _OPEN.fullmatch(path):
            return await _answer(send, 401, "Not authenticated: log in first.")
        if user is None and path == "/" and scope["method"] == "GET":
            return await self.app(scope, receive, _Rewritten(send, _without_api_info))
        return await self.app(scope, receive, send)

    async def _login(self, scope, receive, send) -> None:
        client = access.client_address(Request(scope))
        if self.failures.total(client) >= LOGIN_FAILURES:
            wait = max(1, round(self.failures.wait_s(client)))
            return await _answer(send, 429, f"Too many failed logins from this address: try again in {wait} s.")
        started = _Started(send)
        await self.app(scope, receive, started)
        if started.status in (400, 401):  # Gradio's answer to a wrong user or password
            self.failures.add(client, 1)


def _gradio_user(scope) -> str | None:
    """The user logged in through Gradio's login (its access-token cookie), or None."""
    app = scope.get("app")
    cookie_id, tokens = getattr(app, "cookie_id", None), getattr(app, "tokens", None)
    if not cookie_id or tokens is None:
        return None
    cookies = Request(scope).cookies
    token = cookies.get(f"access-token-{cookie_id}") or cookies.get(f"access-token-unsecure-{cookie_id}")
    return tokens.get(token)


def _is_owner(scope) -> bool:
    """:func:`nailseg.access.is_owner` for a raw request: Gradio's login, or Hugging Face sign-in."""
    info = (scope.get("session") or {}).get("oauth_info") or {}
    profile = gr.OAuthProfile(info["userinfo"]) if "userinfo" in info else None
    return access.is_owner(SimpleNamespace(username=_gradio_user(scope)), profile)


def _is_owner_file(path: str) -> bool:
    """A request for one of Gradio's cached files whose name marks it as the owner's."""
    return ("/file=" in path or "/file/" in path) and PurePosixPath(path).name.startswith(access.OWNER_FILE_PREFIX)


def _without_api_info(body: bytes) -> bytes:
    return _API_INFO.sub(b"window.gradio_api_info = null;</script>", body)


def _uploads_disk():
    """Gradio's upload folder, or the folder it will be made in (the disk is the same)."""
    folder = upload_folder()
    while not folder.exists():
        folder = folder.parent
    return folder


def _content_length(scope) -> int:
    """The body's declared size (0 when not declared: it is then counted as it comes)."""
    value = dict(scope["headers"]).get(b"content-length", b"")
    return int(value) if value.isdigit() else 0


def _gb_env(name: str, default: float) -> float:
    return float(os.environ.get(name) or default) * 1024**3


class _Refused(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status, self.text = status, text


class _Started:
    """A ``send`` that remembers whether the response has started, and its status."""

    def __init__(self, send) -> None:
        self.send, self.status, self.done = send, None, False

    async def __call__(self, message) -> None:
        if message["type"] == "http.response.start":
            self.status, self.done = message["status"], True
        await self.send(message)


class _Rewritten:
    """A ``send`` that buffers the body and sends it through ``rewrite`` (Content-Length fixed)."""

    def __init__(self, send, rewrite) -> None:
        self.send, self.rewrite, self.start, self.body = send, rewrite, None, b""

    async def __call__(self, message) -> None:
        if message["type"] == "http.response.start":
            self.start = message
            return
        if message["type"] != "http.response.body":
            return await self.send(message)
        self.body += message.get("body", b"")
        if message.get("more_body"):
            return
        body = self.rewrite(self.body)
        headers = [(k, v) for k, v in self.start["headers"] if k.lower() != b"content-length"]
        await self.send({**self.start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await self.send({"type": "http.response.body", "body": body})


async def _answer(send, status: int, text: str) -> None:
    body = text.encode()
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
