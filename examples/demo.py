"""``make demo``: export a sample segment to a local ActiveCampaign sandbox, twice.

1. starts the sandbox in-process on a free port (list "Newsletter", three custom fields);
2. writes a synthetic segment of a few thousand profiles (``examples/synthetic.py``);
3. creates a connection and an export from ``examples/connection.json`` and
   ``examples/export.json`` by running the real command line, in a temporary ``--home``;
4. exports the segment and prints the report;
5. edits the segment (some contacts changed, some left, some joined) and exports it again:
   only the changes are sent, and the leavers are unsubscribed;
6. shows what the sandbox's list holds, and stops the sandbox.

    python -m examples.demo [--rows 3000] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from examples import synthetic
from exporter.masking import mask_email
from sandbox import Field, Sandbox, SandboxConfig

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
API_KEY = "demo-0123456789-sandbox-key"
KEY_VARIABLE = "DEMO_AC_API_KEY"
LIST_ID = "1"
SANDBOX_TIME_SCALE = 10.0
"""The sandbox processes imports 10x faster than ActiveCampaign; the exporter keeps the real
rate budgets (it is then slower than the sandbox allows, never faster)."""


def _say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def _cli(home: Path, env: dict[str, str], *args: str) -> int:
    """Run ``python -m exporter --home HOME ARGS`` and show it, as a user would type it."""
    shown = " ".join(shlex.quote(a) for a in ("python", "-m", "exporter", *args))
    print(f"$ {shown}", flush=True)
    cmd = [sys.executable, "-m", "exporter", "--home", str(home), *args]
    result = subprocess.run(cmd, env=env, cwd=ROOT, check=False)  # noqa: S603 - our own CLI
    if result.returncode not in (0, 1):
        raise SystemExit(f"the command failed with exit code {result.returncode}")
    return result.returncode


def _show_list(sb: Sandbox) -> None:
    active = sorted(sb.list_members(LIST_ID, 1))
    unsubscribed = sb.list_members(LIST_ID, 2)
    print(f"list 'Newsletter': {len(active):,} subscribed, {len(unsubscribed):,} unsubscribed")
    for email in active[:3]:
        contact = sb.contact(email) or {}
        print(f"  {mask_email(email)}  fields={contact.get('fields')}  tags={contact.get('tags')}")


def _what_changed(home: Path) -> str:
    """The newest run's changes in words, from its report (not from what the demo wrote: rows
    the exporter rejected never joined, so never leave)."""
    newest = max(
        (home / "runs" / "newsletter").glob("*/report.json"), key=lambda p: p.stat().st_mtime
    )
    report = json.loads(newest.read_text(encoding="utf-8"))
    return (
        f"the report: {report['new']:,} joined, {report['changed']:,} changed, "
        f"{report['left']:,} left ({report['leavers_unsubscribed']:,} unsubscribed), "
        f"{report['unchanged']:,} unchanged and not sent"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=3000, help="profiles in the segment")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    started = time.monotonic()
    config = SandboxConfig(
        api_key=API_KEY,
        lists={LIST_ID: "Newsletter"},
        fields=[
            Field("1", "City"),
            Field("2", "Birthday", "date", "BIRTHDAY"),
            Field("3", "Tier", "dropdown"),
        ],
        time_scale=SANDBOX_TIME_SCALE,
    )
    tmp = Path(tempfile.mkdtemp(prefix="exporter-demo-"))
    home = tmp / "home"
    env = {**os.environ, KEY_VARIABLE: API_KEY, "EXPORTER_ALLOW_LOOPBACK_SANDBOX": "true"}
    with Sandbox(config) as sb:
        _say(f"ActiveCampaign sandbox listening on {sb.base_url} (list {LIST_ID}: Newsletter)")
        first = synthetic.write_csv(tmp / "segment-v1.csv", args.rows)
        print(f"wrote a synthetic segment of {args.rows:,} profiles to {first}")

        _say("create the connection (the API key stays in $" + KEY_VARIABLE + ")")
        _cli(
            home,
            env,
            "connections",
            "add",
            "--file",
            str(HERE / "connection.json"),
            "--hostname",
            f"127.0.0.1:{sb.port}",
            "--agree-to-privacy-statement",
            "--verify",
        )
        _cli(home, env, "connections", "list")
        _say("create the export (custom fields are resolved on the account)")
        _cli(home, env, "exports", "add", "--file", str(HERE / "export.json"))

        _say("first run: every valid profile is new")
        _cli(home, env, "run", "newsletter", "--snapshot", str(first))
        _show_list(sb)

        second = synthetic.write_csv(tmp / "segment-v2.csv", args.rows, version=1)
        _say("second run: the segment moved on (some cities changed, some people left or joined)")
        _cli(home, env, "run", "newsletter", "--snapshot", str(second))
        print(_what_changed(home))
        _show_list(sb)

        _say("run history")
        _cli(home, env, "runs", "list", "newsletter")
        requests = sb.request_counts()
        print(f"sandbox requests by endpoint: {requests}")
    _say(f"done in {time.monotonic() - started:.1f} s; the sandbox is stopped")
    if args.keep:
        print(f"the store is kept in {home}")
        print(f"open it in the web console: python -m exporter console --home {home}")
    else:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        print("web console on the demo's data: make demo DEMO_ARGS=--keep, then run what it prints")


if __name__ == "__main__":
    main()
