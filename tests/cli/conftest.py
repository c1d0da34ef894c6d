"""Running `tandem` as a person does: a child process with TANDEM_URL and TANDEM_TOKEN."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import ADMIN_TOKEN
from tests.stack import ROOT, Stack

TANDEM = [sys.executable, "-m", "app.cli"]
Tandem = Callable[..., subprocess.CompletedProcess[str]]


def cli_env(stack: Stack, token: str = ADMIN_TOKEN) -> dict[str, str]:
    # Wide enough that rich tables do not wrap names in a pipe.
    return {**os.environ, "TANDEM_URL": stack.base_url, "TANDEM_TOKEN": token, "COLUMNS": "160"}


@pytest.fixture
def tandem(live_stack: Stack) -> Tandem:
    """`tandem ARGS...` against the test stack; its output, status and streams."""

    def run(
        *args: str, token: str = ADMIN_TOKEN, **kwargs: Any
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*TANDEM, *args],
            env=cli_env(live_stack, token),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=150,
            **kwargs,
        )

    return run
