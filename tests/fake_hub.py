"""A Hugging Face Hub stand-in on 127.0.0.1, for tests and for checking the Hub path by hand.

It answers what ``huggingface_hub`` 2.4 asks of a Hub when ``HF_ENDPOINT`` points at it:

- ``HEAD``/``GET /{repo_id}/resolve/{revision}/{filename}``: the file with ``ETag``,
  ``X-Repo-Commit`` and ``Content-Length`` (no ``X-Xet-*`` headers, so the client downloads the
  body over plain HTTP); a 404 with ``X-Error-Code: EntryNotFound`` (file) or ``RepoNotFound``;
- ``POST /api/repos/create``, ``/api/validate-yaml``, ``/api/models/{repo_id}/preupload/{rev}`` and
  ``/api/models/{repo_id}/commit/{rev}``: enough for ``create_repo`` + ``create_commit`` with every
  file uploaded inline ("regular" mode, base64 in the commit's NDJSON).

Every request is recorded in ``hub.requests`` as ``(method, path)``. With ``echo_refusal`` set, uploads
are refused (403) with the request's token echoed in the error, as a careless server might.

By hand: ``python tests/fake_hub.py checkpoints --repo-id nailseg/nails --port 8765`` then
``HF_ENDPOINT=http://127.0.0.1:8765 NAILSEG_WEIGHTS=hf://nailseg/nails/<file> python app.py``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


class FakeHub:
    """Model repos held in memory: ``repos[repo_id][filename] = bytes``."""

    def __init__(self) -> None:
        self.repos: dict[str, dict[str, bytes]] = {}
        self.requests: list[tuple[str, str]] = []
        self.echo_refusal = False
        self._server: ThreadingHTTPServer | None = None

    @staticmethod
    def commit_of(repo_id: str, files: dict[str, bytes]) -> str:
        digest = hashlib.sha1(repo_id.encode())
        for name in sorted(files):
            digest.update(name.encode() + hashlib.sha1(files[name]).digest())
        return digest.hexdigest()  # 40 hex digits, like a git commit

    def add_folder(self, repo_id: str, folder: str | Path, pattern: str = "*") -> None:
        """Serve the files of a local folder (not recursive) as one repo."""
        files = self.repos.setdefault(repo_id, {})
        for path in sorted(Path(folder).glob(pattern)):
            if path.is_file():
                files[path.name] = path.read_bytes()

    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self, port: int = 0) -> FakeHub:
        hub = self

        class Handler(_Handler):
            fake = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class _Handler(BaseHTTPRequestHandler):
    fake: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, status: int, obj) -> None:
        self._send(status, json.dumps(obj).encode(), {"Content-Type": "application/json"})

    def _resolve(self, head: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        self.fake.requests.append(("HEAD" if head else "GET", path))
        parts = path.strip("/").split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            return self._send(404, b"not found", {"X-Error-Code": "RepoNotFound"}, head)
        repo_id, filename = "/".join(parts[:2]), "/".join(parts[4:])
        files = self.fake.repos.get(repo_id)
        if files is None:
            return self._send(404, b"Repository not found", {"X-Error-Code": "RepoNotFound"}, head)
        commit = self.fake.commit_of(repo_id, files)
        if filename not in files:
            headers = {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit}
            return self._send(404, b"Entry not found", headers, head)
        body = files[filename]
        headers = {
            "ETag": f'"{hashlib.sha256(body).hexdigest()}"',
            "X-Repo-Commit": commit,
            "Content-Type": "application/octet-stream",
        }
        self._send(200, body, headers, head)

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self._resolve(head=True)

    def do_GET(self) -> None:  # noqa: N802
        self._resolve(head=False)

    def do_POST(self) -> None:  # noqa: N802
        path = unquote(urlsplit(self.path).path)
        self.fake.requests.append(("POST", path))
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        parts = path.strip("/").split("/")
        if self.fake.echo_refusal:
            token = self.headers.get("Authorization", "").removeprefix("Bearer ")
            return self._json(403, {"error": f"You have no write access with token {token}"})
        if path == "/api/repos/create":
            payload = json.loads(body)
            repo_id = f"{payload['organization']}/{payload['name']}"
            self.fake.repos.setdefault(repo_id, {})
            return self._json(200, {"url": f"{self.fake.url}/{repo_id}", "name": repo_id})
        if path == "/api/validate-yaml":
            return self._json(200, {"errors": [], "warnings": []})
        if len(parts) == 6 and parts[:2] == ["api", "models"] and parts[4] in ("preupload", "commit"):
            repo_id = "/".join(parts[2:4])
            if repo_id not in self.fake.repos:
                return self._send(404, b"Repository not found", {"X-Error-Code": "RepoNotFound"})
            if parts[4] == "preupload":
                files = json.loads(body)["files"]
                modes = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]
                return self._json(200, {"files": modes})
            for line in body.splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    value = item["value"]
                    self.fake.repos[repo_id][value["path"]] = base64.b64decode(value["content"])
            commit = self.fake.commit_of(repo_id, self.fake.repos[repo_id])
            url = f"{self.fake.url}/{repo_id}/commit/{commit}"
            return self._json(200, {"commitUrl": url, "commitOid": commit, "pullRequestUrl": None})
        self._send(404, b"not found")


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve a local folder as a Hub model repo on 127.0.0.1.")
    parser.add_argument("folder", type=Path, help="files to serve (e.g. checkpoints)")
    parser.add_argument("--repo-id", default="nailseg/nails", help="OWNER/NAME the files appear under")
    parser.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1")
    args = parser.parse_args()
    hub = FakeHub()
    hub.add_folder(args.repo_id, args.folder)
    hub.start(args.port)
    print(f"HF_ENDPOINT={hub.url}  serving {sorted(hub.repos[args.repo_id])} as {args.repo_id}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
