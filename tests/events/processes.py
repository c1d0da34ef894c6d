"""An API process of a test's own, beside the stack's, with settings of its own."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path

from tests.stack import TANDEM, Process, Stack, free_port


@contextlib.contextmanager
def api_process(stack: Stack, log_dir: Path, name: str, **env: str) -> Iterator[str]:
    """Serve the stack's database and Redis from one more API process; yields its base URL."""
    port = free_port()
    process = Process(
        name,
        [*TANDEM, "serve", "--no-worker", "--no-migrate", "--port", str(port)],
        {**stack.env, **env},
        log_dir,
    )
    own = Stack(stack.env, log_dir, workers=0)
    own.api, own.port, own.base_url = process, port, f"http://127.0.0.1:{port}"
    try:
        own.wait_ready()
        yield own.base_url
    finally:
        process.kill(signal.SIGTERM)
