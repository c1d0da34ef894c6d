"""The `postgres` action: fail a PostgreSQL primary over to its streaming standby
(DESIGN.md section 10).

It works from the operation's source to its target: in a failover `primary_dsn` is the
source and `secondary_dsn` the target, in a failback the reverse, so one plan serves both.
Operations (`op`):
- `check`: both answer, the source is a primary and the target a standby in recovery of
  the same cluster (system identifier, timeline) streaming WAL; the lag in bytes (WAL
  positions) and seconds (0 once the target has replayed the source's current position,
  else the age of the last transaction it replayed). A forced operation needs the target
  only. Changes nothing; it is also the readiness probe.
- `fence` (undo `unfence`): `default_transaction_read_only` on the source, configuration
  reloaded, and the sessions that may hold writes ended.
- `drain`: until the target has replayed the source's current WAL position. Changes
  nothing.
- `promote`: `pg_promote()` on the target, then until it accepts writes. Output: the LSN
  it was promoted at, its new timeline and `data_loss`. What it measured before promoting
  is kept (app.actions.progress) under the operation and step before `pg_promote()` is
  called, so a repeat after a crash finds the target promoted and answers the same.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

import asyncpg
from pydantic import Field
from sqlalchemy import select
from sqlmodel import col

from app import outbound
from app.actions import progress, templating
from app.actions.base import Action, ActionFailed, NotYet, Output, StepCall
from app.actions.http import SecretRef
from app.clusters.models import Cluster
from app.columns import utcnow
from app.common import Strict
from app.db import unit_of_work

# A drain call waits this long for the target at most before answering "not yet".
DRAIN_CALL_S = 2.0
POLL_S = 0.1
# After pg_promote(): until the target takes writes.
PROMOTE_WAIT_S = 60
SETTING = "SELECT reset_val FROM pg_settings WHERE name = 'default_transaction_read_only'"


class PostgresSettings(Strict):
    kind: Literal["postgres"]
    op: Literal["check", "fence", "unfence", "drain", "promote"]
    primary_dsn: Annotated[str, Field(min_length=1, max_length=2000)] | SecretRef
    secondary_dsn: Annotated[str, Field(min_length=1, max_length=2000)] | SecretRef
    connect_timeout_s: Annotated[float, Field(gt=0, le=60)] = 5.0
    # How often a waiting drain asks again.
    interval_s: Annotated[float, Field(ge=0.05, le=60)] = 1.0


def lsn(text: str | None) -> int | None:
    """A WAL position ('16/B374D848') as a number of bytes."""
    if text is None:
        return None
    high, low = str(text).split("/")
    return (int(high, 16) << 32) + int(low, 16)


def lsn_text(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


class Side:
    """One end of the operation: which setting it came from, where it is."""

    def __init__(self, setting: str, role: str, dsn: str) -> None:
        self.setting, self.role, self.dsn = setting, role, dsn
        parts = urlsplit(dsn) if "://" in dsn else None
        self.host = (parts.hostname if parts else None) or _keyword(dsn, "host") or "localhost"
        port = (parts.port if parts else None) or _keyword(dsn, "port") or 5432
        self.port = int(port)
        self.user = (parts.username if parts else None) or _keyword(dsn, "user") or ""

    def __str__(self) -> str:
        return f"{self.setting} ({self.host}:{self.port}, the {self.role})"


def _keyword(dsn: str, key: str) -> str | None:
    for part in dsn.split():
        name, _, value = part.partition("=")
        if name == key:
            return value
    return None


def lag(source_lsn: int | None, target: dict[str, Any]) -> dict[str, Any]:
    """{"bytes", "seconds", "measured_at"}: what the target has not replayed yet."""
    replayed = lsn(target["replay_lsn"])
    if source_lsn is None or replayed is None:
        return {"bytes": None, "seconds": None, "measured_at": utcnow().isoformat()}
    behind = max(source_lsn - replayed, 0)
    if behind == 0:
        seconds: float | None = 0.0
    elif target["replay_at"] is None:
        seconds = None  # nothing replayed yet: no transaction to take the age of
    else:
        seconds = max((target["now"] - target["replay_at"]).total_seconds(), 0.0)
    return {
        "bytes": behind,
        "seconds": None if seconds is None else round(seconds, 3),
        "measured_at": utcnow().isoformat(),
    }


class PostgresAction(Action):
    kind: ClassVar[str] = "postgres"
    Settings = PostgresSettings

    @classmethod
    def changes_nothing_with(cls, settings: dict[str, Any]) -> bool:
        return settings.get("op") in ("check", "drain")

    @classmethod
    def probes_with(cls, settings: dict[str, Any]) -> bool:
        return settings.get("op") == "check"

    def __init__(self, settings: dict[str, Any], deps: Any) -> None:
        super().__init__(settings, deps)
        self._measured: dict[str, Any] | None = None
        self._secrets: set[str] = set()

    def measurement(self) -> dict[str, Any] | None:
        """The replication lag this instance last measured (readiness keeps it)."""
        return self._measured

    # -- plumbing ------------------------------------------------------------

    async def _sides(self, call: StepCall) -> tuple[PostgresSettings, Side, Side]:
        async def secret(name: str) -> str:
            value = await self.deps.secrets(call.cluster_id, name)
            self._secrets.add(value)
            return value

        settings = PostgresSettings.model_validate(self.settings)
        primary = await templating.render(settings.primary_dsn, call.placeholders(), secret)
        secondary = await templating.render(settings.secondary_dsn, call.placeholders(), secret)
        source = Side("primary_dsn", "source", str(primary))
        target = Side("secondary_dsn", "target", str(secondary))
        if (call.direction or call.kind) == "failback":
            source = Side("secondary_dsn", "source", str(secondary))
            target = Side("primary_dsn", "target", str(primary))
        return settings, source, target

    def _scrub(self, text: str) -> str:
        for value in self._secrets:
            if value:
                text = text.replace(value, "***")
        return text

    async def _connect(self, side: Side, timeout_s: float) -> asyncpg.Connection:
        try:
            addresses = await outbound.resolve(side.host, self.deps.networks)
        except outbound.Refused as exc:
            raise ActionFailed(f"{side} is not reachable from here: {exc}") from None
        try:
            # To the address that was checked, not to a second resolution of the name.
            conn = await asyncpg.connect(
                side.dsn, host=addresses[0], port=side.port, timeout=timeout_s
            )
            # This session writes (ALTER SYSTEM) on a source it fenced itself.
            await conn.execute("SET default_transaction_read_only = off")
            return conn
        except (
            asyncpg.InvalidPasswordError,
            asyncpg.InvalidAuthorizationSpecificationError,
        ) as exc:
            raise ActionFailed(
                f"{side}: the credentials were refused ({self._scrub(str(exc))})"
            ) from None
        except asyncpg.InvalidCatalogNameError as exc:
            raise ActionFailed(f"{side}: {self._scrub(str(exc))}") from None
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise ActionFailed(
                f"{side} does not answer: {type(exc).__name__} {self._scrub(str(exc))}".strip(),
                transient=True,
            ) from None

    async def _run(self, call: StepCall, work: Any) -> Any:
        try:
            return await work
        except ActionFailed as exc:
            exc.message = self._scrub(exc.message)
            raise
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise ActionFailed(
                f"{type(exc).__name__}: {self._scrub(str(exc))}", transient=True
            ) from None

    # -- what each side says about itself ---------------------------------

    @staticmethod
    async def _source_state(conn: asyncpg.Connection) -> dict[str, Any]:
        row = await conn.fetchrow(
            "SELECT pg_is_in_recovery() AS in_recovery,"
            " (SELECT system_identifier FROM pg_control_system()) AS system_id,"
            " CASE WHEN pg_is_in_recovery() THEN NULL"
            "  ELSE pg_current_wal_flush_lsn()::text END AS lsn,"
            " CASE WHEN pg_is_in_recovery() THEN NULL"
            "  ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int"
            "  END AS timeline,"
            " current_setting('default_transaction_read_only') = 'on' AS fenced"
        )
        return dict(row)

    @staticmethod
    async def _target_state(conn: asyncpg.Connection) -> dict[str, Any]:
        row = await conn.fetchrow(
            "SELECT pg_is_in_recovery() AS in_recovery,"
            " (SELECT system_identifier FROM pg_control_system()) AS system_id,"
            " pg_last_wal_replay_lsn()::text AS replay_lsn,"
            " pg_last_wal_receive_lsn()::text AS receive_lsn,"
            " pg_last_xact_replay_timestamp() AS replay_at, now() AS now,"
            " (SELECT status FROM pg_stat_wal_receiver LIMIT 1) AS receiver,"
            " (SELECT received_tli FROM pg_stat_wal_receiver LIMIT 1) AS receiver_tli"
        )
        return dict(row)

    def _roles(
        self,
        source: Side,
        target: Side,
        src: dict[str, Any] | None,
        tgt: dict[str, Any],
    ) -> None:
        """Raise naming the first mistake: a wrong role, another cluster, no streaming."""
        if src is not None and src["in_recovery"]:
            raise ActionFailed(f"{source} is in recovery: it is a standby, not a primary")
        if not tgt["in_recovery"]:
            raise ActionFailed(f"{target} is not in recovery: it is a primary, not a standby")
        if src is None:
            return
        if src["system_id"] != tgt["system_id"]:
            raise ActionFailed(
                f"{target} does not replicate from the source: it belongs to another cluster "
                f"(system identifier {tgt['system_id']}, the source's is {src['system_id']})"
            )
        if tgt["receiver"] != "streaming":
            raise ActionFailed(
                f"{target} does not replicate from the source: its WAL receiver is "
                f"{tgt['receiver'] or 'not running'}"
            )
        if tgt["receiver_tli"] is not None and tgt["receiver_tli"] != src["timeline"]:
            raise ActionFailed(
                f"{target} does not replicate from the source: it receives timeline "
                f"{tgt['receiver_tli']}, the source is on timeline {src['timeline']}"
            )

    async def _measure(
        self, settings: PostgresSettings, source: Side, target: Side, need_source: bool
    ) -> dict[str, Any]:
        """Both sides' roles checked and the lag measured (the source only when it
        answers, if it is not needed)."""
        src: dict[str, Any] | None = None
        try:
            conn = await self._connect(source, settings.connect_timeout_s)
        except ActionFailed:
            if need_source:
                raise
        else:
            try:
                src = await self._source_state(conn)
            finally:
                await conn.close()
        conn = await self._connect(target, settings.connect_timeout_s)
        try:
            tgt = await self._target_state(conn)
        finally:
            await conn.close()
        self._roles(source, target, src, tgt)
        measured = lag(lsn(src["lsn"]) if src else None, tgt)
        self._measured = measured
        return {
            "source": None if src is None else {"lsn": src["lsn"], "timeline": src["timeline"]},
            "target": {"replay_lsn": tgt["replay_lsn"], "receive_lsn": tgt["receive_lsn"]},
            "lag": measured,
        }

    # -- the operations ------------------------------------------------------

    async def probe(self, call: StepCall) -> tuple[bool, str, int] | None:
        settings, source, target = await self._sides(call)
        if settings.op != "check":
            return None  # the plan's `check` step measures for the steps around it
        started = time.perf_counter()
        try:
            found = await self._run(call, self._measure(settings, source, target, True))
        except ActionFailed as exc:
            return False, exc.message, int((time.perf_counter() - started) * 1000)
        measured = found["lag"]
        seconds = "unknown" if measured["seconds"] is None else f"{measured['seconds']:g} s"
        detail = f"replication lag {measured['bytes']} bytes, {seconds}"
        return True, detail, int((time.perf_counter() - started) * 1000)

    async def do(self, call: StepCall) -> Output | NotYet:
        settings, source, target = await self._sides(call)
        op = settings.op
        if op == "check":
            forced = call.mode == "forced"
            return dict(await self._run(call, self._measure(settings, source, target, not forced)))
        if op == "fence":
            return dict(await self._run(call, self._fence(settings, source, True)))
        if op == "unfence":
            return dict(await self._run(call, self._fence(settings, source, False)))
        if op == "drain":
            result = await self._run(call, self._drain(settings, source, target))
            return result if isinstance(result, NotYet) else dict(result)
        return dict(await self._run(call, self._promote(call, settings, source, target)))

    async def undo(self, call: StepCall) -> Output | NotYet:
        # The plan's undo is {"op": "unfence"}, called as an undo; fence's undo is the same.
        settings, source, _ = await self._sides(call)
        if settings.op not in ("fence", "unfence"):
            raise ActionFailed(f"postgres {settings.op} has no undo (unfence undoes fence)")
        return dict(await self._run(call, self._fence(settings, source, False)))

    async def _fence(self, settings: PostgresSettings, source: Side, on: bool) -> Output:
        conn = await self._connect(source, settings.connect_timeout_s)
        try:
            if await conn.fetchval("SELECT pg_is_in_recovery()"):
                raise ActionFailed(f"{source} is in recovery: it is a standby, not a primary")
            if on:
                await conn.execute("ALTER SYSTEM SET default_transaction_read_only = on")
            else:
                await conn.execute("ALTER SYSTEM RESET default_transaction_read_only")
            await conn.execute("SELECT pg_reload_conf()")
            wanted = "on" if on else "off"
            # The reload is asynchronous: this session seeing it (as the value a RESET would
            # give, its own being set) means the postmaster has read the file again and
            # signalled every backend.
            deadline = time.monotonic() + 10
            while await conn.fetchval(SETTING) != wanted:
                if time.monotonic() > deadline:
                    raise ActionFailed(
                        f"{source}: default_transaction_read_only is not {wanted} after a reload",
                        transient=True,
                    )
                await asyncio.sleep(0.02)
            ended = 0
            if on:
                # A transaction begun before the reload keeps its read-write state: end
                # every session in a transaction (or holding a transaction id).
                ended = int(
                    await conn.fetchval(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                        " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
                        " AND (backend_xid IS NOT NULL OR xact_start IS NOT NULL)"
                    )
                )
            position = await conn.fetchval("SELECT pg_current_wal_flush_lsn()::text")
        finally:
            await conn.close()
        return {"fenced": on, "lsn": position, "ended_sessions": ended}

    async def _drain(
        self, settings: PostgresSettings, source: Side, target: Side
    ) -> Output | NotYet:
        src_conn = await self._connect(source, settings.connect_timeout_s)
        try:
            tgt_conn = await self._connect(target, settings.connect_timeout_s)
            try:
                until = time.monotonic() + DRAIN_CALL_S
                while True:
                    src = await self._source_state(src_conn)
                    tgt = await self._target_state(tgt_conn)
                    self._roles(source, target, src, tgt)
                    wanted, replayed = lsn(src["lsn"]), lsn(tgt["replay_lsn"])
                    assert wanted is not None
                    if replayed is not None and replayed >= wanted:
                        return {
                            "drained": True,
                            "lsn": src["lsn"],
                            "replay_lsn": tgt["replay_lsn"],
                        }
                    if time.monotonic() >= until:
                        behind = wanted - (replayed or 0)
                        return NotYet(
                            utcnow() + timedelta(seconds=settings.interval_s),
                            f"the target is {behind} bytes behind {src['lsn']}",
                        )
                    await asyncio.sleep(POLL_S)
            finally:
                await tgt_conn.close()
        finally:
            await src_conn.close()

    async def _promote(
        self, call: StepCall, settings: PostgresSettings, source: Side, target: Side
    ) -> Output:
        # One memory per operation and step, whatever the attempt: a retry after a crash
        # or an operator's retry finds what the first call kept.
        key = f"{call.operation_id}:{call.step}:promote" + (
            "" if call.item is None else f":{call.item}"
        )
        kept = await progress.recall(self.deps.sessions, key) or {}
        if isinstance(kept.get("output"), dict):
            return dict(kept["output"])
        conn = await self._connect(target, settings.connect_timeout_s)
        try:
            state = await self._target_state(conn)
            if state["in_recovery"]:
                if "data_loss" not in kept:
                    loss = await self._data_loss(call, settings, source, state)
                    kept = {"lsn": state["replay_lsn"], "data_loss": loss}
                    await progress.remember(self.deps.sessions, key, call.cluster_id, kept)
                await conn.fetchval("SELECT pg_promote(true, $1)", PROMOTE_WAIT_S)
            elif "data_loss" not in kept:
                raise ActionFailed(
                    f"{target} is not in recovery and this operation did not promote it: "
                    "it is a primary already"
                )
            timeline = await self._until_writable(conn, target)
        finally:
            await conn.close()
        output = {
            "promoted": True,
            "lsn": kept["lsn"],
            "timeline": timeline,
            "data_loss": kept["data_loss"],
        }
        await progress.remember(
            self.deps.sessions, key, call.cluster_id, {**kept, "output": output}
        )
        return output

    async def _until_writable(self, conn: asyncpg.Connection, target: Side) -> int:
        """The promoted target's timeline, once it takes writes (a fence copied into its
        configuration, by a base backup of a fenced primary, is lifted)."""
        deadline = time.monotonic() + PROMOTE_WAIT_S
        while await conn.fetchval("SELECT pg_is_in_recovery()"):
            if time.monotonic() > deadline:
                raise ActionFailed(f"{target} is still in recovery after pg_promote()")
            await asyncio.sleep(POLL_S)
        if await conn.fetchval(SETTING) == "on":
            await conn.execute("ALTER SYSTEM RESET default_transaction_read_only")
            await conn.execute("SELECT pg_reload_conf()")
        async with conn.transaction(readonly=False):
            # A transaction id is assigned only where writes are taken.
            await conn.fetchval("SELECT pg_current_xact_id()")
        return int(
            await conn.fetchval(
                "SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int"
            )
        )

    async def _data_loss(
        self,
        call: StepCall,
        settings: PostgresSettings,
        source: Side,
        target: dict[str, Any],
    ) -> dict[str, Any]:
        """What promoting now loses: measured against the source when it answers (zero
        after a drain), else the last lag measured on this pair."""
        timeout = min(settings.connect_timeout_s, 2.0)
        try:
            conn = await self._connect(source, timeout)
        except ActionFailed:
            conn = None
        if conn is not None:
            try:
                src = await self._source_state(conn)
            finally:
                await conn.close()
            if not src["in_recovery"]:
                measured = lag(lsn(src["lsn"]), target)
                return {**measured, "source": "measured"}
        last = await last_lag(self.deps, call.cluster_id, call.kind)
        if last is None:
            return {"bytes": None, "seconds": None, "measured_at": None, "source": "unknown"}
        return {**last, "source": "last_measured"}


async def last_lag(deps: Any, cluster_id: str, kind: str) -> dict[str, Any] | None:
    """The replication lag readiness last measured on the pair for this operation kind."""
    async with unit_of_work(deps.sessions) as session:
        readiness = await session.scalar(
            select(col(Cluster.readiness)).where(col(Cluster.id) == cluster_id)
        )
    found = (readiness or {}).get("replication_lag")
    if not isinstance(found, dict) or found.get("operation") != kind:
        return None
    return {k: found.get(k) for k in ("bytes", "seconds", "measured_at")}
