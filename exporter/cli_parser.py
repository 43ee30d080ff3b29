"""The command line's argument parser and its ``--help`` texts (the handlers are in
:mod:`exporter.cli`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping

from exporter import __version__
from exporter.settings import EXPORTER_HOME

EPILOG = """\
exit codes:
  0  done: every contact confirmed (or a dry run, or a management command succeeded);
     rejected rows (bad email, ragged row, ... listed in rejected.csv) and duplicates still
     exit 0: the report counts them, check "rejected" in it or in `runs show`
  1  the run failed, completed with failures, or a safety guard stopped it
  2  bad input or configuration (unreadable snapshot, invalid or missing settings)
  130 interrupted (run the same command again to resume the run)

environment:
  EXPORTER_HOME                     store folder (default ./.exporter), same as --home
  EXPORTER_ALLOW_LOOPBACK_SANDBOX   loopback sandbox hosts over plain HTTP (default on for
                                    the command line; keys go to any other host only over TLS)
  EXPORTER_HOSTNAME_ALLOWLIST       extra API hostnames keys may be sent to
  EXPORTER_MAX_RECORD_BYTES, EXPORTER_MAX_FIELD_CHARS, EXPORTER_MAX_COLUMNS,
  EXPORTER_MAX_DECOMPRESSED_BYTES, EXPORTER_MAX_DECOMPRESSION_RATIO, EXPORTER_MAX_PARTITIONS,
  EXPORTER_MAX_REJECTED_ROWS        raise a snapshot reading limit (docs/guarantees.md)
"""


def build_parser(commands: Mapping[str, Callable[..., int]]) -> argparse.ArgumentParser:
    """The argument parser (exit codes are documented in ``--help``); ``commands`` maps each
    command's key (``connections_add``, ``run``, ...) to its handler."""
    parser = argparse.ArgumentParser(
        prog="python -m exporter",
        description="Keep ActiveCampaign lists in sync with customer segment snapshots.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--home", help=f"store folder (default ${EXPORTER_HOME} or ./.exporter)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log to stderr (-vv: debug)"
    )
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress, retry summary or closing paragraph on stderr (errors still)",
    )
    parser.add_argument("--time-scale", type=float, default=1.0, help=argparse.SUPPRESS)
    parser.add_argument("--progress-every", type=float, default=30.0, help=argparse.SUPPRESS)
    top = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    conns = top.add_parser("connections", help="ActiveCampaign accounts").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    add = conns.add_parser("add", help="add a connection (administrators)")
    add.add_argument("--file", help="connection JSON; flags override its values")
    add.add_argument("--name")
    add.add_argument("--display-name", help="a name shown to people (default: --name)")
    add.add_argument("--hostname", help="REST endpoint hostname, e.g. acct.api-us1.com")
    add.add_argument("--api-key-ref", help="where the key is: env:NAME or file:/path")
    add.add_argument("--allow-contributors", action="store_true")
    add.add_argument(
        "--agree-to-privacy-statement",
        action="store_true",
        help="agree to the data privacy and compliance statement (required)",
    )
    verify_help = "check key and host with ActiveCampaign first (default; --no-verify: offline)"
    add.add_argument("--verify", action=argparse.BooleanOptionalAction, help=verify_help)
    add.set_defaults(verify=True)
    add.set_defaults(handler=commands["connections_add"])
    for name, handler, text in (
        ("verify", commands["connections_verify"], "check the key and host with ActiveCampaign"),
        ("show", commands["connections_show"], "show a connection"),
    ):
        p = conns.add_parser(name, help=text)
        p.add_argument("name")
        p.set_defaults(handler=handler)
    conns.add_parser("list", help="list connections").set_defaults(
        handler=commands["connections_list"]
    )
    rm = conns.add_parser("remove", help="remove a connection")
    rm.add_argument("name")
    rm.add_argument("--force", action="store_true", help="even while exports use it")
    rm.set_defaults(handler=commands["connections_remove"])

    exps = top.add_parser("exports", help="segment → list exports").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    ea = exps.add_parser("add", help="add an export (saving never runs it)")
    ea.add_argument("--file", help="export JSON; flags override its values")
    ea.add_argument("--name", help="the export's identifier (a slug; required)")
    ea.add_argument("--display-name", help="a name shown to people (default: --name)")
    ea.add_argument("--connection", help="the connection it sends through (required)")
    ea.add_argument(
        "--segment",
        help="which store snapshots: snapshots/<name>/, a file or a glob (default: "
        "snapshots/<export name>/; `run --snapshot FILE` reads any local file regardless)",
    )
    ea.add_argument("--list-id", help="the ActiveCampaign list ID (required)")
    ea.add_argument(
        "--encoding",
        help="the snapshots' text encoding (default utf-8; e.g. cp1252 for Windows/Latin-1)",
    )
    ea.add_argument("--email", help="the column holding the email address (required)")
    for flag in (
        "--first-name",
        "--last-name",
        "--phone",
        "--tag-column",
        "--profile-id-column",
        "--schedule",
    ):
        ea.add_argument(flag)
    ea.add_argument(
        "--field",
        action="append",
        metavar="COLUMN=FIELD",
        help="a custom field: column = field id, title or %%TAG%% (repeatable)",
    )
    ea.add_argument("--tag", action="append", help="a tag for every contact (repeatable)")
    ea.add_argument("--leaver-policy", choices=("unsubscribe", "keep"))
    ea.add_argument("--max-shrink", type=float)
    ea.add_argument(
        "--include-automations",
        action="store_true",
        help="let ActiveCampaign automations fire for imported contacts",
    )
    ea.add_argument("--disabled", action="store_true")
    ea.set_defaults(handler=commands["exports_add"])
    for name, handler, text in (
        ("show", commands["exports_show"], "show an export"),
        (
            "remove",
            commands["exports_remove"],
            "remove an export, its state and run files (reports stay)",
        ),
    ):
        p = exps.add_parser(name, help=text)
        p.add_argument("name")
        p.set_defaults(handler=handler)
    exps.add_parser("list", help="list exports").set_defaults(handler=commands["exports_list"])

    run = top.add_parser(
        "run",
        help="run an export now",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("export")
    run.add_argument(
        "--snapshot",
        help="a local CSV / model.json / folder, or a store path "
        "under snapshots/ (default: the newest snapshot of the export's segment)",
    )
    run.add_argument(
        "--encoding",
        help="the snapshot's text encoding for this run (default: the export's, utf-8)",
    )
    run.add_argument("--dry-run", action="store_true", help="write plan.csv, send nothing")
    run.add_argument("--full-resync", action="store_true", help="send every contact again")
    run.add_argument("--allow-shrink", action="store_true", help="override the shrink guard")
    run.set_defaults(handler=commands["run"])

    rns = top.add_parser("runs", help="run reports").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    rl = rns.add_parser("list", help="an export's runs, newest first")
    rl.add_argument("export")
    rl.add_argument("--limit", type=int, default=20)
    rl.set_defaults(handler=commands["runs_list"])
    rs = rns.add_parser("show", help="one run's report")
    rs.add_argument("export")
    rs.add_argument("run_id")
    rs.set_defaults(handler=commands["runs_show"])
    con = top.add_parser("console", help="the web console on http://127.0.0.1:PORT")
    con.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1 (default 8080)")
    con.add_argument("--home", default=argparse.SUPPRESS, help="store folder (as --home before)")
    con.set_defaults(handler=commands["console"])
    return parser
