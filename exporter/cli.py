"""``python -m exporter``: manage connections and exports, run exports, read run reports.

The environment is read only in :func:`main` (the store folder, local secrets, the hostname
policy); everything below gets what it needs injected. Connection and export commands go
through :class:`exporter.management.service.ManagementService` (the same rules as the HTTP API),
acting as
the local user with the administrator role.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from exporter.activecampaign.ledger import FileLedger
from exporter.cli_parser import build_parser as _build_parser
from exporter.cli_progress import (
    LineSink,
    LogSummary,
    ProgressView,
    summary_paragraph,
    terminal_width,
)
from exporter.errors import ConfigError, ExporterError, GuardError, InputError
from exporter.management.config import (
    CONSENT_STATEMENT,
    SNAPSHOTS,
    Connection,
    check_snapshot_path,
    text_encoding,
)
from exporter.management.local_keys import LocalKeyStore
from exporter.management.permissions import Caller
from exporter.management.repository import ConfigRepository
from exporter.management.secrets import LocalSecretProvider
from exporter.management.service import ClientLike, ManagementService
from exporter.reading.limits import ReadLimits
from exporter.run.engine import Engine, RunOptions
from exporter.run.report import RunReport
from exporter.run.run_body import resolve_in_segment
from exporter.settings import EXPORTER_HOME, HostPolicy
from exporter.storage import runs
from exporter.storage.records import ActiveRun, read_record
from exporter.storage.store import LocalStore

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


@dataclass
class Context:
    """What every command gets: the store, secrets, policy, caller and output settings."""

    store: LocalStore
    secrets: LocalSecretProvider
    hosts: HostPolicy
    caller: Caller
    json: bool
    progress: bool
    """Show progress and the closing paragraph on stderr (not with --json or --quiet)."""
    time_scale: float
    out: IO[str]
    err: IO[str]
    progress_every: float = 30.0
    """Seconds between plain progress lines (stderr without a sized terminal)."""
    sink: LineSink | None = None
    """Where log lines go (above the progress line while one is drawn)."""
    logs: LogSummary | None = None
    """The warnings' summary and counts (retries)."""
    read_limits: ReadLimits = field(default_factory=ReadLimits)
    """What reading one snapshot may cost (``EXPORTER_MAX_*`` settings)."""
    env: Mapping[str, str] = field(default_factory=dict)  # what main() read (for the console)

    def engine(self) -> Engine:
        # Every process using this store folder shares each account's budget through a
        # ledger file beside the store's data (cron jobs, a second terminal, a verify).
        budget = self.store.root / "budget"
        return Engine(
            self.store,
            self.secrets,
            host_policy=self.hosts,
            time_scale=self.time_scale,
            read_limits=self.read_limits,
            ledger_for=lambda hostname: FileLedger.for_account(budget, hostname),
        )

    def service(self) -> ManagementService:
        engine = self.engine()

        def factory(connection: Connection, key: str) -> ClientLike:
            client: ClientLike = engine.default_client(connection, key)
            return client

        return ManagementService(ConfigRepository(self.store), self.secrets, factory, self.hosts)

    def emit(self, data: Any, text: str) -> None:
        """JSON on stdout with ``--json``, text otherwise."""
        if self.json:
            self.out.write(json.dumps(data, indent=2, default=str) + "\n")
        elif text:
            self.out.write(text.rstrip("\n") + "\n")

    def note(self, text: str) -> None:
        """A line for people on stderr (never with --json)."""
        if not self.json:
            self.err.write(text + "\n")


# --- helpers ---------------------------------------------------------------------------------


def _load_json_file(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist", field="--file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path} is not a readable JSON file ({exc})", field="--file") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object", field="--file")
    return data


def _merge(base: dict[str, Any], flags: Mapping[str, Any]) -> dict[str, Any]:
    """Flags given on the command line override the file's values."""
    out = dict(base)
    out.update({k: v for k, v in flags.items() if v is not None})
    return out


def _pretty(data: Mapping[str, Any]) -> str:
    return json.dumps(data, indent=2, default=str)


# --- connections -----------------------------------------------------------------------------


def cmd_connections_add(ctx: Context, args: argparse.Namespace) -> int:
    payload = _merge(
        _load_json_file(args.file),
        {
            "name": args.name,
            "display_name": args.display_name,
            "hostname": args.hostname,
            "api_key_ref": args.api_key_ref,
            "allow_contributors": True if args.allow_contributors else None,
        },
    )
    if isinstance(payload.get("name"), str) and payload["name"]:
        payload.setdefault("display_name", payload["name"])
    if args.agree_to_privacy_statement:
        payload["consent"] = True
    else:
        payload.pop("consent", None)  # consent is given on the command line, never by a file
        ctx.err.write(
            "Data privacy and compliance statement:\n  " + CONSENT_STATEMENT + "\n"
            "Agree to it with --agree-to-privacy-statement.\n"
        )
    saved = ctx.service().create_connection(ctx.caller, payload, verify=args.verify)
    for note in saved.notes:
        ctx.note(f"note: {note}")
    ctx.emit(saved.view, f"connection {saved.view['name']} saved")
    return EXIT_OK


def cmd_connections_verify(ctx: Context, args: argparse.Namespace) -> int:
    verified = ctx.service().verify_connection(ctx.caller, args.name)
    ctx.emit(
        {
            "name": verified.name,
            "hostname": verified.hostname,
            "verified_at": verified.verified_at.isoformat(),
        },
        f"connection {verified.name}: ActiveCampaign at {verified.hostname} accepted the key",
    )
    return EXIT_OK


def cmd_connections_list(ctx: Context, _args: argparse.Namespace) -> int:
    items = ctx.service().list_connections(ctx.caller)
    lines = [f"{c['name']}\t{c.get('hostname', '')}\t{c['display_name']}" for c in items]
    ctx.emit(items, "\n".join(lines) or "no connections")
    return EXIT_OK


def cmd_connections_show(ctx: Context, args: argparse.Namespace) -> int:
    fetched = ctx.service().get_connection(ctx.caller, args.name)
    ctx.emit(fetched.view, _pretty(fetched.view))
    return EXIT_OK


def cmd_connections_remove(ctx: Context, args: argparse.Namespace) -> int:
    deleted = ctx.service().delete_connection(ctx.caller, args.name, force=args.force)
    ctx.emit(
        {"name": deleted.name, "orphaned_exports": deleted.orphaned_exports},
        f"connection {deleted.name} removed"
        + (
            f" (exports left without it: {', '.join(deleted.orphaned_exports)})"
            if deleted.orphaned_exports
            else ""
        ),
    )
    return EXIT_OK


# --- exports ---------------------------------------------------------------------------------


def _field_flag(spec: str) -> dict[str, str]:
    column, sep, field = spec.partition("=")
    if not sep or not column.strip() or not field.strip():
        raise ConfigError(f"expected COLUMN=FIELD, got {spec!r}", field="--field")
    return {"column": column.strip(), "field": field.strip()}


def cmd_exports_add(ctx: Context, args: argparse.Namespace) -> int:
    flags: dict[str, Any] = {
        "name": args.name,
        "display_name": args.display_name,
        "connection": args.connection,
        "segment": args.segment,
        "list_id": args.list_id,
        "email": args.email,
        "first_name": args.first_name,
        "last_name": args.last_name,
        "phone": args.phone,
        "tag_column": args.tag_column,
        "profile_id_column": args.profile_id_column,
        "schedule": args.schedule,
        "leaver_policy": args.leaver_policy,
        "max_shrink": args.max_shrink,
        "fields": [_field_flag(f) for f in args.field] if args.field else None,
        "tags": list(args.tag) if args.tag else None,
        "exclude_automations": False if args.include_automations else None,
        "enabled": False if args.disabled else None,
        "encoding": args.encoding,
    }
    payload = _merge(_load_json_file(args.file), flags)
    name = payload.get("name")
    if isinstance(name, str) and name:
        payload.setdefault("display_name", name)
        if "segment" not in payload:
            payload["segment"] = f"{SNAPSHOTS}{name}/"
            ctx.note(
                f"note: segment {payload['segment']} (store snapshots the export reads; "
                "`run --snapshot FILE` reads a local file regardless)"
            )
    saved = ctx.service().create_export(ctx.caller, payload)
    ctx.emit(saved.view, f"export {saved.view['name']} saved (saving never runs it)")
    return EXIT_OK


def cmd_exports_show(ctx: Context, args: argparse.Namespace) -> int:
    fetched = ctx.service().get_export(ctx.caller, args.name)
    ctx.emit(fetched.view, _pretty(fetched.view))
    return EXIT_OK


def cmd_exports_list(ctx: Context, _args: argparse.Namespace) -> int:
    items = ctx.service().list_exports(ctx.caller)
    lines = [
        f"{e['name']}\t{e['connection']}\tlist {e['list_id']}\t{e['segment']}"
        + ("" if e.get("enabled", True) else "\t(disabled)")
        for e in items
    ]
    ctx.emit(items, "\n".join(lines) or "no exports")
    return EXIT_OK


def cmd_exports_remove(ctx: Context, args: argparse.Namespace) -> int:
    deleted = ctx.service().delete_export(ctx.caller, args.name)
    summary = f"export {deleted.name} removed with its state and run files (reports stay)"
    ctx.emit({"name": deleted.name}, summary)
    return EXIT_OK


# --- runs ------------------------------------------------------------------------------------


def _encoding_flag(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return text_encoding(value)
    except ValueError as exc:
        raise ConfigError(str(exc), field="--encoding") from None


def _status_exit(report: RunReport) -> int:
    if report.status in ("completed", "dry_run") and report.reconciles():
        return EXIT_OK
    return EXIT_FAILED


def cmd_run(ctx: Context, args: argparse.Namespace) -> int:
    engine = ctx.engine()
    export, _connection = ctx.service().authorize_run(ctx.caller, args.export)
    options = RunOptions(
        dry_run=args.dry_run,
        full_resync=args.full_resync,
        allow_shrink=args.allow_shrink,
        encoding=_encoding_flag(args.encoding),
    )
    location = runs.STORE
    snapshot = None
    if args.snapshot:
        if os.path.exists(args.snapshot):
            snapshot, location = Engine.local_snapshot(args.snapshot), runs.LOCAL
        elif args.snapshot.startswith(SNAPSHOTS):
            # The one rule for snapshot paths, and the export's segment, before the store is
            # asked; a folder resolves to its newest snapshot, held to the segment again.
            path = check_snapshot_path(args.snapshot, field="--snapshot")
            snapshot = resolve_in_segment(export, path, engine.store_snapshot)
        else:
            raise InputError(
                "file not found (nor a store path under snapshots/)", file=args.snapshot
            )
    active = read_record(ctx.store, runs.active_run_path(args.export), ActiveRun)
    req = engine.new_run(
        args.export, snapshot=snapshot, options=options, snapshot_location=location
    )
    resumed = active is not None and active.run_id == req.run_id
    if ctx.progress:
        ctx.note(
            f"{'resuming' if resumed else 'starting'} run {req.run_id} of export {req.export}"
            + (" (dry run)" if options.dry_run else "")
        )
    view = (
        ProgressView(ctx.err, width=terminal_width(ctx.err), every=ctx.progress_every)
        if ctx.progress
        else None
    )
    if ctx.sink is not None:
        ctx.sink.view = view
    if view is not None:
        view.start_ticking(min(1.0, ctx.progress_every))
    try:
        report = engine.run(req, progress=view)
    except GuardError as exc:
        _end_progress(ctx, view)
        guarded = engine.get_run(req.export, req.run_id)
        ctx.emit(guarded.to_dict(), guarded.summary())
        ctx.err.write(f"error: {exc}\n")
        _closing_paragraph(ctx, guarded, EXIT_FAILED)
        return EXIT_FAILED
    finally:
        _end_progress(ctx, view)
    ctx.emit(report.to_dict(), report.summary())
    if report.error and not ctx.json:
        ctx.err.write(f"error: {report.error}\n")
    code = _status_exit(report)
    _closing_paragraph(ctx, report, code)
    return code


def _end_progress(ctx: Context, view: ProgressView | None) -> None:
    if view is not None:
        view.close()
    if ctx.sink is not None:
        ctx.sink.view = None
    if ctx.logs is not None:
        ctx.logs.flush()  # the retries of the last minute, before the closing paragraph


def _closing_paragraph(ctx: Context, report: RunReport, code: int) -> None:
    """The report in words on stderr (not with --json or --quiet)."""
    if not ctx.progress:
        return
    retried = ctx.logs.totals["requests retried"] if ctx.logs is not None else 0
    width = min(terminal_width(ctx.err) or 100, 100)
    ctx.err.write(summary_paragraph(report, exit_code=code, retried=retried, width=width) + "\n")


def cmd_runs_list(ctx: Context, args: argparse.Namespace) -> int:
    reports = ctx.engine().list_runs(args.export, limit=args.limit)
    lines = [
        f"{r.run_id}\t{r.status}\trows {r.rows_read:,}\tconfirmed {r.confirmed:,}"
        f"\tfailed {r.failed:,}\tunchanged {r.unchanged:,}"
        for r in reports
    ]
    ctx.emit([r.to_dict() for r in reports], "\n".join(lines) or "no runs")
    return EXIT_OK


def cmd_runs_show(ctx: Context, args: argparse.Namespace) -> int:
    report = ctx.engine().get_run(args.export, args.run_id)
    ctx.emit(report.to_dict(), report.summary())
    return EXIT_OK


def cmd_console(ctx: Context, args: argparse.Namespace) -> int:
    from exporter.console.local import serve  # web dependencies only for this command

    return serve(ctx.store.root, ctx.env, ctx.caller.principal, args.port, ctx.err, ctx.time_scale)


Handler = Callable[[Context, argparse.Namespace], int]

COMMANDS: dict[str, Handler] = {
    "connections_add": cmd_connections_add,
    "connections_verify": cmd_connections_verify,
    "connections_show": cmd_connections_show,
    "connections_list": cmd_connections_list,
    "connections_remove": cmd_connections_remove,
    "exports_add": cmd_exports_add,
    "exports_show": cmd_exports_show,
    "exports_remove": cmd_exports_remove,
    "exports_list": cmd_exports_list,
    "run": cmd_run,
    "runs_list": cmd_runs_list,
    "runs_show": cmd_runs_show,
    "console": cmd_console,
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exit codes are documented in ``--help``)."""
    return _build_parser(COMMANDS)


_CLI_HANDLER = "_exporter_cli_handler"


def _configure_logging(verbosity: int, err: IO[str] | LineSink) -> None:
    if not verbosity:
        return
    root = logging.getLogger()
    # main() may run several times in one process (tests, embedding): one handler, not one
    # more per call.
    for old in [h for h in root.handlers if getattr(h, _CLI_HANDLER, False)]:
        root.removeHandler(old)
    handler = logging.StreamHandler(err)
    setattr(handler, _CLI_HANDLER, True)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbosity > 1 else logging.INFO)
    for noisy in ("urllib3",):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _principal(env: Mapping[str, str]) -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return env.get("USER") or "local-user"


def main(
    argv: Sequence[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    out: IO[str] | None = None,
    err: IO[str] | None = None,
) -> int:
    """Run one command; returns the exit code. The environment is read here and only here
    (tests pass ``env``, ``out`` and ``err``)."""
    env = os.environ if env is None else env
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    args = build_parser().parse_args(argv)
    sink = LineSink(err)
    _configure_logging(args.verbose, sink)
    # Without -v, warnings would reach stderr one by one through logging's last resort: the
    # retries are summarised instead (and counted either way, for the closing paragraph).
    logs = LogSummary(
        sink, summarise=not (args.verbose or args.quiet), passthrough=not args.verbose
    )
    root = logging.getLogger()
    root.addHandler(logs)
    home = args.home or env.get(EXPORTER_HOME) or ".exporter"
    try:
        ctx = Context(
            store=LocalStore(home),
            secrets=LocalKeyStore(env, Path(home) / "keys"),
            hosts=HostPolicy.from_env(env, loopback_default=True),
            caller=Caller.local_admin(_principal(env)),
            json=args.json,
            progress=not (args.json or args.quiet),
            time_scale=args.time_scale,
            out=out,
            err=err,
            progress_every=args.progress_every,
            sink=sink,
            logs=logs,
            read_limits=ReadLimits.from_env(env),
            env=env,
        )
        handler: Handler = args.handler
        return handler(ctx, args)
    except ExporterError as exc:
        if args.verbose:
            traceback.print_exc(file=err)
        if args.json:
            out.write(json.dumps({"error": str(exc), "exit_code": exc.exit_code}) + "\n")
        err.write(f"error: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        err.write("interrupted: run the same command again to resume the run\n")
        return EXIT_INTERRUPTED
    finally:
        root.removeHandler(logs)
