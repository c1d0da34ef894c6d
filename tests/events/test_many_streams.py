"""2,000 open event streams on one API process (its caps raised) while other clients fail
pairs over and back (issue 8, item 3): no request gets a 5xx, /healthz answers 200
throughout, and every stream gets every event of those operations, in commit order.

The streams are raw sockets (a plain HTTP/1.1 request, the chunked body decoded by hand):
2,000 httpx clients would cost this process more than the server. /healthz is probed from
a process of its own, on a fresh connection each time as a load balancer would, so that
its latencies are the server's and not this process's event loop. They are reported (on
stdout, in `many-streams.json` beside the stack's logs, and as test properties), never
asserted: this machine's speed is not the server's behaviour.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import psutil
import pytest
import pytest_asyncio
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from app.events.models import Event
from tests.backends import backends
from tests.conftest import ADMIN_TOKEN, BACKEND
from tests.events.processes import api_process
from tests.helpers import pair_body
from tests.stack import Stack

_FIRST_BACKEND = backends()[0]
pytestmark = [
    pytest.mark.skipif(
        _FIRST_BACKEND != BACKEND,
        reason=f"independent of the database backend; runs in the {_FIRST_BACKEND} pass only",
    ),
    # About a minute alone on two cores; room for a machine that is busy with more.
    pytest.mark.timeout(400),
]

STREAMS = 2000
# Streams being opened at once (each costs the server a token check and a read).
OPENING = 50
PAIRS = 4
# Each round is a failover and a failback of every pair (the pairs at once).
ROUNDS = 1
STEP_DELAY_MS = 100
# Above what the test holds: the streams and the ?wait polls of the failover clients.
CAP = STREAMS + 500
PROBE_INTERVAL_S = 0.05
# Streams that got nothing for this long have stopped catching up.
STALL_S = 15.0
ID_FIRST = b'{"id": "'

# The prober: /healthz on a fresh connection, and every fifth round an unrelated
# authenticated read on a kept-alive one, until its stdin closes; then the records, as
# JSON on stdout. Times are CLOCK_MONOTONIC, which this process shares.
PROBER = """
import json, sys, threading, time
import httpx

base_url, token, interval = sys.argv[1], sys.argv[2], float(sys.argv[3])
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
authed = httpx.Client(base_url=base_url, timeout=120, headers={"Authorization": "Bearer " + token})
records = []

def probe(path, get):
    start = time.monotonic()
    try:
        status, error = get(path).status_code, None
    except httpx.HTTPError as exc:
        status, error = None, repr(exc)
    records.append({"path": path, "at": start, "s": time.monotonic() - start,
                    "status": status, "error": error})

print("ready", flush=True)
rounds = 0
while not stop.is_set():
    probe("/healthz", lambda path: httpx.get(base_url + path, timeout=120))
    if rounds % 5 == 0:
        probe("/v1/clusters", lambda path: authed.get(path, params={"page_size": 1}))
    rounds += 1
    stop.wait(interval)
authed.close()
print(json.dumps(records), flush=True)
"""


@dataclass
class Stream:
    """One SSE stream on a raw connection: the events it got, as (id, type), in order."""

    status: int = 0
    events: list[tuple[str, str]] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    ended: str | None = None
    started: asyncio.Event = field(default_factory=asyncio.Event)
    writer: asyncio.StreamWriter | None = None
    task: asyncio.Task[None] | None = None

    def frame(self, raw: bytes) -> None:
        event, data = None, []
        for line in raw.split(b"\n"):
            if line.startswith(b"retry:"):
                self.started.set()
            elif line.startswith(b"event:"):
                event = line[6:].strip().decode()
            elif line.startswith(b"data:"):
                data.append(line[5:].lstrip(b" "))
        if data:
            event_id = self.event_id(data[0]) if len(data) == 1 else None
            if event_id is None:  # not the usual shape: parse it all
                body = json.loads(b"\n".join(data))
                event_id, event = body["id"], body["type"]
            self.events.append((event_id, event or ""))
            self.seen.add(event_id)

    @staticmethod
    def event_id(data: bytes) -> str | None:
        """The event's id, without parsing 2,000 copies of each event: it comes first."""
        if not data.startswith(ID_FIRST):
            return None
        end = data.find(b'"', len(ID_FIRST))
        return data[len(ID_FIRST) : end].decode() if end > 0 else None

    async def read(self, reader: asyncio.StreamReader, body: bytearray) -> None:
        """The chunked body (`body`: what came with the headers), frame by frame."""
        sse = bytearray()
        try:
            while True:
                while (eol := body.find(b"\r\n")) >= 0:
                    size = int(bytes(body[:eol]).split(b";")[0], 16)
                    if size == 0:
                        self.ended = "the server ended the stream"
                        return
                    if len(body) < eol + 2 + size + 2:
                        break
                    sse += body[eol + 2 : eol + 2 + size]
                    del body[: eol + 2 + size + 2]
                while (end := sse.find(b"\n\n")) >= 0:
                    self.frame(bytes(sse[:end]))
                    del sse[: end + 2]
                data = await reader.read(65536)
                if not data:
                    self.ended = "the server closed the connection"
                    return
                body += data
        except (OSError, ValueError) as exc:
            self.ended = repr(exc)
        finally:
            self.started.set()

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.writer is not None:
            self.writer.close()


async def open_stream(host: str, port: int, token: str) -> Stream:
    stream = Stream()
    reader, writer = await asyncio.open_connection(host, port)
    stream.writer = writer
    writer.write(
        (
            f"GET /v1/events/stream HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
        ).encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    stream.status = int(head.split(b" ", 2)[1])
    if stream.status != 200:
        stream.ended = head.decode(errors="replace")
        writer.close()
        return stream
    assert b"transfer-encoding: chunked" in head.lower(), head
    stream.task = asyncio.create_task(stream.read(reader, bytearray()))
    await asyncio.wait_for(stream.started.wait(), 60)
    return stream


async def open_streams(base_url: str, token: str, count: int) -> list[Stream]:
    url = urlsplit(base_url)
    assert url.hostname is not None and url.port is not None
    host, port = url.hostname, url.port
    gate = asyncio.Semaphore(OPENING)

    async def one() -> Stream:
        async with gate:
            return await open_stream(host, port, token)

    return list(await asyncio.gather(*(one() for _ in range(count))))


@contextlib.asynccontextmanager
async def prober(base_url: str, token: str) -> AsyncIterator[list[dict[str, Any]]]:
    """Probes while the block runs; the list holds every probe's record afterwards."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        PROBER,
        base_url,
        token,
        str(PROBE_INTERVAL_S),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdin is not None and process.stdout is not None
    records: list[dict[str, Any]] = []
    try:
        assert (await process.stdout.readline()).strip() == b"ready"
        yield records
    finally:
        process.stdin.close()
        out, _ = await process.communicate()
    records.extend(json.loads(out))


@dataclass
class Calls:
    """Every response the failover clients got: (what, status)."""

    seen: list[tuple[str, int]] = field(default_factory=list)

    def check(self, what: str, response: httpx.Response, expected: int) -> httpx.Response:
        self.seen.append((what, response.status_code))
        assert response.status_code == expected, (what, response.text)
        return response


async def run_operation(client: httpx.AsyncClient, calls: Calls, cid: str, kind: str) -> str:
    response = await client.post(
        f"/v1/clusters/{cid}/{kind}", json={}, headers={"Idempotency-Key": uuid.uuid4().hex}
    )
    op_id = str(calls.check(kind, response, 202).json()["id"])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        response = await client.get(f"/v1/operations/{op_id}", params={"wait": 30})
        operation = calls.check("operation ?wait", response, 200).json()
        if operation["done"]:
            assert operation["status"] == "succeeded", operation
            return op_id
    raise AssertionError(f"{kind} {op_id} not done in 120 s")


async def fail_over_and_back(base_url: str, calls: Calls, cid: str) -> list[str]:
    """This pair's operations, one after another; their ids."""
    ops = []
    async with connect(base_url) as client:
        for _ in range(ROUNDS):
            for kind in ("failover", "failback"):
                ops.append(await run_operation(client, calls, cid, kind))
    return ops


def connect(base_url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base_url, timeout=120, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )


async def logged(
    sessions: async_sessionmaker[AsyncSession], pairs: list[str], after: int
) -> list[Event]:
    """The pairs' events after a global position, in commit order."""
    async with sessions() as session:
        rows = await session.scalars(
            select(Event)
            .where(col(Event.cluster_id).in_(pairs), col(Event.position) > after)
            .order_by(col(Event.position))
        )
        return list(rows)


async def newest(sessions: async_sessionmaker[AsyncSession], pairs: list[str]) -> int:
    async with sessions() as session:
        query = select(func.max(Event.position)).where(col(Event.cluster_id).in_(pairs))
        return int(await session.scalar(query) or 0)


async def catch_up(streams: list[Stream], last_id: str) -> None:
    """Until every stream has the last event, or none got anything for STALL_S (a stream
    that missed the last event would never get it): the assertions then say which."""
    received, progressed = -1, time.monotonic()
    while not all(s.ended is not None or last_id in s.seen for s in streams):
        total = sum(len(s.events) for s in streams)
        if total != received:
            received, progressed = total, time.monotonic()
        elif time.monotonic() - progressed > STALL_S:
            return
        await asyncio.sleep(0.2)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def latencies_ms(records: list[dict[str, Any]], keep: Callable[[dict[str, Any]], bool]) -> dict:
    ms = [r["s"] * 1000 for r in records if keep(r)]
    if not ms:
        return {"count": 0}
    return {
        "count": len(ms),
        "p50_ms": round(statistics.median(ms), 1),
        "p99_ms": round(percentile(ms, 99), 1),
        "max_ms": round(max(ms), 1),
    }


def server_process(base_url: str) -> psutil.Process:
    """The API process that serves `base_url` (a child of this one)."""
    port = str(urlsplit(base_url).port)
    for child in psutil.Process().children():
        if port in child.cmdline():
            return child
    raise AssertionError(f"no API process of this test serves {base_url}")


def cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


@pytest_asyncio.fixture
async def crowded(live_stack: Stack) -> AsyncIterator[str]:
    with api_process(
        live_stack,
        live_stack.log_dir,
        "api-many-streams",
        TANDEM_STREAMS_PER_TOKEN=str(CAP),
        TANDEM_STREAMS_PER_PROCESS=str(CAP),
    ) as base_url:
        yield base_url


async def test_two_thousand_streams_while_pairs_fail_over_no_5xx_and_healthz_answers(
    crowded: str,
    live_stack: Stack,
    sessions: async_sessionmaker[AsyncSession],
    record_property: Callable[[str, object], None],
) -> None:
    began = time.monotonic()
    server = server_process(crowded)
    cpu_began = cpu_s(server), time.process_time()
    calls = Calls()
    async with connect(crowded) as client:
        pairs = []
        for _ in range(PAIRS):
            response = await client.post(
                "/v1/clusters", json=pair_body(step_delay_ms=STEP_DELAY_MS)
            )
            pairs.append(str(calls.check("create pair", response, 201).json()["id"]))
    streams: list[Stream] = []
    try:
        async with prober(crowded, ADMIN_TOKEN) as probes:
            streams = await open_streams(crowded, ADMIN_TOKEN, STREAMS)
            assert [s.status for s in streams if s.status != 200] == []
            all_open = time.monotonic()
            before = await newest(sessions, pairs)
            ops_by_pair = await asyncio.gather(
                *(fail_over_and_back(crowded, calls, cid) for cid in pairs)
            )
            ops_done = time.monotonic()
            log = await logged(sessions, pairs, before)
            expected = [(event.id, event.type) for event in log]
            await catch_up(streams, expected[-1][0])
            caught_up = time.monotonic()
            cpu_ended = cpu_s(server), time.process_time()
    finally:
        for stream in streams:
            stream.close()
        await asyncio.gather(*(s.task for s in streams if s.task), return_exceptions=True)

    operations = [op for ops in ops_by_pair for op in ops]
    healthz = latencies_ms(probes, lambda r: r["path"] == "/healthz")
    # From the moment all the streams are open until they have all caught up.
    loaded = latencies_ms(
        probes, lambda r: r["path"] == "/healthz" and all_open <= r["at"] <= caught_up
    )
    report = {
        "streams": len(streams),
        "operations": len(operations),
        "events_per_stream": len(expected),
        "healthz": healthz,
        "healthz_with_all_streams_open": loaded,
        "authenticated_read": latencies_ms(probes, lambda r: r["path"] == "/v1/clusters"),
        "seconds": {
            "opening_streams": round(all_open - began, 1),
            "operations": round(ops_done - all_open, 1),
            "streams_catching_up": round(caught_up - ops_done, 1),
        },
        # CPU seconds over those phases: the API process, and this one (the streams' reader).
        "cpu_seconds": {
            "api_process": round(cpu_ended[0] - cpu_began[0], 1),
            "test_process": round(cpu_ended[1] - cpu_began[1], 1),
        },
    }
    (live_stack.log_dir / "many-streams.json").write_text(json.dumps(report, indent=2))
    print(f"\nmany streams: {json.dumps(report)}")
    for name, value in report.items():
        record_property(name, value)

    # No 5xx anywhere: the failover clients, the stream openings, the prober.
    assert [c for c in calls.seen if c[1] >= 500] == []
    errors = [r for r in probes if r["status"] is None or r["status"] >= 500]
    assert errors == [], errors[:5]
    # /healthz answered, every time, throughout.
    assert healthz["count"] > 0 and loaded["count"] > 0, report
    assert [r for r in probes if r["path"] == "/healthz" and r["status"] != 200] == []
    assert [r for r in probes if r["path"] == "/v1/clusters" and r["status"] != 200] == []

    # Fan-out: every stream is still open and got every event of the operations, in order,
    # once each (the succeeded event of each operation among them).
    assert [s.ended for s in streams if s.ended is not None] == []
    assert len(set(operations)) == PAIRS * ROUNDS * 2
    succeeded = [e.data["operation_id"] for e in log if e.type == "operation.succeeded"]
    assert sorted(succeeded) == sorted(operations), expected
    wanted = {event_id for event_id, _ in expected}
    for n, stream in enumerate(streams):
        got = [e for e in stream.events if e[0] in wanted]
        assert got == expected, f"stream {n} of {len(streams)} got {len(got)} of {len(expected)}"
        assert len(stream.seen) == len(stream.events), f"stream {n} got an event twice"
