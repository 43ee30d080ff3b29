"""``python -m sandbox``: serve an emulated ActiveCampaign account until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from sandbox.config import Faults, SandboxConfig, parse_field_spec, parse_list_spec, unique
from sandbox.errors import SandboxConfigError
from sandbox.server import Sandbox


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(
        prog="python -m sandbox", description="Local emulator of the ActiveCampaign API v3."
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port (printed)")
    p.add_argument("--api-key", required=True, help="the only accepted Api-Token")
    p.add_argument("--list", action="append", default=[], metavar="ID:NAME")
    p.add_argument("--field", action="append", default=[], metavar="ID:TITLE[:TYPE[:PERSTAG]]")
    p.add_argument("--tag", action="append", default=[], metavar="NAME")
    p.add_argument("--rate-per-second", type=int, default=5)
    p.add_argument("--bulk-multi-per-minute", type=int, default=100)
    p.add_argument("--bulk-single-per-minute", type=int, default=20)
    p.add_argument("--no-limits", action="store_true", help="lift every rate budget")
    p.add_argument("--time-scale", type=float, default=1.0, help="sandbox seconds per second")
    p.add_argument("--seed", type=int, default=0)
    f = p.add_argument_group("faults (rates between 0 and 1)")
    f.add_argument("--http-503-rate", type=float, default=0.0)
    f.add_argument("--http-429-rate", type=float, default=0.0)
    f.add_argument("--reset-rate", type=float, default=0.0)
    f.add_argument("--lost-response-rate", type=float, default=0.0)
    f.add_argument("--slow-rate", type=float, default=0.0)
    f.add_argument("--slow-seconds", type=float, default=5.0)
    f.add_argument("--retry-after", type=float, default=1.0, help="injected 429 Retry-After")
    f.add_argument("--batch-failed-rate", type=float, default=0.0)
    f.add_argument("--batch-interrupted-rate", type=float, default=0.0)
    f.add_argument("--failure-email", action="append", default=[], metavar="EMAIL")
    f.add_argument(
        "--fault-endpoint",
        action="append",
        default=[],
        metavar="'METHOD /path'",
        help="limit request faults to these endpoints (default: all)",
    )
    p.add_argument("--log-level", default="WARNING")
    return p


def config_from_args(args: argparse.Namespace) -> SandboxConfig:
    """The sandbox configuration the command line describes."""
    lists = dict(parse_list_spec(spec) for spec in args.list) or {"1": "Newsletter"}
    faults = Faults(
        http_503_rate=args.http_503_rate,
        http_429_rate=args.http_429_rate,
        reset_rate=args.reset_rate,
        lost_response_rate=args.lost_response_rate,
        slow_rate=args.slow_rate,
        slow_seconds=args.slow_seconds,
        retry_after=args.retry_after,
        batch_failed_rate=args.batch_failed_rate,
        batch_interrupted_rate=args.batch_interrupted_rate,
        failure_emails=frozenset(args.failure_email),
        endpoints=frozenset(args.fault_endpoint) if args.fault_endpoint else None,
    )
    return SandboxConfig(
        api_key=args.api_key,
        lists=lists,
        fields=[parse_field_spec(spec) for spec in args.field],
        tags=unique(args.tag),
        time_scale=args.time_scale,
        limits=not args.no_limits,
        rate_per_second=args.rate_per_second,
        bulk_multi_per_minute=args.bulk_multi_per_minute,
        bulk_single_per_minute=args.bulk_single_per_minute,
        faults=faults,
        seed=args.seed,
        host=args.host,
        port=args.port,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGINT or SIGTERM; exit status 0 on a clean stop, 2 on bad options."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    try:
        config = config_from_args(args)
    except SandboxConfigError as exc:
        print(f"sandbox: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    # The collector must never pause the server for long: a pause queues arrivals that are then
    # charged to the rate budgets as one burst (at --time-scale 10 a 50 ms pause is half a
    # sandbox second), so a client that paced itself perfectly is throttled. Young collections
    # stay a few milliseconds (5,000 objects, still ~10x fewer than the default's), and the
    # account's contacts, which only ever grow, are frozen out of the collector every half
    # second, so full collections never rescan a million of them.
    gc.set_threshold(5_000, 20, 20)
    sandbox = Sandbox(config).start()
    print(f"sandbox listening on {sandbox.base_url}", flush=True)
    try:
        while not stop.wait(0.5):
            gc.freeze()
    finally:
        sandbox.stop()
    print("sandbox stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
