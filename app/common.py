from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict

T = TypeVar("T")

# PostgreSQL text cannot hold NUL (0x00): a string input with one is invalid (422), never a
# database error (500).
NO_NUL = r"^[^\x00]*$"


def _json_number(value: Any) -> Any:
    if isinstance(value, bool | str):
        raise ValueError("must be a JSON number")
    return value


# Numbers in a request body are JSON numbers: pydantic alone would also take `true` (as 1) and
# "5", which the document (`type: integer`) refuses; 5.0 stays an integer, as in JSON Schema.
# Last in an Annotated, after the constraints: before them, pydantic cannot put them in the
# document (it would print `"ge": 0` instead of `"minimum": 0`).
JSON_NUMBER = BeforeValidator(_json_number)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_page_token: str | None = None
