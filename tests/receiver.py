"""A real HTTP webhook receiver on loopback, in a thread of its own.

It records every request and answers from a script (a status code, optional headers,
an optional body, an optional delay per request, or an answer held until the test lets
it go); it can be stopped and started again on the same port to play a receiver that is
down for a while.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.stack import free_port


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    body: bytes = b"ok"
    # Answer only once the test sets it (or after HOLD_LIMIT_S, so a failing test ends).
    hold: threading.Event | None = None


HOLD_LIMIT_S = 60


class Receiver:
    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[Received] = []
        self.script: list[Answer] = []  # consumed first, then `default`
        self.default = Answer()
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def _answer(self) -> Answer:
        with self._lock:
            return self.script.pop(0) if self.script else self.default

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("content-length", 0))
                body = self.rfile.read(length)
                with receiver._lock:
                    receiver.received.append(
                        Received(self.path, dict(self.headers.items()), body, time.monotonic())
                    )
                    receiver._arrived.notify_all()
                answer = receiver._answer()
                if answer.delay_s:
                    time.sleep(answer.delay_s)
                if answer.hold is not None:
                    answer.hold.wait(HOLD_LIMIT_S)
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            allow_reuse_address = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a sender that hangs up mid-answer (a killed worker) is expected

        self._server = Server(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def requests(self, **header_equals: str) -> list[Received]:
        with self._lock:
            return [
                r
                for r in self.received
                if all(r.headers.get(k) == v for k, v in header_equals.items())
            ]

    def bodies_for_cluster(self, cluster_id: str) -> list[Received]:
        with self._lock:
            items = list(self.received)
        return [r for r in items if _cluster_of(r) == cluster_id]


def _cluster_of(request: Received) -> str | None:
    try:
        body = request.json()
    except ValueError:
        return None
    return body.get("cluster_id") if isinstance(body, dict) else None
