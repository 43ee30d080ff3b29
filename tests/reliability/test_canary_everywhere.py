"""A canary API key and canary people through the whole product: they surface only where meant.

The demo (``make demo``), the command line's failure paths and the run endpoints with their
Durable orchestration are driven with a canary key (the sandbox's real key, so the real key path
is exercised) and a snapshot holding canary people: a valid address (sent and confirmed), an
invalid one (rejected while preparing), one the sandbox fails at import time, and a first name.
Everything the product shows afterwards is searched:

* every log record at DEBUG and up (message with its arguments, ``exc_info`` and stack text;
  ``azure`` and ``urllib3`` loggers included), stdout and stderr;
* every HTTP answer (body and headers) and every exception turned into one (whole chain);
* the Durable orchestration's history (inputs and outputs of every activity), custom status
  and output;
* every file under the store, byte by byte.

The key may appear **nowhere**. The canary people may appear unmasked only in

* ``runs/<export>/<run>/rejected.csv`` and ``plan.csv``: the artefacts made for people to read;
* ``runs/<export>/<run>/chunks/*.jsonl``, ``confirmed/*.json`` and ``state/<export>/state.bin``:
  the data path (what is sent, which contacts ActiveCampaign failed or refused — finalize reads
  them from there into ``rejected.csv`` and the state — and what was sent), personal data by
  design, never shown to anyone;
* ``snapshots/…``: the input itself;

and masked (``c***@e***.com``) in logs. ``state.bin`` is compressed, so its bytes cannot show
an address (nor, for that matter, a key): the positive control reads it through its loader.
Positive controls show each check could fail (and ``test_the_checks_catch_a_leak`` that the
checks themselves do).
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import azure.functions as func
import pytest

from bench.durable.app import user_function
from bench.durable.driver import Driver
from bench.durable.host import DurableHost, Pending
from blueprints import orchestration as orch
from blueprints import triggers
from blueprints.auth import principal_header
from blueprints.http_util import error_response as http_error_response
from blueprints.runtime import Runtime, use_runtime
from exporter.cli import main as cli_main
from exporter.incremental import state as state_mod
from exporter.management.permissions import ADMIN
from exporter.management.secrets import LocalSecretProvider
from exporter.masking import mask_email
from exporter.run.engine import Engine
from exporter.storage.store import LocalStore
from sandbox import Faults, Field, Sandbox, SandboxConfig
from tests.functions.fake_durable import FakeDurableClient, make_runtime, seed

CANARY_KEY = "CANARY-AC-KEY-0b7e4d2a9c51f386d2"
"""The account's real key: the sandbox accepts it."""
CANARY_WRONG_KEY = "CANARY-AC-KEY-wrong-e61f0c93b5"
"""A key the sandbox answers with 403."""
KEYS = (CANARY_KEY, CANARY_WRONG_KEY)

VALID = "canary.valid+7f3a@example.com"
"""Valid: sent and confirmed."""
INVALID = "canary.invalid@@7f3a"
"""Invalid: rejected while preparing."""
FAILING = "canary.fails+7f3a@example.com"
"""Valid, but the sandbox lists it as failed at import."""
NAME = "Canaryfirstname7f3a"
PEOPLE = (VALID, INVALID, FAILING, NAME)
NEEDLES = ("canary.valid", "canary.invalid", "canary.fails", "canaryfirstname")
"""What must not appear unmasked (compared lower-cased, so a local part alone is caught too)."""

PERSONAL_DATA_FILES = (
    re.compile(r"runs/[^/]+/[^/]+/(rejected|plan)\.csv"),
    re.compile(r"runs/[^/]+/[^/]+/chunks/\d+\.jsonl"),
    re.compile(r"runs/[^/]+/[^/]+/confirmed/\d+\.json"),
    re.compile(r"state/[^/]+/state\.bin"),
    re.compile(r"snapshots/.+"),
)
"""Store files allowed to hold the canary people (see the module docstring)."""

TIME_SCALE = 100.0
LIST_ID = "1"


# --- what the product showed ------------------------------------------------------------------


class Seen:
    """Every text the product showed to the outside world, with where it was shown."""

    def __init__(self) -> None:
        self.texts: list[tuple[str, str]] = []
        self.exceptions: list[BaseException] = []

    def add(self, where: str, text: str) -> None:
        self.texts.append((where, text))

    def response(self, where: str, resp: func.HttpResponse) -> dict[str, Any]:
        self.add(f"{where}: response body", resp.get_body().decode("utf-8", "replace"))
        self.add(f"{where}: response headers", json.dumps(dict(resp.headers)))
        body: dict[str, Any] = json.loads(resp.get_body() or b"{}")
        return body

    def all_texts(self, caplog: pytest.LogCaptureFixture) -> Iterator[tuple[str, str]]:
        yield from self.texts
        for exc in self.exceptions:
            yield "exception", "".join(traceback.format_exception(exc))
            yield "exception repr", repr(exc) + repr(vars(exc))
        formatter = logging.Formatter()
        for record in caplog.records:
            where = f"log record {record.name}"
            yield where, record.getMessage()
            if record.exc_info:
                yield where + " exc_info", formatter.formatException(record.exc_info)
            if record.exc_text:
                yield where + " exc_text", record.exc_text
            if record.stack_info:
                yield where + " stack", record.stack_info


def check_texts(seen: Seen, caplog: pytest.LogCaptureFixture) -> int:
    """No key anywhere; no canary person unmasked. Returns how many texts were checked."""
    count = 0
    for where, text in seen.all_texts(caplog):
        count += 1
        for key in KEYS:
            assert key not in text, f"the API key in {where}: {text[:300]}"
        lowered = text.lower()
        for needle in NEEDLES:
            assert needle not in lowered, f"{needle!r} unmasked in {where}: {text[:300]}"
    return count


def check_store(root: Path) -> dict[str, set[str]]:
    """No key in any file; canary people only in the files allowed to hold them. Returns which
    allowed files held which needles (for the positive controls)."""
    found: dict[str, set[str]] = {}
    files = [p for p in sorted(root.rglob("*")) if p.is_file()]
    assert files, f"nothing stored under {root}"
    for path in files:
        rel = path.relative_to(root).as_posix()
        data = path.read_bytes()
        for key in KEYS:
            assert key.encode() not in data, f"the API key in {rel}"
        lowered = data.lower()
        held = {n for n in NEEDLES if n.encode() in lowered}
        if held:
            assert any(p.fullmatch(rel) for p in PERSONAL_DATA_FILES), (
                f"{sorted(held)} in {rel}, which is not meant to hold personal data"
            )
            found[rel] = held
    return found


def state_holds(home: Path, export: str, email: str) -> bool:
    """state.bin is compressed, so bytes do not show its addresses: ask its loader."""
    state, _etag = state_mod.load(LocalStore(home), export)
    return any(e.email == email for e in state.entries())


def held_in(found: dict[str, set[str]], pattern: str) -> set[str]:
    """The needles found in the stored files whose path matches ``pattern``."""
    return set().union(*(v for k, v in found.items() if re.fullmatch(pattern, k)))


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every logger at DEBUG; afterwards the root logger is put back as it was (``-v`` adds a
    handler to it and raises the urllib3 logger's level)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    caplog.set_level(logging.DEBUG)
    for name in ("azure", "urllib3", "exporter", "blueprints", "sandbox"):
        caplog.set_level(logging.DEBUG, logger=name)
    try:
        yield caplog
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


@contextmanager
def one_run_of_logging() -> Iterator[None]:
    """One in-process command: ``-v`` adds a stderr handler to the root logger and lowers the
    urllib3 logger to WARNING; both are undone afterwards so every command is heard once."""
    root = logging.getLogger()
    handlers = list(root.handlers)
    logging.getLogger("urllib3").setLevel(logging.DEBUG)
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(logging.DEBUG)


def canary_rows() -> list[list[str]]:
    """Rows in the demo's column order (Email, FirstName, LastName, Phone, City, Birthday,
    Tier)."""
    return [
        [VALID, NAME, "Doe", "+4930123456", "Berlin", "1990-01-01", "gold"],
        [INVALID, NAME, "Doe", "", "Berlin", "", ""],
        [FAILING, NAME, "Doe", "", "Lisbon", "", ""],
    ]


def write_segment(path: Path, *, extra: int = 20, first: str = "FirstName") -> Path:
    """A snapshot with the canary people and ``extra`` ordinary ones (Email, ``first``,
    LastName, City)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"Email,{first},LastName,City"]
    lines += [f"{r[0]},{r[1]},{r[2]},{r[4]}" for r in canary_rows()]
    lines += [f"person{i}@example.org,P{i},Doe,Oslo" for i in range(extra)]
    path.write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")
    return path


# --- the demo ---------------------------------------------------------------------------------


def test_the_demo_shows_neither_the_key_nor_the_people(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    debug_logs: pytest.LogCaptureFixture,
) -> None:
    """``make demo`` with the canary key, the canary people added to both segment versions
    and one of them failing at import; its command-line steps run in process with ``-vv`` so
    every log record is captured."""
    from examples import demo, synthetic

    work = tmp_path / "demo"
    work.mkdir()
    monkeypatch.setattr(demo, "API_KEY", CANARY_KEY)
    monkeypatch.setattr(demo, "SANDBOX_TIME_SCALE", TIME_SCALE)
    monkeypatch.setattr(demo, "tempfile", SimpleNamespace(mkdtemp=lambda prefix="": str(work)))
    real_write = synthetic.write_csv

    def with_canaries(path: Any, n: int, *, version: int = 0) -> Path:
        out = real_write(path, n, version=version)
        with out.open("a", encoding="utf-8", newline="") as fh:
            fh.writelines(",".join(row) + "\r\n" for row in canary_rows())
        return out

    monkeypatch.setattr(synthetic, "write_csv", with_canaries)

    def failing_config(**kwargs: Any) -> SandboxConfig:
        return SandboxConfig(**kwargs, faults=Faults(failure_emails=frozenset({FAILING})))

    monkeypatch.setattr(demo, "SandboxConfig", failing_config)
    codes: list[int] = []

    def in_process(home: Path, env: dict[str, str], *args: str) -> int:
        argv = ["--home", str(home), "-vv", "--time-scale", str(TIME_SCALE), *args]
        with one_run_of_logging():
            codes.append(cli_main(argv, env=env))
        return codes[-1]

    monkeypatch.setattr(demo, "_cli", in_process)

    demo.main(["--rows", "300", "--keep"])

    out, err = capsys.readouterr()
    seen = Seen()
    seen.add("demo stdout", out)
    seen.add("demo stderr", err)
    # Positive controls: the runs happened, with the key, and the logs were heard.
    assert codes and set(codes) <= {0, 1}, codes
    assert "API key rejected" not in err
    assert any(r.name.startswith("exporter.") for r in debug_logs.records)
    assert any(r.levelno == logging.DEBUG for r in debug_logs.records)
    assert check_texts(seen, debug_logs) > 30
    found = check_store(work / "home")
    assert "canary.invalid" in held_in(found, r"runs/.*/rejected\.csv")
    assert "canary.fails" in held_in(found, r"runs/.*/confirmed/.*")
    assert state_holds(work / "home", "newsletter", VALID)


# --- the command line's failure paths -----------------------------------------------------------


class Cli:
    """The command line in process, everything it prints kept in ``seen``."""

    def __init__(self, home: Path, env: dict[str, str], seen: Seen) -> None:
        self.home, self.env, self.seen = home, env, seen

    def __call__(self, *args: str, verbose: bool = True, want: int | None = None) -> str:
        out, err = io.StringIO(), io.StringIO()
        flags = ["-vv"] if verbose else []
        argv = ["--home", str(self.home), *flags, "--time-scale", str(TIME_SCALE), *args]
        with one_run_of_logging():
            code = cli_main(argv, env=self.env, out=out, err=err)
        self.seen.add(f"stdout of {args}", out.getvalue())
        self.seen.add(f"stderr of {args}", err.getvalue())
        if want is not None:
            assert code == want, (args, out.getvalue(), err.getvalue())
        return out.getvalue() + err.getvalue()


def test_the_command_line_failure_paths_show_neither_the_key_nor_the_people(
    tmp_path: Path, debug_logs: pytest.LogCaptureFixture
) -> None:
    faults = Faults(
        http_503_rate=0.15,
        http_429_rate=0.15,
        reset_rate=0.1,
        retry_after=1.0,
        failure_emails=frozenset({FAILING}),
    )
    config = SandboxConfig(
        api_key=CANARY_KEY,
        lists={LIST_ID: "Newsletter"},
        fields=[Field(id="1", title="City", type="text", perstag="CITY")],
        time_scale=TIME_SCALE,
        faults=faults,
        seed=7,
    )
    home = tmp_path / "home"
    env = {
        "CANARY_KEY": CANARY_KEY,
        "WRONG_KEY": CANARY_WRONG_KEY,
        "EXPORTER_ALLOW_LOOPBACK_SANDBOX": "true",
    }
    seen = Seen()
    cli = Cli(home, env, seen)
    segment = write_segment(tmp_path / "segment.csv")
    with Sandbox(config) as sb:
        host = f"127.0.0.1:{sb.port}"

        def connection(name: str, ref: str, *extra: str, want: int = 0) -> str:
            return cli(
                "connections",
                "add",
                "--name",
                name,
                "--display-name",
                name,
                "--hostname",
                host,
                "--api-key-ref",
                ref,
                "--agree-to-privacy-statement",
                *extra,
                want=want,
            )

        def export(name: str, conn: str, *extra: str) -> None:
            cli(
                "exports",
                "add",
                "--name",
                name,
                "--display-name",
                name,
                "--connection",
                conn,
                "--segment",
                "snapshots/x/",
                "--list-id",
                LIST_ID,
                "--email",
                "Email",
                "--first-name",
                "FirstName",
                "--last-name",
                "LastName",
                "--max-shrink",
                "0.5",
                *extra,
                want=0,
            )

        # Connections: the good key verified, a wrong key (403), a reference that resolves to
        # nothing, and the key itself pasted where its reference belongs.
        connection("good", "env:CANARY_KEY")  # Connect checks the key by default
        assert "API key rejected" in connection("wrong", "env:WRONG_KEY", want=1)
        connection("wrong", "env:WRONG_KEY", "--no-verify")
        assert "rejected" in cli("connections", "verify", "wrong", want=1)
        cli("--json", "connections", "verify", "wrong", want=1)
        connection("nokey", "env:NOT_SET_ANYWHERE", "--no-verify", want=0)
        connection("pasted", CANARY_KEY, want=2)
        connection("pasted", f"env:{CANARY_KEY}", want=2)
        cli("--json", "connections", "show", "good", want=0)
        cli("connections", "list", want=0)
        export("news", "good", "--field", "City=City")
        # Exports are saved while their keys still work; then the key is revoked (403) and the
        # other one's variable disappears.
        env["WRONG_KEY"], env["NOT_SET_ANYWHERE"] = CANARY_KEY, CANARY_KEY
        export("wrongkey", "wrong")
        export("keyless", "nokey")
        env["WRONG_KEY"] = CANARY_WRONG_KEY
        del env["NOT_SET_ANYWHERE"]

        # A dry run, then the real run through 503s, 429s and resets.
        cli("run", "news", "--snapshot", str(segment), "--dry-run", want=0)
        cli("--json", "run", "news", "--snapshot", str(segment), verbose=False)
        cli("runs", "list", "news", want=0)
        cli("--json", "runs", "list", "news", want=0)

        # The key refused, the key missing.
        cli("run", "wrongkey", "--snapshot", str(segment), want=1)
        cli("--json", "run", "wrongkey", "--snapshot", str(segment), want=1)
        cli("run", "keyless", "--snapshot", str(segment))

        # Snapshots that cannot be read: missing, binary garbage, truncated gzip, no email column.
        cli("run", "news", "--snapshot", str(tmp_path / "missing.csv"), want=2)
        garbage = tmp_path / "garbage.csv"
        garbage.write_bytes(b"\x00\xff\xfe" * 200 + VALID.encode())
        cli("run", "news", "--snapshot", str(garbage))
        truncated = tmp_path / "truncated.csv.gz"
        import gzip

        truncated.write_bytes(gzip.compress(segment.read_bytes())[:60])
        cli("run", "news", "--snapshot", str(truncated))
        headless = tmp_path / "headless.csv"
        headless.write_text(f"Mail,First\r\n{VALID},{NAME}\r\n", encoding="utf-8")
        cli("--json", "run", "news", "--snapshot", str(headless))
        ragged = tmp_path / "ragged.csv"
        ragged.write_text(
            f"Email,FirstName,LastName,City\r\n{VALID},{NAME},Doe,Oslo,extra,cells\r\n"
            f'"{FAILING},{NAME}\r\n',
            encoding="utf-8",
        )
        cli("run", "news", "--snapshot", str(ragged))

        # The shrink guard: the segment shrank to one person.
        small = tmp_path / "small.csv"
        small.write_text(f"Email,FirstName,LastName,City\r\n{VALID},{NAME},Doe,Oslo\r\n")
        guarded = cli("run", "news", "--snapshot", str(small), want=1)
        assert "shrink" in guarded.lower() or "shrank" in guarded.lower(), guarded
        cli("--json", "run", "news", "--snapshot", str(small), want=1)
        members = sb.list_members(LIST_ID)
        faulted = sb.injected_fault_counts()

    # Positive controls: the key reached ActiveCampaign, the faults and failures happened.
    assert VALID in members and FAILING not in members
    assert {"http_503", "http_429", "reset", "failure_email"} <= set(faulted), faulted
    shown = "\n".join(t for _w, t in seen.texts)
    assert "API key rejected by ActiveCampaign for connection 'wrong'" in shown
    assert "NOT_SET_ANYWHERE is not set" in shown
    assert any(r.name.startswith("exporter.activecampaign") for r in debug_logs.records)
    assert check_texts(seen, debug_logs) > 50
    found = check_store(home)
    assert "canary.invalid" in held_in(found, r"runs/news/.*/rejected\.csv")
    assert "canary.fails" in held_in(found, r"runs/news/.*/confirmed/.*")
    assert "canary.valid" in held_in(found, r"runs/news/.*/plan\.csv")


# --- the run endpoints and the orchestration -----------------------------------------------------


SNAPSHOT = "snapshots/high-value/2026-01-05.csv"
ORIGIN = "https://exporter.example.net"


def http(method: str, route: str, params: dict[str, str], body: Any = None) -> func.HttpRequest:
    data = b"" if body is None else json.dumps(body).encode()
    headers = {
        "X-MS-CLIENT-PRINCIPAL": principal_header("ada@example.com", [ADMIN]),
        **({"Content-Type": "application/json"} if data else {}),
    }
    return func.HttpRequest(
        method,
        f"{ORIGIN}/api/{route}?code=function-key",
        body=data,
        params={"code": "function-key"},
        route_params=params,
        headers=headers,
    )


def run_orchestration(data: dict[str, Any], iid: str, seen: Seen) -> Any:
    """Step the registered orchestrator through the SDK's replay engine with the real
    activities; every activity failure is recorded as an exception the product raised."""

    def call(p: Pending) -> Any:
        try:
            return user_function(p.name)(p.input)
        except Exception as exc:  # noqa: BLE001 - handed to the orchestration as a failure
            seen.exceptions.append(exc)
            return Exception(f"Activity function '{p.name}' failed: {exc}")

    host = DurableHost(user_function(orch.RUN_ORCHESTRATOR), data, instance_id=iid)
    [replay] = Driver([host], activity=call).run(max_rounds=200)
    seen.add("orchestration history", host.context_json())
    seen.add("orchestration custom status", json.dumps(replay.custom_status, default=str))
    seen.add("orchestration output", json.dumps(replay.output, default=str))
    seen.add("orchestration failure", str(replay.failed))
    return replay


def test_the_run_endpoints_and_the_orchestration_show_neither_the_key_nor_the_people(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, debug_logs: pytest.LogCaptureFixture
) -> None:
    seen = Seen()

    def recording(exc: Exception, **kwargs: Any) -> func.HttpResponse:
        seen.exceptions.append(exc)
        return http_error_response(exc, **kwargs)

    monkeypatch.setattr(triggers, "error_response", recording)
    store = LocalStore(tmp_path / "store")
    config = SandboxConfig(
        api_key=CANARY_KEY,
        lists={LIST_ID: "Newsletter"},
        time_scale=TIME_SCALE,
        faults=Faults(failure_emails=frozenset({FAILING})),
    )
    client = FakeDurableClient()
    route = {"name": "weekly"}

    def runtime_with(key: str) -> Runtime:
        """The worker's runtime, its secrets resolving ``env:AC_KEY`` to ``key``."""
        base = make_runtime(store, width=2)
        secrets = LocalSecretProvider({"AC_KEY": key})
        engine = Engine(
            store, secrets, host_policy=base.settings.hosts, time_scale=TIME_SCALE, chunk_batches=1
        )
        return Runtime(base.settings, store, secrets, engine, base.management)

    def start(body: Any) -> dict[str, Any]:
        req = http("POST", "exports/weekly/runs", route, body)
        return seen.response("POST runs", asyncio.run(triggers.start_export_run(req, client)))

    def finish(started: dict[str, Any]) -> None:
        iid = started["instance_id"]
        data = json.loads(client.instances[iid]["input"])
        replay = run_orchestration(data, iid, seen)
        if replay.failed:
            client.set(iid, "Failed", output=str(replay.failed))
        else:
            client.set(iid, "Completed", output=replay.output, customStatus=replay.custom_status)
        params = {**route, "instance_id": iid}
        get = http("GET", f"exports/weekly/runs/{iid}", params)
        seen.response("GET run", asyncio.run(triggers.get_export_run(get, client)))
        cancel = http("POST", f"exports/weekly/runs/{iid}/cancel", params)
        seen.response("cancel", asyncio.run(triggers.cancel_export_run(cancel, client)))

    with Sandbox(config) as sb:
        seed(store, hostname=sb.base_url.removeprefix("http://"), list_id=LIST_ID)
        segment = write_segment(tmp_path / "segment.csv", first="First")
        store.write_bytes(SNAPSHOT, segment.read_bytes())

        with use_runtime(runtime_with(CANARY_KEY)):
            # Bad requests carrying the key and a person.
            assert start({"snapshot": CANARY_KEY})["code"] == "invalid"
            start({CANARY_KEY: True, "dry_run": CANARY_KEY})
            # A dry run, then the real run (one person fails at import).
            finish(start({"snapshot": SNAPSHOT, "dry_run": True}))
            finish(start({"snapshot": SNAPSHOT}))
            listed = http("GET", "exports/weekly/runs", route)
            seen.response("GET runs", triggers.list_export_runs(listed))
        with use_runtime(runtime_with(CANARY_WRONG_KEY)):
            # ActiveCampaign refuses the key: the activities fail, the run fails.
            finish(start({"snapshot": SNAPSHOT, "full_resync": True}))
        members = sb.list_members(LIST_ID)

    # Positive controls.
    assert VALID in members and FAILING not in members
    assert any("API key rejected" in t for _w, t in seen.texts), "the wrong key was refused"
    assert seen.exceptions
    assert check_texts(seen, debug_logs) > 30
    found = check_store(store.root)
    assert "canary.invalid" in held_in(found, r"runs/weekly/.*/rejected\.csv")
    assert "canary.fails" in held_in(found, r"runs/weekly/.*/confirmed/.*")
    assert "canary.valid" in held_in(found, r"runs/weekly/.*/plan\.csv")


def test_the_checks_catch_a_leak(tmp_path: Path, debug_logs: pytest.LogCaptureFixture) -> None:
    """The checks above could fail: an unmasked address in a log line, the key in an answer,
    a person in a report, the key in an allowed file are each caught; a masked address is not."""
    logging.getLogger("exporter.test").info("sent %s", mask_email(VALID))
    assert check_texts(Seen(), debug_logs) == 1
    logging.getLogger("exporter.test").info("sent %s", VALID.upper())
    with pytest.raises(AssertionError, match="unmasked in log record"):
        check_texts(Seen(), debug_logs)
    debug_logs.clear()
    seen = Seen()
    seen.add("response body", f'{{"key": "{CANARY_WRONG_KEY}"}}')
    with pytest.raises(AssertionError, match="the API key in response body"):
        check_texts(seen, debug_logs)
    report = tmp_path / "runs" / "x" / "r1" / "report.json"
    report.parent.mkdir(parents=True)
    report.write_text(json.dumps({"error": f"bad row {INVALID}"}))
    with pytest.raises(AssertionError, match="not meant to hold personal data"):
        check_store(tmp_path)
    report.unlink()
    rejected = report.with_name("rejected.csv")
    rejected.write_text(f"{INVALID},invalid_email\n")
    assert check_store(tmp_path) == {"runs/x/r1/rejected.csv": {"canary.invalid"}}
    rejected.write_text(f"{CANARY_KEY}\n")
    with pytest.raises(AssertionError, match=re.escape("the API key in runs/x/r1/rejected.csv")):
        check_store(tmp_path)
