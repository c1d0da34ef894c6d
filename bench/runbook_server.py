"""A loopback runbook for (d) and (e): answers every request `200 {}` at once, keep-alive.

It runs in a process of its own (`python -m bench.runbook_server [--log]`), so its CPU is
not the bench's (whose CPU, in (e), is Tandem's). It writes `port <n>` on stdout, then
with `--log` one line per request it has read whole:
`<method> <path> <idempotency-key or -> <time.monotonic()> <body bytes>`. CLOCK_MONOTONIC
is one clock for the whole machine, so its arrival times compare with the bench's own.
`GET /__count` answers `{"requests": n, "connections": m}`: the requests before it (it is
not counted) and the connections accepted so far (its own included). It
exits when its stdin closes (the bench went away).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time

from tests.stack import ROOT

# (method, path, idempotency key or "-", monotonic arrival time, body bytes)
Received = tuple[str, str, str, float, int]

_OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: application/json\r\n\r\n{}"


class _Server:
    def __init__(self, log: bool) -> None:
        self.log = log
        self.requests = 0
        self.connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        out = sys.stdout.buffer
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, *lines = head.split(b"\r\n")
                method, path, _ = request_line.split(b" ", 2)
                length, key = 0, b"-"
                for line in lines:
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"idempotency-key":
                        key = value.strip()
                body = await reader.readexactly(length) if length else b""
                at = time.monotonic()
                if path == b"/__count":
                    count = json.dumps(
                        {"requests": self.requests, "connections": self.connections}
                    ).encode()
                    writer.write(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                        + f"content-length: {len(count)}\r\n\r\n".encode()
                        + count
                    )
                else:
                    self.requests += 1
                    writer.write(_OK)
                    if self.log:
                        out.write(b"%s %s %s %r %d\n" % (method, path, key, at, len(body)))
                        out.flush()
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()


async def _serve(log: bool) -> None:
    server = await asyncio.start_server(_Server(log).handle, "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    sys.stdout.buffer.write(f"port {port}\n".encode())
    sys.stdout.buffer.flush()
    loop = asyncio.get_running_loop()
    stdin_closed = asyncio.Event()
    loop.add_reader(sys.stdin.fileno(), stdin_closed.set)
    async with server:
        await stdin_closed.wait()


class Runbook:
    """The server's process, seen from the bench: its port, pid and (with `log`) what it
    received, as (method, path, idempotency key, monotonic time, body bytes)."""

    def __init__(self, log: bool = False) -> None:
        self.log = log
        self.port = 0
        self.received: list[Received] = []
        self._changed = asyncio.Event()
        self._proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    async def start(self) -> Runbook:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.runbook_server",
            *(["--log"] if self.log else []),
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert self._proc.stdout is not None
        line = await asyncio.wait_for(self._proc.stdout.readline(), 30)
        self.port = int(line.split()[1])
        self._task = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        async for line in self._proc.stdout:
            method, path, key, at, size = line.decode().split()
            self.received.append((method, path, key, float(at), int(size)))
            self._changed.set()

    async def wait_for(self, count: int, prefix: str, timeout_s: float) -> list[Received]:
        """The requests whose idempotency key starts with `prefix`, once there are `count`
        of them (or whatever there is after `timeout_s`)."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = [r for r in self.received if r[2].startswith(prefix)]
            remaining = deadline - time.monotonic()
            if len(found) >= count or remaining <= 0:
                return found
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._proc is not None and self._proc.returncode is None:
            self._proc.kill()
            await self._proc.wait()


if __name__ == "__main__":
    asyncio.run(_serve("--log" in sys.argv[1:]))
