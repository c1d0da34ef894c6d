"""Placeholders and secret references in action settings (DESIGN.md sections 8 and 9).

A string setting may hold placeholders such as `{target.region}`; nothing else is
evaluated. Any value may instead be `{"$secret": "name"}`: the pair's secret of that name.
Both are checked when a plan is saved and filled in only when a step is called, so a
secret's value exists only in the call it is sent with.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

SECRET = "$secret"
SECRET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
PLACEHOLDERS = frozenset(
    {
        "pair.name",
        "pair.id",
        "source.region",
        "source.name",
        "target.region",
        "target.name",
        "operation.id",
        "operation.kind",
        "operation.mode",
    }
)


def is_secret(value: Any) -> bool:
    return isinstance(value, dict) and SECRET in value


def problems(value: Any, extra: frozenset[str] = frozenset()) -> list[str]:
    """What is wrong with the placeholders and secret references in `value` (`extra`:
    placeholders allowed there besides the pair's, such as a deployment's `{region}`)."""
    found: list[str] = []
    if is_secret(value):
        name = value[SECRET]
        if set(value) != {SECRET}:
            found.append('a secret reference is exactly {"$secret": "name"}')
        elif not isinstance(name, str) or not SECRET_NAME.match(name):
            found.append(f"{name!r} is not a secret name (letters, digits, _ . -; 1-64)")
    elif isinstance(value, str):
        for name in PLACEHOLDER.findall(value):
            if name not in PLACEHOLDERS and name not in extra:
                found.append(f"unknown placeholder {{{name}}}")
    elif isinstance(value, dict):
        for item in value.values():
            found.extend(problems(item, extra))
    elif isinstance(value, list):
        for item in value:
            found.extend(problems(item, extra))
    return found


def secret_names(value: Any) -> set[str]:
    """The names of the secrets `value` refers to."""
    if is_secret(value):
        return {str(value[SECRET])}
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    names: set[str] = set()
    for item in items:
        names |= secret_names(item)
    return names


def fill_placeholders(text: str, values: dict[str, str]) -> str:
    return PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), text)


async def render(
    value: Any, values: dict[str, str], secret: Callable[[str], Awaitable[str]]
) -> Any:
    """`value` with its placeholders filled and its secret references replaced."""
    if is_secret(value):
        return await secret(str(value[SECRET]))
    if isinstance(value, str):
        return fill_placeholders(value, values)
    if isinstance(value, dict):
        return {key: await render(item, values, secret) for key, item in value.items()}
    if isinstance(value, list):
        return [await render(item, values, secret) for item in value]
    return value
