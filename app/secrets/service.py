"""Pair secrets: put, list, read the metadata of, delete; and resolve for actions.

A value is encrypted before it is stored and decrypted only for an action that names it
(`SecretStore`); nothing here returns a value to a route, and no message holds one.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from app.actions.base import ActionFailed
from app.clusters import service as clusters
from app.columns import utcnow
from app.db import unit_of_work
from app.errors import BadRequest, NotFound
from app.pagination import decode_token, encode_token, storable_text
from app.secrets import crypto
from app.secrets.crypto import InvalidToken, MultiFernet
from app.secrets.models import PairSecret
from app.secrets.schemas import SecretOut

# Rows re-encrypted per transaction by `rotate`.
ROTATE_BATCH = 200


def render(row: PairSecret) -> SecretOut:
    return SecretOut(name=row.name, created_at=row.created_at, updated_at=row.updated_at)


def _not_set(cluster_id: str, name: str) -> NotFound:
    return NotFound(f"secret {name!r} is not set on cluster {cluster_id}", secret=name)


async def put(
    session: AsyncSession, keys: MultiFernet, org_id: str, cluster_id: str, name: str, value: str
) -> tuple[SecretOut, bool]:
    """Set the secret `name` of the pair; True when it is new, False when it was replaced."""
    ciphertext = crypto.encrypt(keys, value)
    # The pair's row lock: a pair being deleted cannot be left with a secret put meanwhile,
    # and two puts of one new name queue rather than collide.
    await clusters.locked(session, org_id, cluster_id)
    row = await session.get(PairSecret, (cluster_id, name), populate_existing=True)
    now = utcnow()
    created = row is None
    if row is None:
        row = PairSecret(
            cluster_id=cluster_id,
            name=name,
            org_id=org_id,
            ciphertext=ciphertext,
            created_at=now,
            updated_at=now,
        )
        session.add(row)
    else:
        row.ciphertext = ciphertext
        row.updated_at = now
    await session.flush()
    return render(row), created


async def list_secrets(
    session: AsyncSession, org_id: str, cluster_id: str, page_size: int, page_token: str | None
) -> tuple[list[SecretOut], str | None]:
    """The pair's secrets by name (never their values)."""
    await clusters.get(session, org_id, cluster_id)
    query = select(
        col(PairSecret.name), col(PairSecret.created_at), col(PairSecret.updated_at)
    ).where(col(PairSecret.cluster_id) == cluster_id)
    after = decode_token(page_token, 1)
    if after is not None:
        if not storable_text(after[0]):
            raise BadRequest("page_token is not a token this service issued")
        query = query.where(col(PairSecret.name) > after[0])
    rows = (await session.execute(query.order_by(col(PairSecret.name)).limit(page_size + 1))).all()
    items = [SecretOut(name=r.name, created_at=r.created_at, updated_at=r.updated_at) for r in rows]
    more = len(items) > page_size
    items = items[:page_size]
    return items, encode_token([items[-1].name]) if more else None


async def get(session: AsyncSession, org_id: str, cluster_id: str, name: str) -> SecretOut:
    await clusters.get(session, org_id, cluster_id)
    row = (
        await session.execute(
            select(
                col(PairSecret.name), col(PairSecret.created_at), col(PairSecret.updated_at)
            ).where(col(PairSecret.cluster_id) == cluster_id, col(PairSecret.name) == name)
        )
    ).first()
    if row is None:
        raise _not_set(cluster_id, name)
    return SecretOut(name=row.name, created_at=row.created_at, updated_at=row.updated_at)


async def remove(session: AsyncSession, org_id: str, cluster_id: str, name: str) -> None:
    await clusters.locked(session, org_id, cluster_id)
    result = await session.execute(
        delete(PairSecret).where(
            col(PairSecret.cluster_id) == cluster_id, col(PairSecret.name) == name
        )
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        raise _not_set(cluster_id, name)


async def missing(session: AsyncSession, cluster_id: str, names: Iterable[str]) -> list[str]:
    """Those of `names` that are not set on the pair, in the order given, once each."""
    wanted = list(dict.fromkeys(names))
    if not wanted:
        return []
    present = set(
        await session.scalars(
            select(col(PairSecret.name)).where(
                col(PairSecret.cluster_id) == cluster_id, col(PairSecret.name).in_(wanted)
            )
        )
    )
    return [name for name in wanted if name not in present]


class SecretStore:
    """The secret resolver of app.actions.base (`SecretResolver`): (pair id, name) -> value.

    Each call reads in a short transaction of its own, never the caller's."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], keys: MultiFernet) -> None:
        self.sessions = sessions
        self.keys = keys

    async def __call__(self, cluster_id: str, name: str) -> str:
        async with unit_of_work(self.sessions) as session:
            ciphertext = await session.scalar(
                select(col(PairSecret.ciphertext)).where(
                    col(PairSecret.cluster_id) == cluster_id, col(PairSecret.name) == name
                )
            )
        if ciphertext is None:
            raise ActionFailed(f"secret {name!r} is not set on this pair", secret=name)
        try:
            return crypto.decrypt(self.keys, ciphertext)
        except InvalidToken:
            raise ActionFailed(
                f"secret {name!r} cannot be decrypted: TANDEM_SECRET_KEY does not hold the key "
                "it was put with",
                secret=name,
            ) from None

    async def missing(self, cluster_id: str, names: Iterable[str]) -> list[str]:
        """`missing`, in a short transaction of its own."""
        async with unit_of_work(self.sessions) as session:
            return await missing(session, cluster_id, names)


async def rotate(
    sessions: async_sessionmaker[AsyncSession], keys: MultiFernet
) -> tuple[int, list[tuple[str, str]]]:
    """Re-encrypt every secret with the first key, a batch per transaction.

    Returns how many were re-encrypted, and the (pair id, name) of those none of the keys
    can decrypt (left as they are)."""
    done, unreadable = 0, []
    after: tuple[str, str] = ("", "")
    while True:
        async with unit_of_work(sessions) as session:
            rows = list(
                await session.scalars(
                    select(PairSecret)
                    .where(
                        (col(PairSecret.cluster_id) > after[0])
                        | (
                            (col(PairSecret.cluster_id) == after[0])
                            & (col(PairSecret.name) > after[1])
                        )
                    )
                    .order_by(col(PairSecret.cluster_id), col(PairSecret.name))
                    .limit(ROTATE_BATCH)
                    .with_for_update()
                )
            )
            for row in rows:
                try:
                    row.ciphertext = crypto.reencrypt(keys, row.ciphertext)
                    done += 1
                except InvalidToken:
                    unreadable.append((row.cluster_id, row.name))
            await session.flush()
        if len(rows) < ROTATE_BATCH:
            return done, unreadable
        after = (rows[-1].cluster_id, rows[-1].name)
