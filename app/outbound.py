"""Calls to URLs that users configure (webhooks, runbook actions): which addresses they
may reach, and an httpx transport that connects only to an address it has checked.

The transport resolves a host once, checks every address it resolved to, and connects to
a checked one; TLS still names (SNI) and verifies the original host, and the Host header
is the URL's. A name that resolves to a public address at check time and to 127.0.0.1 a
moment later (DNS rebinding) therefore never reaches 127.0.0.1.

What a call may reach is a `Networks` policy, given per request
(`extensions=outbound.reach(Networks.ALL)`); without one, public addresses only.
Link-local addresses (the cloud metadata service) are refused whatever the policy, and
IPv6 forms that carry an IPv4 address (mapped, compatible, NAT64, 6to4, Teredo) are
judged by the IPv4 address they carry.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpcore
import httpx

IP = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str], Awaitable[list[str]]]

EXTENSION = "tandem.networks"


class Networks(StrEnum):
    """What a call may reach: `public` only, `private` ranges too, or `all` (loopback)."""

    PUBLIC = "public"
    PRIVATE = "private"
    ALL = "all"


class Refused(httpx.TransportError):
    """The URL or an address it resolves to is not allowed: never retried."""

    def __init__(self, message: str) -> None:
        super().__init__(message)


def reach(networks: Networks) -> dict[str, Any]:
    """Request extensions that let one call reach `networks`."""
    return {EXTENSION: networks}


# -- addresses ----------------------------------------------------------------------

_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
_SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")
_TEREDO = ipaddress.IPv6Network("2001::/32")


def _v4(value: int) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(value & 0xFFFFFFFF)


def _nat64_local(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """Every IPv4 address a local-use NAT64 prefix (RFC 8215) may carry: its length is
    the operator's choice, so each RFC 6052 layout that fits in the /48 is tried."""
    bits = int(ip)
    # RFC 6052: bits 64-71 are zero; the IPv4 address skips them.
    layouts = {  # prefix length: the IPv4 address, the usual /96 first
        96: bits & 0xFFFFFFFF,
        64: (bits >> 24) & 0xFFFFFFFF,
        56: ((bits >> 64) & 0xFF) << 24 | ((bits >> 32) & 0xFFFFFF),
        48: ((bits >> 64) & 0xFFFF) << 16 | ((bits >> 40) & 0xFFFF),
    }
    # An all-zero reading only says that layout is not the one in use.
    return [_v4(v) for v in layouts.values() if v & 0xFFFFFFFF]


def embedded(ip: IP) -> list[IP]:
    """The address itself and every IPv4 address its IPv6 form carries."""
    if isinstance(ip, ipaddress.IPv4Address):
        return [ip]
    found: list[IP] = [ip]
    if ip.ipv4_mapped is not None:
        found.append(ip.ipv4_mapped)
    elif (ip in _IPV4_COMPATIBLE and int(ip) > 1) or ip in _NAT64_WELL_KNOWN:
        found.append(_v4(int(ip)))  # (:: and ::1 are themselves, not IPv4-compatible)
    elif ip in _NAT64_LOCAL:
        found.extend(_nat64_local(ip))
    elif ip in _SIX_TO_FOUR:
        found.append(_v4(int(ip) >> 80))
    elif ip in _TEREDO and ip.teredo is not None:
        found.extend(ip.teredo)  # the server and the (de-obfuscated) client
    return found


def _refusal(ip: IP, networks: Networks) -> str | None:
    if ip.is_link_local:
        return "a link-local address (refused always: it reaches the metadata service)"
    if ip.is_multicast or ip.is_unspecified:
        return "not a unicast address"
    if ip.is_loopback:
        return None if networks == Networks.ALL else "a loopback address"
    if not ip.is_global:
        return None if networks != Networks.PUBLIC else "a private or reserved address"
    return None


def refusal(address: str, networks: Networks) -> str | None:
    """Why `networks` may not reach `address`, or None when it may."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return "not an IP address"
    own, *carried_ones = embedded(ip)
    # What an address carries first: its reason names the address a packet would reach.
    for carried in [*carried_ones, own]:
        reason = _refusal(carried, networks)
        if reason is not None:
            return reason if carried == ip else f"it carries {carried}, {reason}"
    return None


def check_address(host: str, address: str, networks: Networks) -> None:
    reason = refusal(address, networks)
    if reason is not None:
        shown = address if host == address else f"{host} resolves to {address}"
        raise Refused(f"{shown}: {reason}")


def check_url(url: str) -> tuple[str, int]:
    """The host and port of an http(s) URL without credentials; Refused otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise Refused("the URL must be http or https")
    if not parts.hostname:
        raise Refused("the URL has no host")
    if parts.username or parts.password:
        raise Refused("credentials in the URL are not allowed")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise Refused("the URL's port is not valid") from None
    return parts.hostname, port


async def system_resolver(host: str) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def resolve(host: str, networks: Networks, resolver: Resolver = system_resolver) -> list[str]:
    """The addresses `host` stands for, each checked; Refused if any may not be reached."""
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        pass
    else:
        check_address(host, host, networks)
        return [host]
    try:
        addresses = await resolver(host)
    except (OSError, UnicodeError):
        raise Refused(f"the host {host!r} does not resolve") from None
    if not addresses:
        raise Refused(f"the host {host!r} does not resolve")
    for address in addresses:
        check_address(host, address, networks)
    return addresses


async def check(url: str, networks: Networks, resolver: Resolver = system_resolver) -> None:
    """Whether `url` may be called now (when it is saved, say); calls check again."""
    host, _ = check_url(url)
    await resolve(host, networks, resolver)


# -- the transport ------------------------------------------------------------------


class PinnedBackend(httpcore.AsyncNetworkBackend):
    """Resolves and checks the host httpcore asks for, then connects to the checked
    address: the name is never handed to the socket layer to be resolved again."""

    def __init__(
        self, networks: Networks, resolver: Resolver, inner: httpcore.AsyncNetworkBackend
    ) -> None:
        self.networks = networks
        self.resolver = resolver
        self.inner = inner

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's signature)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            with anyio.fail_after(timeout):
                addresses = await resolve(host, self.networks, self.resolver)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} took over {timeout} s") from None
        failure: Exception | None = None
        for address in addresses:
            try:
                return await self.inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's signature)
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise Refused("unix sockets are not reachable from here")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class _PinnedTransport(httpx.AsyncHTTPTransport):
    def __init__(self, backend: PinnedBackend, limits: httpx.Limits, ssl_context: ssl.SSLContext):
        super().__init__(limits=limits, trust_env=False)
        # httpx takes no network backend; its pool, built the same way, does.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=backend,
        )


class GuardedTransport(httpx.AsyncBaseTransport):
    """One connection pool per `Networks` policy, so that a connection opened under a
    looser policy is never reused by a call under a stricter one."""

    def __init__(
        self,
        *,
        resolver: Resolver = system_resolver,
        backend: httpcore.AsyncNetworkBackend | None = None,
        limits: httpx.Limits = httpx.Limits(max_connections=100),
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        inner = backend or httpcore.AnyIOBackend()
        ssl_context = httpx.create_ssl_context(verify=verify, trust_env=False)
        self._transports = {
            networks: _PinnedTransport(
                PinnedBackend(networks, resolver, inner), limits, ssl_context
            )
            for networks in Networks
        }

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        check_url(str(request.url))
        networks = Networks(request.extensions.get(EXTENSION, Networks.PUBLIC))
        return await self._transports[networks].handle_async_request(request)

    async def aclose(self) -> None:
        for transport in self._transports.values():
            await transport.aclose()


def client(
    *,
    resolver: Resolver = system_resolver,
    backend: httpcore.AsyncNetworkBackend | None = None,
    limits: httpx.Limits = httpx.Limits(max_connections=100),
    verify: ssl.SSLContext | bool = True,
) -> httpx.AsyncClient:
    """An httpx client whose every call goes through the guarded transport."""
    transport = GuardedTransport(resolver=resolver, backend=backend, limits=limits, verify=verify)
    return httpx.AsyncClient(
        transport=transport,
        follow_redirects=False,
        trust_env=False,
    )
