"""nailseg.middleware's upload shares on a bare Starlette app (the login's guards are tested on the
real app, in test_security_login.py: they read Gradio's own login state)."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from nailseg import middleware


async def echo(request):
    return PlainTextResponse(f"got {len(await request.body())} bytes")


def client(quota_bytes: float = 1000, reserve_bytes: float = 0) -> TestClient:
    """A route that reads its body, behind UploadShares, reached from a loopback peer (as behind a proxy)."""
    app = Starlette(routes=[Route("/upload", echo, methods=["POST"]), Route("/page", echo)])
    app.add_middleware(middleware.UploadShares, quota_bytes=quota_bytes, reserve_bytes=reserve_bytes)
    return TestClient(app, client=("127.0.0.1", 50000))


def address(ip: str) -> dict:
    return {"x-forwarded-for": ip}


def test_each_address_has_its_share_of_uploads():
    web = client(quota_bytes=1000)
    assert web.post("/upload", content=b"x" * 600, headers=address("151.101.1.1")).text == "got 600 bytes"
    refused = web.post("/upload", content=b"x" * 600, headers=address("151.101.1.1"))
    assert refused.status_code == 413
    assert refused.text.startswith("Upload refused: this address has sent") and "in the last 12 minutes" in refused.text
    assert web.post("/upload", content=b"x" * 600, headers=address("151.101.2.2")).status_code == 200  # another
    assert web.get("/page", headers=address("151.101.1.1")).status_code == 200  # reading is never refused


def test_a_body_longer_than_declared_is_counted_as_it_comes():
    web = client(quota_bytes=1000)

    def chunks():  # no Content-Length: sent chunked
        for _ in range(20):
            yield b"x" * 100

    assert web.post("/upload", content=chunks(), headers=address("151.101.1.1")).status_code == 413


@pytest.mark.parametrize(("reserve_bytes", "status"), [(0, 200), (1e18, 507)], ids=["room", "disk-short"])
def test_no_upload_leaves_the_disk_short(reserve_bytes, status):
    answer = client(quota_bytes=1e18, reserve_bytes=reserve_bytes).post("/upload", content=b"x" * 10)
    assert answer.status_code == status
    if status == 507:
        assert answer.text == "Upload refused: the server is short of disk space; try again in a few minutes."


def test_the_quota_forgets_after_its_window(monkeypatch):
    import time

    web = client(quota_bytes=1000)
    assert web.post("/upload", content=b"x" * 900).status_code == 200
    assert web.post("/upload", content=b"x" * 900).status_code == 413
    now = time.monotonic()
    monkeypatch.setattr(time, "monotonic", lambda: now + middleware.UPLOAD_WINDOW_S + 1)
    assert web.post("/upload", content=b"x" * 900).status_code == 200


@pytest.mark.parametrize(
    ("page", "expected"),
    [
        (
            b'<script>window.gradio_api_info = {"named_endpoints": {"/segment": {}}};</script><p>',
            b"<script>window.gradio_api_info = null;</script><p>",
        ),
        (b"<p>no description</p>", b"<p>no description</p>"),
        (b"", b""),
    ],
    ids=["described", "plain", "empty"],
)
def test_the_login_page_loses_the_api_description(page, expected):
    assert middleware._without_api_info(page) == expected


def test_a_window_forgets_addresses_with_nothing_left(monkeypatch):
    """Memory follows recent clients: an address whose amounts have all left the window is dropped."""
    import time

    window = middleware._Window(60)
    window.add("151.101.1.1", 5)
    assert window.total("151.101.1.1") == 5 and 0 < window.wait_s("151.101.1.1") <= 60
    now = time.monotonic()
    monkeypatch.setattr(time, "monotonic", lambda: now + 61)
    window.add("151.101.2.2", 1)  # a window later: the sweep
    assert list(window._events) == ["151.101.2.2"] and window.total("151.101.1.1") == 0
