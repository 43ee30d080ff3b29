"""Shared set-up for the reliability tests: a sandbox account, a local store holding one
connection and one export (created through the real command line), engines with a tunable
client, and checks that the store is never left half-written."""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from exporter.activecampaign import ActiveCampaignClient, RateLimiter, RetryPolicy, Transport
from exporter.cli import main as cli_main
from exporter.incremental import state as state_mod
from exporter.management.config import Connection
from exporter.management.hostnames import base_url
from exporter.management.secrets import LocalSecretProvider
from exporter.run.engine import ClientFactory, Engine, RunOptions
from exporter.run.report import RunReport
from exporter.settings import HostPolicy
from exporter.storage.store import LocalStore
from sandbox import Faults, Field, Sandbox, SandboxConfig

KEY = "reliability-key"
KEY_VAR = "RELIABILITY_AC_KEY"
ENV = {KEY_VAR: KEY, "EXPORTER_ALLOW_LOOPBACK_SANDBOX": "true"}
EXPORT = "newsletter"
CONNECTION = "sandbox"
LIST_ID = "1"
SEGMENT = "snapshots/newsletter/"
CITY_FIELD = Field(id="1", title="City", type="text", perstag="CITY")


def sandbox_config(
    *, time_scale: float = 100.0, faults: Faults | None = None, seed: int = 0
) -> SandboxConfig:
    """An account with the newsletter list and a City field, budgets on, time sped up."""
    return SandboxConfig(
        api_key=KEY,
        lists={LIST_ID: "Newsletter", "2": "Other"},
        fields=[CITY_FIELD],
        time_scale=time_scale,
        faults=faults or Faults(),
        seed=seed,
    )


@contextmanager
def running_sandbox(**kwargs: object) -> Iterator[Sandbox]:
    """An in-process sandbox (see :func:`sandbox_config`), stopped afterwards."""
    with Sandbox(sandbox_config(**kwargs)) as sb:  # type: ignore[arg-type]
        yield sb


def cli(home: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """``python -m exporter --home HOME ARGS`` in process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    code = cli_main(["--home", str(home), *args], env=env or ENV, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def configure(
    home: Path,
    port: int,
    *,
    export: str = EXPORT,
    list_id: str = LIST_ID,
    max_shrink: float = 1.0,
    extra: Sequence[str] = (),
) -> None:
    """Create the connection and the export through the command line (as a user would)."""
    if not (home / "config" / "connections" / f"{CONNECTION}.json").exists():
        code, _out, err = cli(
            home,
            "connections",
            "add",
            "--name",
            CONNECTION,
            "--display-name",
            "Sandbox",
            "--hostname",
            f"127.0.0.1:{port}",
            "--api-key-ref",
            f"env:{KEY_VAR}",
            "--agree-to-privacy-statement",
        )
        assert code == 0, err
    code, _out, err = cli(
        home,
        "exports",
        "add",
        "--name",
        export,
        "--display-name",
        "Newsletter",
        "--connection",
        CONNECTION,
        "--segment",
        SEGMENT,
        "--list-id",
        list_id,
        "--email",
        "Email",
        "--first-name",
        "FirstName",
        "--last-name",
        "LastName",
        "--field",
        "City=City",
        "--max-shrink",
        str(max_shrink),
        *extra,
    )
    assert code == 0, err


def client_factory(
    time_scale: float, *, timeout: float = 30.0, transport: Transport | None = None
) -> ClientFactory:
    """Real clients (real HTTP) with budgets and backoffs scaled like the sandbox's clock and
    the given request timeout (low, to turn the sandbox's slow answers into timeouts);
    ``transport`` wraps the real one where a test needs a fault the sandbox cannot inject."""

    def build(connection: Connection, key: str) -> ActiveCampaignClient:
        return ActiveCampaignClient(
            base_url(connection.hostname),
            key,
            limiter=RateLimiter(time_scale=time_scale),
            retry=RetryPolicy(
                initial_backoff=1.0 / time_scale,
                max_backoff=30.0 / time_scale,
                deadline=600.0 / time_scale,
            ),
            timeout=timeout,
            transport=transport,
        )

    return build


def engine(
    home: Path,
    *,
    time_scale: float = 100.0,
    timeout: float = 30.0,
    chunk_batches: int = 40,
    transport: Transport | None = None,
) -> Engine:
    """An engine over the local store at ``home``, as the command line builds it."""
    return Engine(
        LocalStore(home),
        LocalSecretProvider(ENV),
        host_policy=HostPolicy(allow_loopback_sandbox=True),
        client_factory=client_factory(time_scale, timeout=timeout, transport=transport),
        chunk_batches=chunk_batches,
        time_scale=time_scale,
    )


def run_csv(
    eng: Engine, csv_path: Path, *, export: str = EXPORT, options: RunOptions | None = None
) -> RunReport:
    """One run of ``export`` over a local CSV (what ``run --snapshot FILE`` does)."""
    from exporter.storage import runs

    req = eng.new_run(
        export,
        snapshot=Engine.local_snapshot(csv_path),
        options=options or RunOptions(),
        snapshot_location=runs.LOCAL,
    )
    return eng.run(req)


def state_emails(home: Path, export: str = EXPORT) -> dict[str, tuple[int, bool]]:
    """The export's state as email -> (fingerprint, subscribed by us)."""
    state, _etag = state_mod.load(LocalStore(home), export)
    return {e.email: (e.fingerprint, e.subscribed_by_us) for e in state.entries()}


def check_store_intact(home: Path) -> list[str]:
    """Every JSON file in the store parses, every report reconciles, every state loads.
    Returns the problems found (empty when the store is sound)."""
    problems: list[str] = []
    store = LocalStore(home)
    for path in sorted(home.rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(home).as_posix()
        if path.name.startswith(".tmp-") or rel == ".lock":
            continue  # an interrupted atomic write's leftover: the store never lists it
        if path.suffix == ".json":
            try:
                data = json.loads(path.read_bytes())
            except ValueError as exc:
                problems.append(f"{rel}: not JSON ({exc})")
                continue
            if path.name == "report.json":
                report = RunReport.from_dict(data)
                problems.extend(f"{rel}: {p}" for p in report.reconciliation_problems())
        elif path.name == "state.bin":
            export = path.parent.name
            try:
                state_mod.load(store, export)
            except Exception as exc:  # noqa: BLE001 - any failure is the finding
                problems.append(f"{rel}: state does not load ({exc})")
    return problems


@dataclass(frozen=True)
class Person:
    """One row of a generated snapshot."""

    email: str
    first: str = "Ann"
    city: str = "Berlin"


def write_people(path: Path, people: Iterable[Person], *, invalid: Iterable[str] = ()) -> Path:
    """A snapshot CSV with the export's columns (invalid emails appended as extra rows)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["Email,FirstName,LastName,City"]
    lines += [f"{p.email},{p.first},Doe,{p.city}" for p in people]
    lines += [f"{e},Bad,Row,Nowhere" for e in invalid]
    path.write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")
    return path
