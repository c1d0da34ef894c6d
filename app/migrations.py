"""Running Alembic from the code, and telling whether a database is at the latest revision."""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from alembic import command

ROOT = Path(__file__).resolve().parent.parent


def alembic_config(database_url: str) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "alembic"))
    config.attributes["database_url"] = database_url
    config.attributes["configure_logger"] = False
    return config


def upgrade_to_head(database_url: str) -> None:
    """Synchronous: call it before an event loop runs (it starts its own)."""
    command.upgrade(alembic_config(database_url), "head")


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head


def schema_usable(revision: str | None, expected: str) -> bool:
    """Whether this code may run on a database at `revision`: its own head, or a newer one.

    Migrations only add (columns with defaults or nullable, tables, indexes) for at least
    one release, so the processes of the previous release keep working while a rolling
    upgrade migrates first and replaces them afterwards. An older schema is never usable:
    `tandem migrate` first. Revisions are numbered 0001, 0002, ...
    """
    if revision is None:
        return False
    if revision == expected:
        return True
    return revision.isdigit() and expected.isdigit() and int(revision) > int(expected)


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        try:
            return await conn.scalar(text("SELECT version_num FROM alembic_version"))
        except Exception:
            return None
