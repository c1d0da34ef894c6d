"""Refuse webhook URLs that reach loopback, private, link-local or other internal
addresses (unless TANDEM_WEBHOOK_ALLOW_PRIVATE). Checked when an endpoint is saved and
again, after DNS resolution, before every attempt."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit


class UnsafeURL(ValueError):
    pass


def _internal(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def parse(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise UnsafeURL("the URL must be http or https")
    if not parts.hostname:
        raise UnsafeURL("the URL has no host")
    if parts.username or parts.password:
        raise UnsafeURL("credentials in the URL are not allowed")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise UnsafeURL("the URL's port is not valid") from None
    return parts.hostname, port


async def check(url: str, allow_private: bool) -> None:
    host, port = parse(url)
    if allow_private:
        return
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise UnsafeURL(f"the host {host!r} does not resolve") from None
    for info in infos:
        address = str(info[4][0])
        if _internal(address):
            raise UnsafeURL(
                f"{host} resolves to {address}, an internal address; set "
                "TANDEM_WEBHOOK_ALLOW_PRIVATE to allow it"
            )
