"""A tiny OpenAI-compatible ``POST /v1/embeddings`` server on 127.0.0.1, for tests.

It answers with deterministic vectors derived from each text (so tests can check order
and batching), records every request it received, and can be told to fail with a given
status to exercise error handling. Stdlib only; runs in a daemon thread.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["EmbeddingServer", "ReceivedRequest", "vector_for"]


def vector_for(text: str, dimensions: int = 8) -> list[float]:
    """The vector the server returns for ``text``: stable, distinct per text."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return [round(byte / 255.0, 6) for byte in digest[:dimensions]]


@dataclass
class ReceivedRequest:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class EmbeddingServer:
    """Start with ``with EmbeddingServer() as server:``; ``server.api_base`` is the URL."""

    api_key: str = "test-key"
    fail_status: int | None = None
    requests: list[ReceivedRequest] = field(default_factory=list)
    _httpd: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @property
    def api_base(self) -> str:
        assert self._httpd is not None
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> EmbeddingServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {}
                server.requests.append(
                    ReceivedRequest(
                        self.path, {k.lower(): v for k, v in self.headers.items()}, body
                    )
                )
                status, payload = server._answer(self.path, self.headers, body)
                data = json.dumps(payload).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._httpd is not None and self._thread is not None
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def _answer(self, path: str, headers: Any, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if path != "/v1/embeddings":
            return 404, {"error": {"message": f"no route {path}", "type": "not_found"}}
        if headers.get("Authorization") != f"Bearer {self.api_key}":
            return 401, {"error": {"message": "Incorrect API key provided.", "type": "auth"}}
        if self.fail_status is not None:
            return self.fail_status, {
                "error": {"message": "The server is overloaded.", "type": "server_error"}
            }
        texts = body.get("input")
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            return 400, {"error": {"message": "'input' must be a list of strings."}}
        dimensions = int(body.get("dimensions") or 8)
        # Answer in reverse order: clients must sort by "index", as the API allows.
        data = [
            {"object": "embedding", "index": i, "embedding": vector_for(text, dimensions)}
            for i, text in reversed(list(enumerate(texts)))
        ]
        return 200, {"object": "list", "data": data, "model": body.get("model")}
