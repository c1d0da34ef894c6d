"""A client generated from the committed OpenAPI document (openapi-python-client) is one a
caller would keep: no anonymous `*Type0*` classes, typed enums, and a failover and failback
through its typed functions against the running API, the failback's body left out."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from tests.backends import backends
from tests.conftest import ADMIN_TOKEN, BACKEND
from tests.helpers import pair_body
from tests.stack import ROOT, Stack

COMMITTED = ROOT / "openapi" / "openapi.json"
GENERATOR = Path(sys.executable).parent / "openapi-python-client"
PACKAGE = "tandem_generated_client"


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The generated package's directory, importable as PACKAGE (first backend's pass only:
    neither the document nor the client depends on the database)."""
    first = backends()[0]
    if first != BACKEND:
        pytest.skip(f"independent of the database backend; runs in the {first} pass only")
    root = tmp_path_factory.mktemp("client")
    config = root / "config.yaml"
    config.write_text("post_hooks: []\n")  # no formatter run over the generated code
    package = root / PACKAGE
    run = subprocess.run(
        [
            str(GENERATOR),
            "generate",
            "--path",
            str(COMMITTED),
            "--output-path",
            str(package),
            "--meta",
            "none",
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    # Any warning means part of the document was left out of the client.
    assert "Warning" not in run.stdout + run.stderr, run.stdout + run.stderr
    sys.path.insert(0, str(root))
    try:
        yield package
    finally:
        sys.path.remove(str(root))
        for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def _module(name: str) -> ModuleType:
    return importlib.import_module(f"{PACKAGE}.{name}")


def test_no_anonymous_type_classes(generated: Path) -> None:
    """A `FooBarType0` class is the generator naming an inline schema it could not place: an
    `anyOf` of an object and null, or of two shapes. There are none."""
    anonymous = [
        f"{path.relative_to(generated)}: {match}"
        for path in generated.rglob("*.py")
        for match in re.findall(r"^class (\w*Type\d\w*)", path.read_text(), re.MULTILINE)
    ]
    assert not anonymous, anonymous
    models = _module("models")
    for name in ("ClusterState", "OperationStatus", "OperationKind", "StepStatus", "Role"):
        assert hasattr(models, name), name
    # Every event type has its own class, and the functions have the names a person types.
    assert hasattr(models, "OperationFailedEvent") and hasattr(models, "FailedData")
    for module in ("operations.failover", "operations.failback", "clusters.register_pair"):
        _module(f"api.{module}")


def _wait_done(get_operation: Any, client: Any, operation_id: str) -> Any:
    deadline = time.monotonic() + 90
    while True:
        operation = get_operation.sync(operation_id, client=client, wait=30)
        if operation.done or time.monotonic() > deadline:
            return operation


def test_failover_and_failback_through_the_generated_client(
    generated: Path, live_stack: Stack
) -> None:
    client_module = _module("client")
    models = _module("models")
    register_pair = _module("api.clusters.register_pair")
    get_pair = _module("api.clusters.get_pair")
    failover = _module("api.operations.failover")
    failback = _module("api.operations.failback")
    get_operation = _module("api.operations.get_operation")

    client = client_module.AuthenticatedClient(
        base_url=live_stack.base_url,
        token=ADMIN_TOKEN,
        raise_on_unexpected_status=True,
        timeout=httpx.Timeout(60.0),
    )
    with client:
        pair = register_pair.sync(client=client, body=models.ClusterCreate.from_dict(pair_body()))
        assert isinstance(pair, models.ClusterCreated), pair
        assert pair.state is models.ClusterState.PRIMARY_ACTIVE
        assert pair.allowed_actions == [models.PairAction.FAILOVER]

        started = failover.sync(
            pair.id,
            client=client,
            body=models.OperationRequest(reason="generated client", mode=models.Mode.PLANNED),
            idempotency_key=uuid.uuid4().hex,
        )
        assert isinstance(started, models.OperationOut), started
        assert started.kind is models.OperationKind.FAILOVER
        assert started.target_state is models.ClusterState.SECONDARY_ACTIVE
        done = _wait_done(get_operation, client, started.id)
        assert done.status is models.OperationStatus.SUCCEEDED, done
        assert all(
            step.status in (models.StepStatus.SUCCEEDED, models.StepStatus.SKIPPED)
            for step in done.steps
        )
        after = get_pair.sync(pair.id, client=client)
        assert after.state is models.ClusterState.SECONDARY_ACTIVE

        # No body at all: the generated function omits it and the server takes the defaults.
        back = failback.sync(pair.id, client=client, idempotency_key=uuid.uuid4().hex)
        assert isinstance(back, models.OperationOut), back
        assert back.kind is models.OperationKind.FAILBACK
        assert back.mode is models.Mode.PLANNED
        done = _wait_done(get_operation, client, back.id)
        assert done.status is models.OperationStatus.SUCCEEDED, done
        final = get_pair.sync(pair.id, client=client)
        assert final.state is models.ClusterState.PRIMARY_ACTIVE
        assert final.needs_attention is False
