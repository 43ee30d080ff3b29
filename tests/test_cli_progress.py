"""What ``python -m exporter run`` writes on stderr (issue #17 item 3): progress per batch with
rates measured from each phase's start, no frame left behind, plain periodic lines without a
sized terminal, retries summarised once a minute, the closing paragraph and ``--quiet``.

The drawing and the summary are driven with a fake clock; the command itself runs for real
against the sandbox, once under a pseudo-terminal (``pty``) and once into a pipe.
"""

from __future__ import annotations

import fcntl
import io
import logging
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
from collections.abc import Iterator
from pathlib import Path

import pytest

from examples import synthetic
from exporter.cli_progress import CLEAR, LineSink, LogSummary, ProgressView, summary_paragraph
from exporter.progress import ProgressEvent
from exporter.run.report import RunReport
from sandbox import Faults, Sandbox
from tests.test_cli import KEY, KEY_VAR, SCALE, sandbox_config, setup_export

ROOT = Path(__file__).resolve().parent.parent
ESC = "\x1b"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def rates(text: str, unit: str) -> list[float]:
    return [float(m.replace(",", "")) for m in re.findall(rf"([\d,.]+) {unit}/s", text)]


# --- the view, with a fake clock --------------------------------------------------------------


def test_rates_are_measured_from_the_phase_start_not_from_the_first_event() -> None:
    clock, err = FakeClock(), io.StringIO()
    view = ProgressView(err, width=120, clock=clock, redraw=0.0)
    clock.now += 0.0001  # the old bar: 50,000 rows in 0.1 ms → hundreds of millions rows/s
    view(ProgressEvent("prepare", 50_000, None))
    assert rates(err.getvalue(), "rows") == []  # under a second: no rate yet
    clock.now += 1.9999
    view(ProgressEvent("prepare", 100_000, None))
    assert rates(err.getvalue(), "rows") == [50_000.0]  # 100,000 rows in the 2 s since start
    view(ProgressEvent("prepare", 120_000, 120_000))
    clock.now += 4.0  # the send phase starts here
    view(ProgressEvent("push", 250, 1_000))
    clock.now += 1.0
    view(ProgressEvent("push", 500, 1_000))
    view(ProgressEvent("confirm", 250, 1_000))
    last = err.getvalue().rsplit(CLEAR, 1)[-1]
    assert "250/1,000 settled (25%), 500 sent" in last
    assert rates(last, "contacts") == [250.0]  # 250 settled in the 1 s since sending began
    assert "ETA 3s" in last  # 750 left at 250 a second


def test_every_batch_moves_the_line_and_the_end_leaves_no_frame() -> None:
    clock, err = FakeClock(), io.StringIO()
    view = ProgressView(err, width=60, clock=clock, redraw=0.1)
    for batch in range(1, 41):
        clock.now += 0.2
        view(ProgressEvent("push", batch * 250, 10_000))
    frames = err.getvalue().split(CLEAR)[1:]
    assert len(frames) == 40  # one chunk of 10,000 contacts: forty frames, not one
    assert all(len(frame) <= 59 for frame in frames)  # fitted to the width
    view(ProgressEvent("finalize", 0, 1, "finalizing"))
    view.close()
    out = err.getvalue()
    assert out.endswith(CLEAR)  # erased at the end
    assert not re.search(r"(?<![\d,])0/1(?![\d,])", out)  # and no stray finalize frame


def test_redraws_are_limited_to_ten_a_second() -> None:
    clock, err = FakeClock(), io.StringIO()
    view = ProgressView(err, width=80, clock=clock)
    for n in range(1_000):
        clock.now += 0.001  # a thousand events in one second
        view(ProgressEvent("push", n, 1_000))
    assert 9 <= err.getvalue().count(CLEAR) <= 11


def test_without_a_width_it_writes_a_plain_line_every_interval() -> None:
    clock, err = FakeClock(), io.StringIO()
    view = ProgressView(err, width=None, clock=clock, every=30.0)
    for second in range(1, 101):
        clock.now += 1.0
        view(ProgressEvent("push", second * 10, 1_000))
    view.close()
    lines = err.getvalue().splitlines()
    assert len(lines) == 3  # at 30, 60 and 90 seconds
    assert ESC not in err.getvalue() and "\r" not in err.getvalue()
    assert lines[0].startswith("sending contacts: 0/1,000 settled (0%), 300 sent")


def test_without_events_the_clock_still_moves_and_plain_lines_still_come() -> None:
    clock, err = FakeClock(), io.StringIO()
    plain = ProgressView(err, width=None, clock=clock, every=30.0)
    plain(ProgressEvent("prepare", 5_000, 5_000))  # then a long read of the list: no events
    for _ in range(65):
        clock.now += 1.0
        plain.tick()
    assert err.getvalue().splitlines() == [
        "5,000 rows read; reading the list before sending · 30s",
        "5,000 rows read; reading the list before sending · 1m 00s",
    ]
    term = io.StringIO()
    drawn = ProgressView(term, width=80, clock=clock)
    drawn(ProgressEvent("push", 250, 1_000))
    clock.now += 5.0
    drawn.tick()
    assert term.getvalue().endswith(
        CLEAR + "sending contacts: 0/1,000 settled (0%), 250 sent · 50 contacts/s · ETA 20s · 5s"
    )
    drawn(ProgressEvent("finalize", 0, 1))
    drawn.tick()  # nothing after the finalize erase
    assert term.getvalue().endswith(CLEAR)


def test_log_lines_go_above_the_progress_line() -> None:
    clock, err = FakeClock(), io.StringIO()
    view = ProgressView(err, width=80, clock=clock, redraw=0.0)
    view(ProgressEvent("push", 250, 1_000))
    sink = LineSink(err)
    sink.view = view
    sink.line("warning: something")
    # erase the bar, the line, the bar again
    assert err.getvalue().endswith(CLEAR + "warning: something\n" + CLEAR + view.text())


# --- retries summarised -------------------------------------------------------------------------


def test_280_retries_in_three_minutes_make_four_lines(caplog: pytest.LogCaptureFixture) -> None:
    clock, err = FakeClock(), io.StringIO()
    summary = LogSummary(LineSink(err), clock=clock, every=60.0)
    retry = logging.getLogger("exporter.activecampaign.retry")
    other = logging.getLogger("exporter.run.members")
    retry.addHandler(summary)
    other.addHandler(summary)
    try:
        for n in range(280):
            clock.now += 180 / 280
            retry.warning("bulk import failed (%s); retry %d/%d in %.2fs", "429", 1, 7, 2.0)
            if n == 100:
                other.warning("the list's mark was not moved")
        summary.flush()
    finally:
        retry.removeHandler(summary)
        other.removeHandler(summary)
    lines = err.getvalue().splitlines()
    summaries = [line for line in lines if line.startswith("ActiveCampaign: ")]
    assert 3 <= len(summaries) <= 4, lines  # the first at once, then one a minute, the rest
    assert (
        sum(int(re.search(r"([\d,]+) requests? retried", s)[1].replace(",", "")) for s in summaries)
        == 280
    )  # type: ignore[index]
    assert "warning: the list's mark was not moved" in lines  # other warnings pass through
    assert summary.totals["requests retried"] == 280


def test_with_v_or_quiet_the_summary_only_counts() -> None:
    err = io.StringIO()
    summary = LogSummary(LineSink(err), summarise=False)
    record = logging.LogRecord(
        "exporter.activecampaign.retry", logging.WARNING, __file__, 1, "retry", (), None
    )
    for _ in range(5):
        summary.handle(record)
    summary.flush()
    assert err.getvalue() == "" and summary.totals["requests retried"] == 5


# --- the closing paragraph ----------------------------------------------------------------------


def test_the_paragraph_says_the_report_in_words() -> None:
    report = RunReport(
        export="newsletter",
        run_id="20261205T000000Z-abcdef01",
        snapshot="s",
        started_at="2026-12-05T00:00:00+00:00",
        status="completed",
        rows_read=100,
        valid=97,
        rejected=2,
        rejected_by_reason={"invalid_email": 2},
        duplicates=1,
        new=90,
        changed=7,
        confirmed=97,
        sent=97,
        left=3,
        leavers_unsubscribed=3,
        timings={"total": 12.34},
        artefacts={"rejected": "runs/newsletter/x/rejected.csv"},
    )
    text = " ".join(summary_paragraph(report, exit_code=0, retried=12).split())
    assert text == (
        "Run 20261205T000000Z-abcdef01 of export newsletter completed in 12.3 s. It read 100 "
        "rows: 90 new and 7 changed, of which ActiveCampaign confirmed 97. 2 rows were rejected "
        "(invalid_email 2), listed in runs/newsletter/x/rejected.csv. 1 duplicate counted once. "
        "3 people left the segment: 3 unsubscribed, 0 failed, 0 kept. ActiveCampaign was busy: "
        "12 requests were retried. Exit code 0 (rejected rows do not change it)."
    )


# --- the real command, under a pseudo-terminal and into a pipe ----------------------------------


@pytest.fixture
def home(tmp_path: Path) -> Iterator[tuple[Path, Sandbox, Path]]:
    with Sandbox(sandbox_config()) as sb:
        home = tmp_path / "home"
        setup_export(home, sb)
        yield home, sb, synthetic.write_csv(tmp_path / "segment.csv", 3000)


def command(home: Path, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "exporter",
        "--home",
        str(home),
        "--time-scale",
        str(SCALE),
        *args,
    ]


def environment() -> dict[str, str]:
    return {**os.environ, KEY_VAR: KEY, "PYTHONPATH": str(ROOT), "TERM": "xterm"}


def run_piped(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(home, *args),
        env=environment(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def run_in_pty(home: Path, *args: str, columns: int) -> tuple[int, str]:
    """The command with stderr (and stdout) on a pseudo-terminal ``columns`` wide."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    proc = subprocess.Popen(
        command(home, *args),
        env=environment(),
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
    )
    os.close(slave)
    chunks: list[bytes] = []
    while True:
        ready, _, _ = select.select([master], [], [], 180)
        if not ready:
            proc.kill()
            raise AssertionError("the command hung")
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the other side closed
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(timeout=60), b"".join(chunks).decode("utf-8", "replace")


def test_under_a_terminal_the_line_moves_per_batch_and_is_gone_at_the_end(
    home: tuple[Path, Sandbox, Path],
) -> None:
    store, _sb, segment = home
    code, screen = run_in_pty(store, "run", "newsletter", "--snapshot", str(segment), columns=100)
    assert code == 0, screen
    frames = [f for f in screen.split(CLEAR) if f.startswith("sending contacts")]
    assert len(frames) >= 3, screen  # 12 batches in one chunk: the line moves within the chunk
    assert all(len(frame.split("\r\n")[0]) <= 99 for frame in frames)
    assert all(rate < 1_000_000 for rate in rates(screen, "rows") + rates(screen, "contacts"))
    assert not re.search(r"(?<![\d,])0/1(?![\d,])", screen)
    # the last frame is erased: what follows the last clear is the report, not a frame
    assert screen.rsplit(CLEAR, 1)[1].lstrip().startswith("Export newsletter run"), screen
    assert "Run " in screen and "completed in" in screen and "Exit code 0" in screen


def test_a_terminal_without_a_width_gets_plain_lines(home: tuple[Path, Sandbox, Path]) -> None:
    store, _sb, segment = home
    code, screen = run_in_pty(
        store,
        "--progress-every",
        "0.2",
        "run",
        "newsletter",
        "--snapshot",
        str(segment),
        columns=0,
    )
    assert code == 0, screen
    assert ESC not in screen  # nothing redrawn in place
    assert re.search(r"^(reading rows|sending contacts): ", screen, re.M), screen
    assert "Exit code 0" in screen


def test_into_a_pipe_retries_are_summarised_and_quiet_is_quiet(
    home: tuple[Path, Sandbox, Path],
) -> None:
    store, sb, segment = home
    sb.set_faults(Faults(http_429_rate=0.5, retry_after=0.5))
    result = run_piped(
        store, "--progress-every", "0.2", "run", "newsletter", "--snapshot", str(segment)
    )
    assert result.returncode == 0, result.stderr
    err = result.stderr
    assert ESC not in err and "\r" not in err
    assert re.search(r"^sending contacts: [\d,]+/[\d,]+ settled", err, re.M), err
    retried = int(re.search(r"([\d,]+) requests? (?:was|were) retried", err)[1].replace(",", ""))  # type: ignore[index]
    assert retried >= 2  # the faults did bite
    summaries = [line for line in err.splitlines() if line.startswith("ActiveCampaign: ")]
    assert 1 <= len(summaries) <= 2, err  # one at once, one at most per minute after it
    assert "retry 1/" not in err.replace(summaries[0], "")  # no line per retry
    paragraph = err[err.index("Run ") :]
    assert "completed in" in paragraph and "Exit code 0" in paragraph

    sb.set_faults(Faults())
    changed = synthetic.write_csv(segment.with_name("v2.csv"), 3000, version=1)
    quiet = run_piped(store, "--quiet", "run", "newsletter", "--snapshot", str(changed))
    assert quiet.returncode == 0 and quiet.stderr == ""
    assert "Export newsletter run" in quiet.stdout  # the report itself stays on stdout
