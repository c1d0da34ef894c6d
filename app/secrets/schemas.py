from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, Field

from app.common import Strict

# The names `{"$secret": "name"}` may use; the same rule as the path's.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
# A password, a token, a DSN, a PEM key: all fit.
VALUE_MAX_BYTES = 8192


def _fits(value: str) -> str:
    # Messages name the rule, never the value: a refusal is logged and audited.
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError("the value is not valid Unicode text (a lone surrogate)") from None
    if size > VALUE_MAX_BYTES:
        raise ValueError(f"the value is longer than {VALUE_MAX_BYTES} bytes in UTF-8")
    return value


class SecretPut(Strict):
    value: Annotated[str, Field(min_length=1), AfterValidator(_fits)] = Field(
        description=f"The secret's value, 1 to {VALUE_MAX_BYTES} bytes in UTF-8. Write-only: "
        "stored encrypted and never shown back."
    )


class SecretOut(Strict):
    name: str
    created_at: datetime
    updated_at: datetime = Field(description="When the value was last put")
