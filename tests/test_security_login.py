"""Gradio's login (``NAILSEG_AUTH``) as a stranger and a logged-in guest see it: the rows of issue 27
where Gradio itself is the cause, mitigated by nailseg.middleware; and upload shares per address.

One app process on a public address with an owner and a guest, and a small upload share (3 MB per
address) so that it can be reached with small files. Each row's outcome is in docs/security.md.
"""

from __future__ import annotations

import httpx
import pytest
from support import AppProcess

pytestmark = pytest.mark.timeout(900)
OWNER, GUEST = ("owner", "s3cret"), ("guest", "guest")


@pytest.fixture(scope="module")
def login_app(tmp_path_factory):
    env = {
        "GRADIO_SERVER_NAME": "0.0.0.0",
        "NAILSEG_AUTH": "owner:s3cret,guest:guest",
        "NAILSEG_OWNERS": "owner",
        "NAILSEG_UPLOAD_QUOTA_GB": str(3 / 1024),
    }
    app = AppProcess(tmp_path_factory.mktemp("login"), extra_env=env)
    yield app
    app.stop()


def login(app: AppProcess, user: tuple[str, str], address: str | None = None) -> httpx.Response:
    headers = {"x-forwarded-for": address} if address else None
    return httpx.post(app.url + "login", data={"username": user[0], "password": user[1]}, headers=headers)


def session(app: AppProcess, user: tuple[str, str]) -> httpx.Client:
    """An HTTP client logged in as ``user`` (it keeps Gradio's cookies)."""
    client = httpx.Client(base_url=app.url, timeout=60)
    assert client.post("login", data={"username": user[0], "password": user[1]}).status_code == 200
    return client


def test_issue27_cancel_and_other_open_routes_need_the_login(login_app):
    """Gradio's /cancel (and a few other routes) answered without a login: it ended others' jobs."""
    cancel = {"session_hash": "someone-else", "fn_index": 0, "event_id": "their-job"}
    stranger = httpx.Client(base_url=login_app.url, timeout=60)
    for method, route, body in [
        ("POST", "gradio_api/cancel", cancel),
        ("POST", "gradio_api/reset", {"event_id": "their-job"}),
        ("GET", "gradio_api/heartbeat/someone-else", None),
        ("POST", "gradio_api/stream/their-job/close", None),
        ("GET", "gradio_api/openapi.json", None),
    ]:
        answer = stranger.request(method, route, json=body)
        assert answer.status_code == 401, (route, answer.status_code, answer.text)
    assert session(login_app, GUEST).post("gradio_api/cancel", json=cancel).status_code == 200  # logged in: Gradio's
    for route in ["", "theme.css", "favicon.ico", "gradio_api/login_check"]:  # what the login page needs
        assert stranger.get(route).status_code in (200, 401), route
    assert stranger.get("").status_code == 200


def test_issue27_the_login_page_does_not_describe_the_api(login_app):
    page = httpx.get(login_app.url, timeout=60).text
    assert "window.gradio_api_info = null;" in page and "segment_batch" not in page
    assert "segment_batch" in session(login_app, GUEST).get("").text  # logged in, the page describes it


def test_issue27_wrong_passwords_are_limited_per_address(login_app):
    """40 wrong passwords in 0.1 s went through before; now five per address per five minutes."""
    tries = [login(login_app, (OWNER[0], f"guess{k}"), address="151.101.7.7").status_code for k in range(7)]
    assert tries == [400] * 5 + [429] * 2
    locked = login(login_app, OWNER, address="151.101.7.7")
    assert locked.status_code == 429 and "Too many failed logins from this address" in locked.text
    assert login(login_app, OWNER, address="151.101.8.8").status_code == 200  # the owner, from elsewhere


def test_issue27_the_owners_files_are_for_the_owner(login_app):
    """Any logged-in user with the link could fetch the owner's exported weights from Gradio's cache."""
    from nailseg.access import owner_file_name

    folder = login_app.upload_dir / "exported"
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / owner_file_name("weights.zip")
    weights.write_bytes(b"the owner's weights")
    (folder / "crops.zip").write_bytes(b"anyone's crops")
    guest, owner = session(login_app, GUEST), session(login_app, OWNER)
    assert guest.get(f"gradio_api/file={weights}").status_code == 403
    assert owner.get(f"gradio_api/file={weights}").content == b"the owner's weights"
    assert guest.get(f"gradio_api/file={folder / 'crops.zip'}").content == b"anyone's crops"


def test_issue27_one_address_cannot_fill_the_disk_with_uploads(login_app, tmp_path):
    """A 1.9 GB upload was accepted in 8 s, and a few clients could fill the disk; now each address has a share."""
    big = tmp_path / "big.bin"
    big.write_bytes(b"\0" * 2 * 1024**2)
    guest = session(login_app, GUEST)

    def send(address: str) -> httpx.Response:
        with open(big, "rb") as f:
            return guest.post("gradio_api/upload", files={"files": f}, headers={"x-forwarded-for": address})

    assert send("151.101.9.9").status_code == 200
    refused = send("151.101.9.9")
    assert refused.status_code == 413 and refused.text.startswith("Upload refused: this address has sent")
    assert send("151.101.10.10").status_code == 200  # another visitor's share is untouched
