"""The guarded outbound transport: which addresses a call may reach, and that it connects
to the address it checked.

No packet leaves the machine here: a resolver stands in for DNS and a recording network
backend stands where sockets would be (it answers a canned HTTP response or fails the TLS
handshake), because the "public" hosts these tests need cannot be reached from CI."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import httpcore
import httpx
import pytest

from app import outbound
from app.outbound import Networks, Refused

PUBLIC = "93.184.216.34"


class FakeStream(httpcore.AsyncNetworkStream):
    def __init__(self, backend: RecordingBackend) -> None:
        self.backend = backend
        self.answer = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        answer, self.answer = self.answer[:max_bytes], self.answer[max_bytes:]
        return answer

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        self.backend.written += buffer

    async def aclose(self) -> None:
        pass

    async def start_tls(
        self,
        ssl_context: Any,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> httpcore.AsyncNetworkStream:
        self.backend.server_hostnames.append(server_hostname)
        raise httpcore.ConnectError("no TLS handshake in this test")

    def get_extra_info(self, info: str) -> Any:
        return None


class RecordingBackend(httpcore.AsyncNetworkBackend):
    """Records where each connection would go and opens none."""

    def __init__(self) -> None:
        self.connected: list[tuple[str, int]] = []
        self.server_hostnames: list[str | None] = []
        self.written = b""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.connected.append((host, port))
        return FakeStream(self)

    async def sleep(self, seconds: float) -> None:
        pass


class Rebinding:
    """A name that answers a public address first and 127.0.0.1 from then on."""

    def __init__(self, first: list[str] | None = None) -> None:
        self.first = first or [PUBLIC]
        self.calls = 0

    async def __call__(self, host: str) -> list[str]:
        self.calls += 1
        return self.first if self.calls == 1 else ["127.0.0.1"]


def fixed(*addresses: str) -> outbound.Resolver:
    async def resolve(host: str) -> list[str]:
        return list(addresses)

    return resolve


# -- addresses ------------------------------------------------------------------------


EMBEDDED_LOOPBACK = [
    "http://[64:ff9b::7f00:1]/",  # NAT64, well-known prefix
    "http://[64:ff9b:1::7f00:1]/",  # NAT64, local-use prefix (a /96 layout)
    "http://[2002:7f00:1::]/",  # 6to4
    "http://[::7f00:1]/",  # IPv4-compatible
    "http://[::ffff:127.0.0.1]/",  # IPv4-mapped
    "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/",  # Teredo, client 127.0.0.1
]


@pytest.mark.parametrize("url", EMBEDDED_LOOPBACK)
async def test_ipv6_forms_that_carry_an_internal_ipv4_address_are_refused(url: str) -> None:
    with pytest.raises(Refused, match="127.0.0.1"):
        await outbound.check(url, Networks.PUBLIC)
    backend = RecordingBackend()
    async with outbound.client(backend=backend) as http:
        with pytest.raises(Refused):
            await http.get(url)
    assert backend.connected == []


@pytest.mark.parametrize("networks", list(Networks))
async def test_the_metadata_service_is_refused_through_nat64_whatever_the_policy(
    networks: Networks,
) -> None:
    for url in ("http://169.254.169.254/", "http://[64:ff9b::a9fe:a9fe]/", "http://[fe80::1]/"):
        with pytest.raises(Refused, match="link-local"):
            await outbound.check(url, networks)
    backend = RecordingBackend()
    async with outbound.client(backend=backend, resolver=fixed("64:ff9b::a9fe:a9fe")) as http:
        with pytest.raises(Refused, match="169.254.169.254"):
            await http.get("http://metadata.example/", extensions=outbound.reach(networks))
    assert backend.connected == []


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        (PUBLIC, {Networks.PUBLIC, Networks.PRIVATE, Networks.ALL}),
        ("64:ff9b::5db8:d822", {Networks.PUBLIC, Networks.PRIVATE, Networks.ALL}),  # NAT64
        ("10.1.2.3", {Networks.PRIVATE, Networks.ALL}),
        ("fd00::1", {Networks.PRIVATE, Networks.ALL}),
        ("127.0.0.1", {Networks.ALL}),
        ("::1", {Networks.ALL}),
        ("0.0.0.0", set()),
        ("224.0.0.1", set()),
        ("169.254.169.254", set()),
    ],
)
def test_each_policy_reaches_what_it_says(address: str, allowed: set[Networks]) -> None:
    assert {n for n in Networks if outbound.refusal(address, n) is None} == allowed


@pytest.mark.parametrize(
    "url", ["ftp://93.184.216.34/x", "http://user:pass@93.184.216.34/x", "http:///x"]
)
async def test_odd_urls_are_refused(url: str) -> None:
    with pytest.raises(Refused):
        await outbound.check(url, Networks.ALL)


# -- the transport ---------------------------------------------------------------------


async def test_dns_rebinding_connects_to_the_address_that_was_checked() -> None:
    backend, resolver = RecordingBackend(), Rebinding()
    async with outbound.client(resolver=resolver, backend=backend) as http:
        response = await http.get("http://hooks.example:8080/x")
    assert response.status_code == 204
    # Resolved once, and the connection went to that checked public address: a second
    # lookup (the one that would now answer 127.0.0.1) never happened.
    assert resolver.calls == 1
    assert backend.connected == [(PUBLIC, 8080)]
    assert b"\r\nHost: hooks.example:8080\r\n" in backend.written


async def test_tls_names_and_verifies_the_original_host() -> None:
    backend, resolver = RecordingBackend(), Rebinding()
    async with outbound.client(resolver=resolver, backend=backend) as http:
        with pytest.raises(httpx.ConnectError):
            await http.get("https://hooks.example/x")
    assert backend.connected == [(PUBLIC, 443)]
    assert backend.server_hostnames == ["hooks.example"]


async def test_a_name_with_any_internal_address_is_refused_before_connecting() -> None:
    backend = RecordingBackend()
    async with outbound.client(resolver=fixed(PUBLIC, "10.0.0.7"), backend=backend) as http:
        with pytest.raises(Refused, match="10.0.0.7"):
            await http.get("http://hooks.example/x")
    assert backend.connected == []


async def test_policy_is_per_call_and_public_without_one() -> None:
    backend = RecordingBackend()
    async with outbound.client(resolver=fixed("127.0.0.1"), backend=backend) as http:
        with pytest.raises(Refused, match="loopback"):
            await http.get("http://receiver.test:9/x")
        with pytest.raises(Refused, match="loopback"):
            await http.get("http://receiver.test:9/x", extensions=outbound.reach(Networks.PRIVATE))
        everything = outbound.reach(Networks.ALL)
        allowed = await http.get("http://receiver.test:9/x", extensions=everything)
    assert allowed.status_code == 204
    assert backend.connected == [("127.0.0.1", 9)]


async def test_a_name_that_does_not_resolve_is_refused() -> None:
    async def nowhere(host: str) -> list[str]:
        raise OSError("no such host")

    with pytest.raises(Refused, match="does not resolve"):
        await outbound.check("http://nowhere.test/", Networks.PUBLIC, nowhere)
