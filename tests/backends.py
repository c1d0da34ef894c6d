"""Which database backends `make test` runs the suite on, one per line."""

from __future__ import annotations

import os
import socket


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def backends() -> list[str]:
    required = os.environ.get("TANDEM_TEST_REQUIRE_SERVICES") == "1"
    found = ["postgresql"] if required or reachable("127.0.0.1", 5432) else []
    return [*found, "sqlite"]


if __name__ == "__main__":
    print("\n".join(backends()))
