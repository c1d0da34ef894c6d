"""Print the OpenAPI document the code generates (`make openapi` commits it)."""

from __future__ import annotations

import json
from typing import Any

from app.config import Settings
from app.main import create_app


def generate() -> dict[str, Any]:
    return create_app(Settings(redis_url="redis://unused")).openapi()


def render() -> str:
    return json.dumps(generate(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    print(render(), end="")
