from __future__ import annotations

from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict

T = TypeVar("T")

# PostgreSQL text cannot hold NUL (0x00): a string input with one is invalid (422), never a
# database error (500).
NO_NUL = r"^[^\x00]*$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_page_token: str | None = None
