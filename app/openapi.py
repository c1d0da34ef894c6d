"""The OpenAPI document, printed by `python -m app.openapi` (`make openapi` commits it):
FastAPI's, refined by app.apidoc."""

from __future__ import annotations

import json
from typing import Any


def generate() -> dict[str, Any]:
    from app.config import Settings
    from app.main import create_app

    return create_app(Settings(redis_url="redis://unused")).openapi()


def render() -> str:
    return json.dumps(generate(), indent=2, sort_keys=True) + "\n"


__all__ = ["generate", "render"]

if __name__ == "__main__":
    print(render(), end="")
