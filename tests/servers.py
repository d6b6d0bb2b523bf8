"""Real HTTP servers on 127.0.0.1 for the URL and Hugging Face hub code paths."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class _Server:
    def __init__(self, handler_cls):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler_cls)
        self.httpd.owner = self
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


class FileServer(_Server):
    """Serves files from a dict name -> bytes, with Range support; ``cut_after``
    bytes makes it drop the connection mid-body (a killed download)."""

    def __init__(self, files: dict[str, bytes], cut_after: int | None = None, ranges: bool = True):
        self.files, self.cut_after, self.ranges = files, cut_after, ranges
        super().__init__(_FileHandler)


class _FileHandler(BaseHTTPRequestHandler):
    def log_message(self, *a):  # keep test output clean
        pass

    def do_GET(self):
        srv: FileServer = self.server.owner
        rng = self.headers.get("Range")
        srv.requests.append(("GET", self.path, rng))
        name = self.path.lstrip("/")
        if name not in srv.files:
            self.send_error(404)
            return
        data = srv.files[name]
        start = 0
        if rng and srv.ranges:
            start = int(re.match(r"bytes=(\d+)-", rng).group(1))
            if start >= len(data):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if srv.cut_after is not None and len(body) > srv.cut_after:
            self.wfile.write(body[: srv.cut_after])
            self.wfile.flush()
            self.connection.shutdown(2)  # die mid-transfer
            return
        self.wfile.write(body)


class HubServer(_Server):
    """The parts of the Hugging Face hub API that ``snapshot_download`` uses:
    repo info at a revision, and ``resolve`` for each file (HEAD and GET)."""

    def __init__(self, repo: str, files: dict[str, bytes], commit: str = "a" * 40):
        self.repo, self.files, self.commit = repo, files, commit
        super().__init__(_HubHandler)


class _HubHandler(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def _file(self):
        srv: HubServer = self.server.owner
        m = re.match(rf"^/{re.escape(srv.repo)}/resolve/([^/]+)/(.+?)(\?.*)?$", self.path)
        if not m or m.group(2) not in srv.files:
            return None, None
        return m.group(2), srv.files[m.group(2)]

    def _headers(self, data: bytes):
        srv: HubServer = self.server.owner
        self.send_header("X-Repo-Commit", srv.commit)
        self.send_header("ETag", '"' + hashlib.sha256(data).hexdigest() + '"')
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Accept-Ranges", "bytes")

    def _json(self, obj) -> None:
        body = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _resolve(self, with_body: bool) -> None:
        name, data = self._file()
        if data is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.end_headers()
            return
        self.send_response(200)
        self._headers(data)
        self.end_headers()
        if with_body:
            self.wfile.write(data)

    def do_HEAD(self):
        self.server.owner.requests.append(("HEAD", self.path, None))
        self._resolve(with_body=False)

    def do_GET(self):
        srv: HubServer = self.server.owner
        srv.requests.append(("GET", self.path, self.headers.get("Range")))
        if self.path.startswith(f"/api/models/{srv.repo}/tree/"):
            self._json(
                [
                    {
                        "type": "file",
                        "path": n,
                        "size": len(d),
                        "oid": hashlib.sha1(b"blob %d\0" % len(d) + d).hexdigest(),
                    }
                    for n, d in sorted(srv.files.items())
                ]
            )
        elif self.path.startswith(f"/api/models/{srv.repo}"):
            self._json(
                {
                    "id": srv.repo,
                    "modelId": srv.repo,
                    "sha": srv.commit,
                    "private": False,
                    "siblings": [{"rfilename": n} for n in sorted(srv.files)],
                }
            )
        else:
            self._resolve(with_body=True)


def dir_files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }
