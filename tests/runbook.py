"""A real runbook service on loopback, in a thread of its own, for the `http` and `check`
actions: it records every request and answers each through a function the test sets."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from standardwebhooks import Webhook

from tests.stack import free_port


@dataclass
class Call:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.body)

    def verifies_with(self, secret: str) -> bool:
        """A POST verifies with the `standardwebhooks` package as a runbook would."""
        try:
            Webhook(secret).verify(self.body.decode(), self.headers)
        except Exception:
            return False
        return True

    def signed_by(self, secret: str) -> bool:
        """Any request, a bodiless GET too: one of its signatures is over its body."""
        at = datetime.fromtimestamp(int(self.headers["webhook-timestamp"]), UTC)
        wanted = Webhook(secret).sign(self.headers["webhook-id"], at, self.body.decode())
        return wanted in self.headers["webhook-signature"].split(" ")


@dataclass
class Reply:
    status: int = 200
    body: Any = field(default_factory=lambda: {"ok": True})
    headers: dict[str, str] = field(default_factory=dict)
    # Answer only once this is set (or after HOLD_LIMIT_S, so a failing test ends).
    hold: threading.Event | None = None


HOLD_LIMIT_S = 60
Answerer = Callable[[Call], Reply]


class Runbook:
    def __init__(self) -> None:
        self.port = free_port()
        self.calls: list[Call] = []
        self.answer: Answerer = lambda call: Reply()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def of(self, method: str | None = None, path: str | None = None) -> list[Call]:
        with self._lock:
            return [
                c
                for c in self.calls
                if (method is None or c.method == method) and (path is None or c.path == path)
            ]

    def start(self) -> Runbook:
        runbook = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("content-length", 0))
                call = Call(
                    self.command,
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(length),
                    time.monotonic(),
                )
                with runbook._lock:
                    runbook.calls.append(call)
                reply = runbook.answer(call)
                if reply.hold is not None:
                    reply.hold.wait(HOLD_LIMIT_S)
                body = (
                    reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
                )
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _handle  # noqa: N815

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            allow_reuse_address = True
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a caller that hangs up mid-answer (a killed worker) is expected

        self._server = Server(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@pytest.fixture
def runbook() -> Iterator[Runbook]:
    """A runbook (or health) service on loopback, for one test."""
    running = Runbook().start()
    yield running
    running.stop()


@pytest.fixture
def second_runbook() -> Iterator[Runbook]:
    """Another one, for a test that needs one per region."""
    running = Runbook().start()
    yield running
    running.stop()
