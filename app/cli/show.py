"""How the incident CLI shows the API's resources to a person: rich tables, and the steps
of an operation as they change (a live table on a terminal, a line per change elsewhere)."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

STYLES = {
    "succeeded": "green",
    "running": "cyan",
    "waiting": "yellow",
    "pending": "dim",
    "queued": "dim",
    "failed": "bold red",
    "cancelling": "yellow",
    "cancelled": "yellow",
    "rolled_back": "magenta",
    "skipped": "dim",
}

# Into a pipe or a file, tables take the width they need (rich would assume 80 columns and
# cut ids short).
WIDE = 240
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else WIDE)
err = Console(
    stderr=True, highlight=False, soft_wrap=True, width=None if sys.stderr.isatty() else WIDE
)


def emit_json(value: Any) -> None:
    """The API's resource as JSON on stdout, nothing else on that line."""
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=False) + "\n")
    sys.stdout.flush()


def status_text(status: str | None) -> Text:
    return Text(status or "-", style=STYLES.get(status or "", ""))


def pairs_table(pairs: list[dict[str, Any]]) -> Table:
    table = Table(title="DR pairs", title_justify="left")
    for column in ("name", "id", "state", "active region", "ready", "attention"):
        # Ids are copied into the next command: never cut short.
        table.add_column(column, no_wrap=column in ("id", "name"))
    for pair in pairs:
        ready = pair.get("ready")
        table.add_row(
            pair["name"],
            pair["id"],
            pair["state"],
            pair["active_region"],
            "-" if ready is None else ("yes" if ready else Text("no", style="red")),
            Text("NEEDS ATTENTION", style="bold red") if pair.get("needs_attention") else "",
        )
    return table


def pair_summary(pair: dict[str, Any], last: dict[str, Any] | None) -> Group:
    primary, secondary = pair["primary"], pair["secondary"]
    lines = [
        Text.assemble(("pair       ", "bold"), f"{pair['name']} ({pair['id']})"),
        Text.assemble(("state      ", "bold"), (pair["state"], "cyan")),
        Text.assemble(("active     ", "bold"), pair["active_region"]),
        Text.assemble(
            ("primary    ", "bold"), f"{primary['name']} {primary['region']} ({primary['cloud']})"
        ),
        Text.assemble(
            ("secondary  ", "bold"),
            f"{secondary['name']} {secondary['region']} ({secondary['cloud']})",
        ),
        Text.assemble(("allowed    ", "bold"), ", ".join(pair.get("allowed_actions", [])) or "-"),
    ]
    if pair.get("ready") is not None:
        lines.append(Text.assemble(("ready      ", "bold"), "yes" if pair["ready"] else "no"))
    if pair.get("needs_attention"):
        lines.append(
            Text(
                "NEEDS ATTENTION: the last operation failed past its point of no "
                "return; retry it (tandem op retry)",
                style="bold red",
            )
        )
    parts: list[Any] = list(lines)
    if last is not None:
        parts.append(Text(""))
        parts.append(operation_view(last))
    return Group(*parts)


def operation_header(op: dict[str, Any]) -> Text:
    progress = op.get("progress") or {}
    header = Text.assemble(
        (f"{op['kind']}", "bold"),
        f" {op.get('mode') or ''} ".replace("  ", " "),
        (op["id"], "bold"),
        "  ",
        status_text(op["status"]),
        f"  {progress.get('completed_steps', 0)}/{progress.get('total_steps', 0)} steps",
    )
    if op.get("needs_attention"):
        header.append("  NEEDS ATTENTION", style="bold red")
    return header


def steps_table(op: dict[str, Any]) -> Table:
    table = Table(box=None, show_header=True, pad_edge=False)
    for column in ("step", "status", "attempts", "note"):
        table.add_column(column)
    for step in op["steps"]:
        table.add_row(
            step["name"], status_text(step["status"]), str(step["attempts"]), step_note(op, step)
        )
    return table


def step_note(op: dict[str, Any], step: dict[str, Any]) -> str:
    if step["status"] == "waiting":
        return f"waiting for approval: tandem op approve {op['id']}"
    error = step.get("error")
    if isinstance(error, dict):
        return str(error.get("detail") or error.get("title") or error.get("code") or "")
    if not step.get("reversible", True) and step["status"] == "pending":
        return "not reversible (point of no return on)"
    return ""


def operation_view(op: dict[str, Any]) -> Group:
    parts: list[Any] = [operation_header(op), steps_table(op)]
    error = op.get("error")
    if isinstance(error, dict):
        parts.append(
            Text(f"error: {error.get('title', '')}: {error.get('detail', '')}", style="red")
        )
    return Group(*parts)


class StepWatch:
    """Shows an operation's steps while it runs. On a terminal a live table; otherwise (a
    pipe, a log, --output json) one line per step change on `console`."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live: Live | None = None
        self.seen: dict[str, tuple[str, int]] = {}
        self.status: str | None = None

    def __enter__(self) -> StepWatch:
        if self.console.is_terminal:
            self.live = Live(console=self.console, refresh_per_second=8, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)

    def update(self, op: dict[str, Any]) -> None:
        if self.live is not None:
            self.live.update(operation_view(op))
            return
        if op["status"] != self.status:
            self.status = op["status"]
            self.console.print(
                Text.assemble(f"{op['kind']} {op['id']}: ", status_text(op["status"]))
            )
        for step in op["steps"]:
            now = (step["status"], step["attempts"])
            if self.seen.get(step["name"]) != now:
                self.seen[step["name"]] = now
                note = step_note(op, step)
                self.console.print(
                    Text.assemble(
                        f"  {step['name']}: ",
                        status_text(step["status"]),
                        f" ({note})" if note else "",
                    )
                )


def dry_run_view(plan: dict[str, Any], pair: dict[str, Any]) -> Group:
    table = Table(
        title=f"dry run: {plan['kind']} ({plan['mode']}) of {pair['name']}", title_justify="left"
    )
    for column in ("step", "actions", "reversible", "skipped", "timeout", "expected"):
        table.add_column(column, no_wrap=column == "step")
    for step in plan["steps"]:
        expected = step.get("expected_duration_s")
        table.add_row(
            step["name"],
            ", ".join(
                str(a) if not isinstance(a, dict) else str(a.get("kind", a))
                for a in step.get("actions", [])
            ),
            "POINT OF NO RETURN"
            if step.get("point_of_no_return")
            else ("yes" if step.get("reversible") else "no"),
            "skipped" if step.get("skipped") else "",
            f"{step['timeout_s']:g} s",
            "unknown" if expected is None else f"{expected:.1f} s",
        )
    total = plan.get("expected_duration_s")
    parts: list[Any] = [
        table,
        Text(
            "expected duration: "
            + ("unknown (no earlier runs)" if total is None else f"{total:.1f} s")
        ),
    ]
    readiness = plan.get("readiness")
    if isinstance(readiness, dict):
        failing = [c for c in readiness.get("checks", []) if not c.get("ok")]
        text = "ready" if readiness.get("ready") else "NOT READY"
        if failing:
            text += ": " + "; ".join(f"{c.get('name')}: {c.get('detail')}" for c in failing)
        parts.append(Text(f"readiness: {text}"))
    if plan.get("replication_lag") is not None:
        parts.append(Text(f"replication lag: {json.dumps(plan['replication_lag'])}"))
    parts.append(Text("nothing was changed", style="dim"))
    return Group(*parts)


def deployments_table(pair: dict[str, Any], items: list[dict[str, Any]]) -> Table:
    table = Table(title=f"deployments of {pair['name']}", title_justify="left")
    for column in ("deployment", "kind", "critical", "region", "health", "detail", "checked"):
        table.add_column(column)
    for item in items:
        result = item.get("last_result") or {}
        if not item.get("has_health_check"):
            health = Text("no check", style="dim")
        elif not result:
            health = Text("not checked", style="dim")
        elif result.get("healthy"):
            health = Text("healthy", style="green")
        else:
            health = Text("needs retry" if result.get("needs_retry") else "unhealthy", style="red")
        table.add_row(
            item["name"],
            item.get("kind") or "-",
            "yes" if item.get("critical") else "no",
            result.get("region", "-"),
            health,
            result.get("detail", ""),
            result.get("checked_at", ""),
        )
    return table


def event_line(event: dict[str, Any]) -> Text:
    data = event.get("data") or {}
    details = " ".join(f"{k}={v}" for k, v in data.items() if v is not None and k != "error")
    if isinstance(data.get("error"), dict):
        details += f" error={data['error'].get('title') or data['error'].get('code')}"
    return Text.assemble(
        (event["created_at"], "dim"),
        " ",
        (event["type"], "bold"),
        f" {event.get('cluster_id') or ''} ",
        details,
    )


def batch_line(batch: dict[str, Any]) -> Text:
    """One line of a batch's progress: its status and its counts."""
    counts = batch["counts"]
    parts = [
        f"{counts[name]} {name}"
        for name in ("succeeded", "running", "pending", "failed", "cancelled", "skipped")
        if counts.get(name)
    ]
    return Text.assemble(
        f"batch {batch['id']} ({batch['kind']} {batch['region']}): ",
        status_text(batch["status"]),
        f" · {', '.join(parts) or 'no pairs'} (of {batch['total']})",
    )


def batch_view(batch: dict[str, Any]) -> Group:
    table = Table(box=None, pad_edge=False)
    for column in ("pair", "does", "status", "operation", "detail"):
        table.add_column(column)
    for pair in batch["pairs"]:
        table.add_row(
            pair["name"],
            pair["kind"],
            status_text(pair["status"]),
            pair["operation_id"] or "",
            pair["detail"] or "",
        )
    return Group(batch_line(batch), table)


def drill_summary(op: dict[str, Any]) -> Group:
    """What a drill found: the expected RTO, the lag seen, each step's rehearsal, and the
    readiness checks that failed."""
    report = op.get("report") or {}
    rto = report.get("expected_rto_s")
    lines: list[Any] = [
        Text(
            "expected RTO: "
            + (f"{rto:g} s" if rto is not None else "unknown")
            + (
                f" (not measured: {', '.join(report['unmeasured_steps'])})"
                if rto is not None and report.get("unmeasured_steps")
                else ""
            )
        )
    ]
    lag = report.get("replication_lag")
    if lag:
        lines.append(Text(f"replication lag: {lag.get('bytes')} bytes, {lag.get('seconds')} s"))
    table = Table("step", "rehearsal", "status", "duration", box=None)
    for step in [*report.get("steps", []), *report.get("cleanup", [])]:
        duration = step.get("duration_s")
        table.add_row(
            step["name"],
            step["rehearsal"],
            status_text(step["status"]),
            f"{duration:g} s" if duration is not None else "",
        )
    lines.append(table)
    for check in report.get("readiness", []):
        if not check.get("ok"):
            lines.append(
                Text(f"not ready: {check['step']}/{check['name']}: {check['detail']}", "red")
            )
    return Group(*lines)
