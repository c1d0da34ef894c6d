"""The `tandem` command.

The incident commands (pairs, status, failover, failback, op, events, deployments, report)
talk to a Tandem server over its HTTP API only, with TANDEM_URL and TANDEM_TOKEN. The
commands that run Tandem itself (serve, worker, migrate, tokens, orgs, secrets) live in
app/cli/server.py and are added to the same group.
"""

from __future__ import annotations

import functools
import json
import sys
import time
import uuid
from collections.abc import Callable
from enum import StrEnum
from typing import Annotated, Any, TypeVar

import click
import typer
from rich.text import Text

from app.cli import server, show
from app.cli.client import (
    FAILED,
    INTERRUPTED,
    OK,
    USAGE,
    Api,
    CliError,
)


class Output(StrEnum):
    text = "text"
    json = "json"


Url = Annotated[
    str,
    typer.Option("--url", envvar="TANDEM_URL", help="The server, e.g. https://tandem.example."),
]
Token = Annotated[
    str,
    typer.Option("--token", envvar="TANDEM_TOKEN", show_default=False, help="An API token."),
]
OutputOpt = Annotated[
    Output,
    typer.Option("--output", "-o", help="text for people, json for scripts (the API's resources)."),
]
Pair = Annotated[str, typer.Argument(help="The pair's name or id.", show_default=False)]
OpId = Annotated[str, typer.Argument(help="The operation's id (op_...).", show_default=False)]
Wait = Annotated[bool, typer.Option("--wait", help="Show each step live until the operation ends.")]
Key = Annotated[
    str | None,
    typer.Option(
        "--idempotency-key",
        help="Reuse the key of an earlier try (printed to stderr) instead of a fresh one.",
    ),
]

F = TypeVar("F", bound=Callable[..., Any])


def handled(command: F) -> F:
    """Errors become a line on stderr and an exit code, never a traceback."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise
        except CliError as exc:
            show.err.print(Text(f"error: {exc.message}", style="red"))
            raise typer.Exit(exc.code) from None
        except KeyboardInterrupt:
            show.err.print("interrupted")
            raise typer.Exit(INTERRUPTED) from None
        except Exception as exc:  # noqa: BLE001  (a person gets one line, not a traceback)
            show.err.print(Text(f"error: {type(exc).__name__}: {exc}", style="red"))
            raise typer.Exit(FAILED) from None

    return run  # type: ignore[return-value]


app = typer.Typer(
    help="Tandem: disaster-recovery control plane.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)
op_app = typer.Typer(help="One operation: show, wait, cancel, retry, approve, reject.")
app.add_typer(op_app, name="op")
batch_app = typer.Typer(help="A batch (a region's evacuation): show, wait, cancel.")
app.add_typer(batch_app, name="batch")


@app.callback()
def _group() -> None:
    """Tandem: disaster-recovery control plane."""


# -- following an operation -----------------------------------------------------------


def finish(api: Api, operation: dict[str, Any], output: Output) -> None:
    """Follow the operation until it ends; exit 0 when it succeeded, 1 otherwise."""
    op_id = operation["id"]
    # With --output json, stdout carries only the final operation: the steps go to stderr.
    console = show.err if output is Output.json else show.out
    try:
        with show.StepWatch(console) as watch:
            final = api.follow_operation(op_id, watch.update)
    except KeyboardInterrupt:
        show.err.print(
            f"\ninterrupted: operation {op_id} goes on running on the server.\n"
            f"  follow it again: tandem op wait {op_id}\n"
            f"  cancel it:       tandem op cancel {op_id}",
            markup=False,
        )
        raise typer.Exit(INTERRUPTED) from None
    if output is Output.json:
        show.emit_json(final)
    else:
        if final.get("report"):
            show.out.print(show.drill_summary(final))
        show.out.print(
            Text.assemble(f"{final['kind']} {op_id} ", show.status_text(final["status"]))
        )
        error = final.get("error")
        if isinstance(error, dict):
            show.out.print(
                Text(f"error: {error.get('title', '')}: {error.get('detail', '')}", style="red")
            )
        if final.get("needs_attention"):
            show.out.print(
                Text(
                    f"needs attention: fix the cause, then `tandem op retry {op_id}`",
                    style="bold red",
                )
            )
    raise typer.Exit(OK if final["status"] == "succeeded" else FAILED)


def started(api: Api, operation: dict[str, Any], output: Output, wait: bool) -> None:
    """What a command that started or changed an operation shows."""
    if wait and not operation["done"]:
        finish(api, operation, output)
    if output is Output.json:
        show.emit_json(operation)
        return
    show.out.print(show.operation_view(operation))
    if not operation["done"]:
        show.out.print(f"follow it: tandem op wait {operation['id']}", markup=False)


def new_key(given: str | None) -> str:
    key = given or str(uuid.uuid4())
    show.err.print(f"Idempotency-Key: {key}", markup=False, highlight=False)
    return key


# -- pairs ------------------------------------------------------------------------------


@app.command()
@handled
def pairs(url: Url = "", token: Token = "", output: OutputOpt = Output.text) -> None:
    """List the DR pairs, their state and active region."""
    api = Api(url, token)
    items = api.all_items("/v1/clusters")
    if output is Output.json:
        show.emit_json(items)
    else:
        show.out.print(show.pairs_table(items))


@app.command()
@handled
def status(pair: Pair, url: Url = "", token: Token = "", output: OutputOpt = Output.text) -> None:
    """One pair: its state, active region, allowed actions and last operation."""
    api = Api(url, token)
    found = api.find_pair(pair)
    if output is Output.json:
        show.emit_json(found)
        return
    last = None
    if found.get("last_operation_id"):
        last = api.get(f"/v1/operations/{found['last_operation_id']}")
    show.out.print(show.pair_summary(found, last))


def confirm(found: dict[str, Any], kind: str, forced: bool) -> None:
    """The person types the pair's name; anything else aborts before any request."""
    target = found["secondary"] if kind == "failover" else found["primary"]
    show.err.print(
        Text.assemble(
            (f"{'FORCED ' if forced else ''}{kind}", "bold red" if forced else "bold"),
            f" of pair {found['name']} to {target['name']} in {target['region']}",
            " (possible data loss)" if forced else "",
        )
    )
    try:
        typed = typer.prompt(
            f"Type the pair name ({found['name']}) to confirm",
            default="",
            show_default=False,
            err=True,
        )
    except typer.Abort:
        raise CliError("aborted: nothing was started", USAGE) from None
    if typed.strip() != found["name"]:
        raise CliError(
            f"aborted: {typed.strip()!r} is not {found['name']!r}; nothing was started", USAGE
        )


def start_operation(
    kind: str,
    pair: str,
    reason: str | None,
    forced: bool,
    accept_data_loss: bool,
    ignore_readiness: bool,
    dry_run: bool,
    wait: bool,
    yes: bool,
    idempotency_key: str | None,
    url: str,
    token: str,
    output: Output,
) -> None:
    if forced and not accept_data_loss:
        raise CliError("--forced needs --accept-data-loss: a forced switch may lose data", USAGE)
    if accept_data_loss and not forced:
        raise CliError("--accept-data-loss goes with --forced only", USAGE)
    api = Api(url, token)
    found = api.find_pair(pair)
    path = f"/v1/clusters/{found['id']}/{kind}"
    body: dict[str, Any] = {"mode": "forced" if forced else "planned", "reason": reason}
    if forced:
        body["accept_data_loss"] = True
    if ignore_readiness:
        body["ignore_readiness"] = True
    if dry_run:
        plan = api.request("POST", path, body={**body, "dry_run": True}, ok=(200,))
        if output is Output.json:
            show.emit_json(plan)
        else:
            show.out.print(show.dry_run_view(plan, found))
        return
    if not yes:
        confirm(found, kind, forced)
    operation = api.post(path, body, key=new_key(idempotency_key))
    started(api, operation, output, wait)


Reason = Annotated[str | None, typer.Option("--reason", help="Why: kept on the operation.")]
Forced = Annotated[
    bool, typer.Option("--forced", help="The source is unreachable: skip what needs it.")
]
AcceptLoss = Annotated[bool, typer.Option("--accept-data-loss", help="Required with --forced.")]
IgnoreReadiness = Annotated[
    bool, typer.Option("--ignore-readiness", help="Go ahead although the pair is not ready.")
]
DryRun = Annotated[
    bool, typer.Option("--dry-run", help="Show the plan and its expected duration; change nothing.")
]
Yes = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask to type the pair's name.")]


@app.command()
@handled
def failover(
    pair: Pair,
    reason: Reason = None,
    forced: Forced = False,
    accept_data_loss: AcceptLoss = False,
    ignore_readiness: IgnoreReadiness = False,
    dry_run: DryRun = False,
    wait: Wait = False,
    yes: Yes = False,
    idempotency_key: Key = None,
    url: Url = "",
    token: Token = "",
    output: OutputOpt = Output.text,
) -> None:
    """Fail the pair over to its secondary region."""
    start_operation(
        "failover", pair, reason, forced, accept_data_loss, ignore_readiness, dry_run, wait,
        yes, idempotency_key, url, token, output,
    )  # fmt: skip


@app.command()
@handled
def failback(
    pair: Pair,
    reason: Reason = None,
    forced: Forced = False,
    accept_data_loss: AcceptLoss = False,
    ignore_readiness: IgnoreReadiness = False,
    dry_run: DryRun = False,
    wait: Wait = False,
    yes: Yes = False,
    idempotency_key: Key = None,
    url: Url = "",
    token: Token = "",
    output: OutputOpt = Output.text,
) -> None:
    """Fail the pair back to its primary region."""
    start_operation(
        "failback", pair, reason, forced, accept_data_loss, ignore_readiness, dry_run, wait,
        yes, idempotency_key, url, token, output,
    )  # fmt: skip


@app.command()
@handled
def drill(
    pair: Pair,
    reason: Reason = None,
    wait: Wait = False,
    idempotency_key: Key = None,
    url: Url = "",
    token: Token = "",
    output: OutputOpt = Output.text,
) -> None:
    """Rehearse the pair's next failover (or failback) without moving anything: drill
    actions and readiness probes, then the plan's cleanup. --wait shows its report."""
    api = Api(url, token)
    found = api.find_pair(pair)
    body = {"reason": reason} if reason else None
    operation = api.post(f"/v1/clusters/{found['id']}/drills", body, key=new_key(idempotency_key))
    started(api, operation, output, wait)


# -- operations -------------------------------------------------------------------------


@op_app.command("show")
@handled
def op_show(op_id: OpId, url: Url = "", token: Token = "", output: OutputOpt = Output.text) -> None:
    """The operation and its steps."""
    operation = Api(url, token).get(f"/v1/operations/{op_id}")
    if output is Output.json:
        show.emit_json(operation)
    else:
        show.out.print(show.operation_view(operation))


@op_app.command("wait")
@handled
def op_wait(op_id: OpId, url: Url = "", token: Token = "", output: OutputOpt = Output.text) -> None:
    """Show each step live until the operation ends (exit 0 succeeded, 1 otherwise)."""
    api = Api(url, token)
    finish(api, api.get(f"/v1/operations/{op_id}"), output)


@op_app.command("cancel")
@handled
def op_cancel(
    op_id: OpId,
    wait: Wait = False,
    url: Url = "",
    token: Token = "",
    output: OutputOpt = Output.text,
) -> None:
    """Cancel: undo the reversible steps done so far, back to the origin state."""
    api = Api(url, token)
    started(api, api.post(f"/v1/operations/{op_id}/cancel"), output, wait)


@op_app.command("retry")
@handled
def op_retry(
    op_id: OpId,
    wait: Wait = False,
    url: Url = "",
    token: Token = "",
    output: OutputOpt = Output.text,
) -> None:
    """Resume a failed operation from its failed step."""
    api = Api(url, token)
    started(api, api.post(f"/v1/operations/{op_id}/retry"), output, wait)


Comment = Annotated[str | None, typer.Option("--comment", help="Kept in the audit log.")]


@op_app.command("approve")
@handled
def op_approve(
    op_id: OpId,
    comment: Comment = None,
    wait: Wait = False,
    url: Url = "",
    token: Token = "",
    output: OutputOpt = Output.text,
) -> None:
    """Approve the step that waits for a person; the operation goes on."""
    api = Api(url, token)
    started(api, api.post(f"/v1/operations/{op_id}/approve", {"comment": comment}), output, wait)


@op_app.command("reject")
@handled
def op_reject(
    op_id: OpId,
    comment: Comment = None,
    wait: Wait = False,
    url: Url = "",
    token: Token = "",
    output: OutputOpt = Output.text,
) -> None:
    """Reject the step that waits for a person (before the point of no return: rolled back)."""
    api = Api(url, token)
    started(api, api.post(f"/v1/operations/{op_id}/reject", {"comment": comment}), output, wait)


# -- events and deployments -------------------------------------------------------------


@app.command()
@handled
def events(
    pair: Annotated[str | None, typer.Argument(help="Only this pair (name or id).")] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Stream new events until Ctrl-C.")
    ] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, help="The latest N events.")] = 50,
    url: Url = "",
    token: Token = "",
    output: OutputOpt = Output.text,
) -> None:
    """The latest events (of one pair, or of all), or the live stream with --follow.

    With --follow and --output json, one event per line (JSON Lines)."""
    api = Api(url, token)
    cluster_id = api.find_pair(pair)["id"] if pair else None
    if follow:
        try:
            for event in api.stream_events(cluster_id):
                if output is Output.json:
                    print(json.dumps(event), flush=True)
                else:
                    show.out.print(show.event_line(event))
        except KeyboardInterrupt:
            raise typer.Exit(INTERRUPTED) from None
        return
    if cluster_id:
        items = api.all_items(f"/v1/clusters/{cluster_id}/events")
    else:
        items = api.all_items("/v1/events")
    items = items[-limit:]
    if output is Output.json:
        show.emit_json(items)
    else:
        for event in items:
            show.out.print(show.event_line(event))


@app.command()
@handled
def deployments(
    pair: Pair,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Retry the failed deployments' tasks.")
    ] = False,
    wait: Wait = False,
    idempotency_key: Key = None,
    url: Url = "",
    token: Token = "",
    output: OutputOpt = Output.text,
) -> None:
    """Each deployment's health in the active region; --retry-failed retries the failed."""
    api = Api(url, token)
    found = api.find_pair(pair)
    if retry_failed:
        operation = api.post(
            f"/v1/clusters/{found['id']}/deployments/retry", key=new_key(idempotency_key)
        )
        started(api, operation, output, wait)
        return
    listed = api.get(f"/v1/clusters/{found['id']}/deployments")
    if output is Output.json:
        show.emit_json(listed["items"])
    else:
        show.out.print(show.deployments_table(found, listed["items"]))


# -- the evidence report ------------------------------------------------------------------


class ReportOutput(StrEnum):
    json = "json"
    pdf = "pdf"


Since = Annotated[
    str | None,
    typer.Option(
        "--from", help="RFC 3339 (e.g. 2026-01-01T00:00:00Z); default: --to less 90 days."
    ),
]
Until = Annotated[
    str | None, typer.Option("--to", help="RFC 3339, excluded from the period; default: now.")
]


@app.command()
@handled
def report(
    pair: Pair,
    since: Since = None,
    until: Until = None,
    url: Url = "",
    token: Token = "",
    output: Annotated[
        ReportOutput,
        typer.Option(
            "--output", "-o", help="json (the API's report, indented) or pdf (redirect it)."
        ),
    ] = ReportOutput.json,
) -> None:
    """The pair's evidence report for auditors: its failovers, failbacks, drills and
    deployment retries of a period, objectives and readiness; on stdout (`> report.pdf`)."""
    # Like curl, binary output is not written to a terminal: it would garble it.
    if output is ReportOutput.pdf and sys.stdout.isatty():
        raise CliError(
            "refusing to write a PDF to the terminal: redirect it, e.g. "
            f"`tandem report {pair} --output pdf > report.pdf`",
            USAGE,
        )
    api = Api(url, token)
    found = api.find_pair(pair)
    params = {name: value for name, value in (("from", since), ("to", until)) if value}
    path = f"/v1/clusters/{found['id']}/report"
    if output is ReportOutput.pdf:
        body = api.download(path, "application/pdf", params=params)
        sys.stdout.buffer.write(body)
        sys.stdout.buffer.flush()
        return
    show.emit_json(api.get(path, **params))


# -- evacuating a region ------------------------------------------------------------------


def _moves(pair: dict[str, Any], region: str) -> bool:
    """Whether an evacuation of `region` moves the pair (as the server decides it)."""
    if pair["state"] == "primary-active":
        return bool(pair["primary"]["region"] == region)
    if pair["state"] == "secondary-active":
        return bool(pair["secondary"]["region"] == region)
    return False


def follow_batch(api: Api, batch: dict[str, Any], output: Output) -> None:
    """Show the batch's counts as they change until it ends; 0 when it succeeded."""
    batch_id = batch["id"]
    console = show.err if output is Output.json else show.out
    last = None
    try:
        while not batch["done"]:
            line = show.batch_line(batch)
            if line.plain != last:
                console.print(line)
                last = line.plain
            time.sleep(1)
            batch = api.get(f"/v1/batches/{batch_id}")
    except KeyboardInterrupt:
        show.err.print(
            f"\ninterrupted: batch {batch_id} goes on on the server.\n"
            f"  follow it again: tandem batch wait {batch_id}\n"
            f"  cancel it:       tandem batch cancel {batch_id}",
            markup=False,
        )
        raise typer.Exit(INTERRUPTED) from None
    if output is Output.json:
        show.emit_json(batch)
    else:
        show.out.print(show.batch_view(batch))
    raise typer.Exit(OK if batch["status"] == "succeeded" else FAILED)


@app.command()
@handled
def evacuate(
    region: Annotated[str, typer.Argument(help="The region to move every pair out of.")],
    reason: Reason = None,
    forced: Forced = False,
    accept_data_loss: AcceptLoss = False,
    ignore_readiness: IgnoreReadiness = False,
    max_parallel: Annotated[
        int, typer.Option("--max-parallel", min=1, max=1000, help="Operations at once.")
    ] = 20,
    label: Annotated[
        list[str] | None,
        typer.Option("--label", "-l", help="Only pairs with this label (key=value); repeatable."),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Show the counts live until the batch ends.")
    ] = False,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Do not ask to type the region.")
    ] = False,
    idempotency_key: Key = None,
    url: Url = "",
    token: Token = "",
    output: OutputOpt = Output.text,
) -> None:
    """Move every pair active in REGION out of it: one batch of failovers and failbacks."""
    if forced != accept_data_loss:
        raise CliError("--forced and --accept-data-loss go together", USAGE)
    labels: dict[str, str] = {}
    for item in label or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"--label {item!r}: write key=value", USAGE)
        labels[key] = value
    api = Api(url, token)
    if not yes:
        pairs = [
            p
            for p in api.all_items("/v1/clusters")
            if _moves(p, region) and all(p.get("labels", {}).get(k) == v for k, v in labels.items())
        ]
        show.err.print(
            Text.assemble(
                (f"{'FORCED ' if forced else ''}evacuation", "bold red" if forced else "bold"),
                f" of region {region}: {len(pairs)} pair(s) active there will move",
                " (possible data loss)" if forced else "",
            )
        )
        try:
            typed = typer.prompt(
                f"Type the region ({region}) to confirm", default="", show_default=False, err=True
            )
        except typer.Abort:
            raise CliError("aborted: nothing was started", USAGE) from None
        if typed.strip() != region:
            raise CliError(
                f"aborted: {typed.strip()!r} is not {region!r}; nothing was started", USAGE
            )
    body: dict[str, Any] = {
        "mode": "forced" if forced else "planned",
        "reason": reason,
        "max_parallel": max_parallel,
        "labels": labels,
    }
    if forced:
        body["accept_data_loss"] = True
    if ignore_readiness:
        body["ignore_readiness"] = True
    batch = api.post(f"/v1/regions/{region}/evacuate", body, key=new_key(idempotency_key))
    if wait:
        follow_batch(api, batch, output)
    if output is Output.json:
        show.emit_json(batch)
    else:
        show.out.print(show.batch_line(batch))
        show.out.print(f"follow it: tandem batch wait {batch['id']}", markup=False)


BatchId = Annotated[str, typer.Argument(help="The batch's id (bt_...).", show_default=False)]


@batch_app.command("show")
@handled
def batch_show(
    batch_id: BatchId, url: Url = "", token: Token = "", output: OutputOpt = Output.text
) -> None:
    """The batch: its counts and its pairs."""
    batch = Api(url, token).get(f"/v1/batches/{batch_id}")
    if output is Output.json:
        show.emit_json(batch)
    else:
        show.out.print(show.batch_view(batch))


@batch_app.command("wait")
@handled
def batch_wait(
    batch_id: BatchId, url: Url = "", token: Token = "", output: OutputOpt = Output.text
) -> None:
    """Follow the batch until it ends; exit 0 when it succeeded."""
    api = Api(url, token)
    follow_batch(api, api.get(f"/v1/batches/{batch_id}"), output)


@batch_app.command("cancel")
@handled
def batch_cancel(
    batch_id: BatchId, url: Url = "", token: Token = "", output: OutputOpt = Output.text
) -> None:
    """Start nothing more; what runs runs to its end."""
    batch = Api(url, token).post(f"/v1/batches/{batch_id}/cancel")
    if output is Output.json:
        show.emit_json(batch)
    else:
        show.out.print(show.batch_line(batch))


# The incident commands are a typer app, mounted command by command into the `tandem`
# click group: typer carries a click of its own, and the server's commands keep running
# under the `click` they were written for (their options, errors and exit codes unchanged).
incident = typer.main.get_group(app)


def _mount(name: str) -> click.Command:
    inner = incident.commands[name]

    @click.command(
        name,
        help=inner.help,
        short_help=inner.get_short_help_str(limit=60),
        add_help_option=False,
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )
    @click.pass_context
    def run(ctx: click.Context) -> None:
        incident.main(args=[name, *ctx.args], prog_name=ctx.find_root().info_name)

    return run


@click.group()
def main() -> None:
    """Tandem: disaster-recovery control plane."""


for _name in incident.commands:
    main.add_command(_mount(_name))
for _command in (
    server.migrate,
    server.serve,
    server.worker,
    server.tokens,
    server.orgs,
    server.secrets_group,
):
    main.add_command(_command)
