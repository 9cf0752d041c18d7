"""A local stand-in for Dify's files endpoint (and for a forbidden target), counting requests.

Files are served under ``/files/<name>`` with a signed-looking query, as Dify
hands them to tools; a name registered as expired answers 403 like an expired
signature does.
"""

from __future__ import annotations

import http.server
import threading
from dataclasses import dataclass, field


@dataclass
class FilesServer:
    files: dict[str, tuple[bytes, str]] = field(default_factory=dict)  # name -> (body, mime)
    expired: set[str] = field(default_factory=set)
    requests: list[str] = field(default_factory=list)  # paths asked for, in order

    def __post_init__(self) -> None:
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                owner.requests.append(self.path)
                name = self.path.split("?", 1)[0].removeprefix("/files/")
                if name in owner.expired:
                    self.send_error(403, "signature expired")
                    return
                if name not in owner.files:
                    self.send_error(404)
                    return
                body, mime = owner.files[name]
                self.send_response(200)
                self.send_header("Content-Type", mime)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def url(self, name: str) -> str:
        return f"{self.base_url}/files/{name}?timestamp=1700000000&nonce=abc&sign=c2lnbmF0dXJl"

    def add(self, name: str, body: bytes, mime: str) -> dict:
        """Register a file; returns the parameter Dify would send for it."""
        self.files[name] = (body, mime)
        return dify_file(self.url(name), name, mime, len(body))

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def dify_file(url: str, filename: str, mime: str, size: int) -> dict:
    kind = mime.split("/", 1)[0]
    return {
        "dify_model_identity": "__dify__file__",
        "mime_type": mime,
        "filename": filename,
        "extension": "." + filename.rsplit(".", 1)[-1],
        "size": size,
        "type": kind if kind in ("image", "audio", "video") else "document",
        "url": url,
    }
