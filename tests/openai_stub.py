"""A scripted OpenAI-compatible chat endpoint on 127.0.0.1 (http.server in a thread) for tests.

Replies come from `script` first (status code + answer text), then from `answer(request_body)`.
Every request is recorded with its headers and JSON body.
"""

from __future__ import annotations

import json
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Reply:
    status: int = 200
    content: str = ""


@dataclass(frozen=True)
class RecordedRequest:
    path: str
    headers: dict[str, str]  # names in lower case
    body: dict


class LocalServer(ABC):
    """An http.server on 127.0.0.1 in a daemon thread, for the lifetime of a `with` block."""

    def __init__(self):
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    @abstractmethod
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        """The request handler class, bound to this server's script."""


class OpenAIStub(LocalServer):
    def __init__(self, script: list[Reply] | None = None, answer: Callable[[dict], str] | None = None):
        self.script = list(script or [])
        self.answer = answer or (lambda body: "Explanation: a default answer.\nScore: 3")
        self.requests: list[RecordedRequest] = []
        super().__init__()

    def _next_reply(self, body: dict) -> Reply:
        with self._lock:
            if self.script:
                return self.script.pop(0)
        return Reply(200, self.answer(body))

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with stub._lock:
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    stub.requests.append(RecordedRequest(self.path, headers, body))
                if self.path != "/v1/chat/completions":
                    return self._send(
                        404, {"error": {"message": f"no route {self.path}", "type": "not_found"}}
                    )
                reply = stub._next_reply(body)
                if reply.status != 200:
                    error = {
                        "message": reply.content or f"scripted status {reply.status}",
                        "type": "scripted",
                    }
                    return self._send(reply.status, {"error": error})
                self._send(200, completion(body.get("model", "stub"), reply.content))

            def _send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler


def completion(model: str, content: str) -> dict:
    """A minimal /v1/chat/completions response body."""
    return {
        "id": "chatcmpl-stub",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
