"""The web page's sessions: a cookie that stands for a token, and the CSRF token of forms.

The cookie holds 32 random bytes; the database keeps their SHA-256, the token the person
pasted (encrypted with the pair-secret keys, so that the page can call the API as them) and
a CSRF token. Every API call the page makes checks the token again, so a revoked token ends
its sessions at once; signing out deletes the row.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from cryptography.fernet import InvalidToken, MultiFernet
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.access.models import UiSession
from app.columns import utcnow
from app.db import unit_of_work

SESSION_COOKIE = "tandem_session"
SESSION_TTL = timedelta(hours=12)


def session_digest(cookie: str) -> str:
    return hashlib.sha256(cookie.encode()).hexdigest()


@dataclass(frozen=True)
class SignedIn:
    token: str
    token_id: str
    csrf_token: str


async def start(
    sessions: async_sessionmaker[AsyncSession], cipher: MultiFernet, token: str, token_id: str
) -> tuple[str, str]:
    """A new session for a token already checked: (cookie value, CSRF token)."""
    cookie = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    now = utcnow()
    async with unit_of_work(sessions) as session:
        # Expired sessions go when someone signs in; nothing else needs them.
        await session.execute(delete(UiSession).where(UiSession.expires_at <= now))  # type: ignore[arg-type]
        session.add(
            UiSession(
                id=session_digest(cookie),
                token_id=token_id,
                token_ciphertext=cipher.encrypt(token.encode()).decode(),
                csrf_token=csrf,
                created_at=now,
                expires_at=now + SESSION_TTL,
            )
        )
    return cookie, csrf


async def find(
    sessions: async_sessionmaker[AsyncSession], cipher: MultiFernet, cookie: str | None
) -> SignedIn | None:
    """The session a cookie stands for, or None (unknown, signed out, expired)."""
    if not cookie or len(cookie) > 100:
        return None
    async with unit_of_work(sessions) as session:
        row = await session.get(UiSession, session_digest(cookie))
        if row is None or row.expires_at <= utcnow():
            return None
        try:
            token = cipher.decrypt(row.token_ciphertext.encode()).decode()
        except InvalidToken:  # the keys changed and the old one was dropped: sign in again
            return None
        return SignedIn(token=token, token_id=row.token_id, csrf_token=row.csrf_token)


async def end(sessions: async_sessionmaker[AsyncSession], cookie: str | None) -> None:
    if not cookie:
        return
    async with unit_of_work(sessions) as session:
        await session.execute(delete(UiSession).where(UiSession.id == session_digest(cookie)))  # type: ignore[arg-type]
