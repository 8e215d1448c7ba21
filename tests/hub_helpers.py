"""What the Hub tests share: a Hugging Face cache laid out as huggingface_hub lays it, and a
local HTTP server that answers (and records) the requests huggingface_hub makes to upload."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def fill_cache(cache: Path, repo_id: str, folder: Path) -> Path:
    """`folder`'s files as huggingface_hub caches `repo_id` at its main branch:
    models--OWNER--NAME/{blobs/<sha256>, snapshots/<commit>/<file> -> ../../blobs/<sha256>,
    refs/main = <commit>}; returns the snapshot folder."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / COMMIT
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    for file in folder.iterdir():
        blob = repo / "blobs" / hashlib.sha256(file.read_bytes()).hexdigest()
        shutil.copyfile(file, blob)
        (snapshot / file.name).symlink_to(Path("..", "..", "blobs", blob.name))
    return snapshot


class FakeHub:
    """A local server on a free loopback port answering what `create_repo` and
    `upload_folder` ask (huggingface_hub 2.4: POST /api/repos/create, POST /api/validate-yaml
    (the README's metadata), POST /api/models/OWNER/NAME/preupload/main, POST
    /api/models/OWNER/NAME/commit/main), every
    file uploaded "regular" (inline, base64, in the NDJSON commit: no LFS, no xet).
    `requests` records each one: (method, path, headers, body). `refuse` answers every
    request with that status."""

    def __init__(self, refuse: int | None = None):
        self.requests: list[tuple[str, str, dict, bytes]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet: pytest shows what fails
                pass

            def answer(self, status: int, data: object) -> None:
                body = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def handle_any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                hub.requests.append((self.command, self.path, dict(self.headers), body))
                path = self.path.split("?")[0]
                if refuse is not None:
                    self.answer(refuse, {"error": "Invalid credentials in Authorization header"})
                elif self.command == "POST" and path == "/api/repos/create":
                    data = json.loads(body)
                    self.answer(200, {"url": f"{hub.url}/{data['organization']}/{data['name']}"})
                elif self.command == "POST" and path == "/api/validate-yaml":
                    self.answer(200, {"errors": [], "warnings": []})
                elif self.command == "POST" and "/preupload/" in path:
                    files = json.loads(body)["files"]
                    self.answer(200, {"files": [{"path": f["path"], "uploadMode": "regular",
                                                 "shouldIgnore": False} for f in files]})
                elif self.command == "POST" and "/commit/" in path:
                    repo = path.split("/api/models/")[1].split("/commit/")[0]
                    self.answer(200, {"commitUrl": f"{hub.url}/{repo}/commit/{COMMIT}",
                                      "commitOid": COMMIT})
                else:
                    self.answer(404, {"error": f"not answered by the test: {self.path}"})

            do_GET = do_POST = do_PUT = do_HEAD = handle_any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def committed_files(self) -> dict[str, bytes]:
        """The files of the commits, by path (decoded from the NDJSON body)."""
        files = {}
        for method, path, _, body in self.requests:
            if method == "POST" and "/commit/" in path:
                for line in body.decode().splitlines():
                    item = json.loads(line)
                    if item["key"] == "file":
                        files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
        return files
