"""The seed's flow in a real browser: headless Chromium (Debian's, installed by ``make test``
when missing) driven by Playwright, against ``python -m exporter console`` and the sandbox,
each in its own process as a user would start them.

Connection with a bad hostname (field error) → without consent (refused) → connected → export
with Add attribute → saved (nothing runs) → run now → live progress → history chart shows the
run → rejected rows downloaded. A display name carrying ``<script>`` renders inert; pages are
usable at 1280 px and 390 px. Screenshots of each page go to ``test-artifacts/console/``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from playwright.sync_api import sync_playwright

from exporter.storage.store import LocalStore
from tests.console.conftest import API_KEY, LIST_ID, SEGMENT, segment_csv
from tests.sandbox_process import ROOT, SandboxProcess, started_sandbox_process

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts" / "console"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROWS = 3000
"""Enough contacts that the run page shows the run going on before its report."""

SPEED = "2"
"""Sandbox time and the exporter's pacing, this much faster than real time: slow enough that
the run page shows the run going on."""

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxProcess]:
    args = ["--list", f"{LIST_ID}:Newsletter", "--field", "1:City", "--time-scale", SPEED]
    with started_sandbox_process(API_KEY, *args) as sb:
        yield sb


@pytest.fixture(scope="module")
def console_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("console-home")
    LocalStore(home).write_bytes(SEGMENT + "2026-01-05.csv", segment_csv(ROWS))
    port = _free_port()
    env = {**os.environ, "EXPORTER_ALLOW_LOOPBACK_SANDBOX": "true"}
    cmd = [sys.executable, "-m", "exporter", "--time-scale", SPEED, "console"]
    process = subprocess.Popen(
        [*cmd, "--home", str(home), "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if requests.get(url + "/exports", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.1)
        else:
            pytest.fail("the console did not start")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=CHROMIUM,
            headless=True,
            args=FLAGS,
            viewport={"width": 1280, "height": 900},
            accept_downloads=True,
        )
        try:
            yield context
        finally:
            context.close()


def shot(page: object, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)  # type: ignore[attr-defined]


def no_sideways_scroll(page: object) -> None:
    overflow = page.evaluate(  # type: ignore[attr-defined]
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    wide = page.evaluate(  # type: ignore[attr-defined]
        "[...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right"
        " > document.documentElement.clientWidth + 1).slice(0, 5).map(e => e.outerHTML"
        ".slice(0, 80))"
    )
    assert overflow <= 1, f"the page scrolls sideways by {overflow}px: {wide}"


def test_the_seeds_flow_in_a_browser(
    browser: object, console_url: str, sandbox: SandboxProcess
) -> None:
    page = browser.new_page()  # type: ignore[attr-defined]
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(console_url + "/connections")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.get_by_role("link", name="Add connection").click()

    # A pasted URL on a host that is not ActiveCampaign's: the error is at the field.
    page.get_by_label("Name (letters").fill("shop")
    page.get_by_label("Display name").fill("Shop <script>window.pwned = 1</script>")
    page.get_by_label("REST hostname").fill("https://shop.example.com/api/3/")
    page.get_by_label("API key").fill(API_KEY)
    page.get_by_label("I agree").check()
    page.get_by_role("button", name="Connect").click()
    assert "not an ActiveCampaign API host" in page.locator("#hostname-error").inner_text()
    assert page.get_by_label("API key").input_value() == ""  # never echoed
    shot(page, "01-connection-field-error")

    # The right host, but no consent: refused, at the checkbox.
    page.get_by_label("REST hostname").fill(f"http://127.0.0.1:{sandbox.port}/api/3")
    page.get_by_label("API key").fill(API_KEY)
    page.get_by_role("button", name="Connect").click()
    assert "agree to the data privacy" in page.locator("#consent-error").inner_text()

    page.get_by_label("API key").fill(API_KEY)
    page.get_by_label("I agree").check()
    page.get_by_role("button", name="Connect").click()
    page.wait_for_url("**/connections")
    cell = page.locator("td.display-name").first
    assert cell.inner_text() == "Shop <script>window.pwned = 1</script>"  # shown, inert
    assert page.evaluate("typeof window.pwned") == "undefined"
    shot(page, "02-connections")

    # The export: list chosen from the account's lists, email kept, attributes added.
    page.get_by_role("link", name="Exports").click()
    page.get_by_role("link", name="Add export").click()
    page.get_by_label("Name (letters").fill("newsletter")
    page.get_by_label("Display name").fill("Newsletter")
    page.get_by_label("Segment (snapshot").fill(SEGMENT)
    page.get_by_label("List", exact=True).select_option(LIST_ID)
    for i, (kind, column) in enumerate(
        [("first_name", "FirstName"), ("last_name", "LastName"), ("phone", "Phone")], start=1
    ):
        if i > 1:
            page.get_by_role("button", name="Add attribute").click()
        page.locator(f"#attr_kind_{i}").select_option(kind)
        page.locator(f"#attr_column_{i}").fill(column)
    page.get_by_role("button", name="Add attribute").click()
    page.locator("#attr_kind_4").select_option("field")
    page.locator("#attr_column_4").fill("City")
    page.locator("#attr_field_4").fill("City")
    page.get_by_label("Schedule").fill("0 0 2 * * *")
    page.get_by_role("button", name="Preview").click()
    assert page.locator("ol.times li").count() == 5
    shot(page, "03-export-form")
    page.get_by_role("button", name="Save", exact=True).click()
    page.wait_for_url("**/exports?saved=newsletter")
    row = page.locator("tr", has_text="Newsletter")
    assert "never" in row.inner_text()  # saving did not run it
    shot(page, "04-exports")

    # Run now: the run page follows the run live, then shows its report.
    row.get_by_role("button", name="Run now").click()
    page.wait_for_url("**/runs/*")
    progress = page.locator("#progress")
    assert progress.count() == 1, "the run ended before its page showed progress"
    deadline, sent = time.monotonic() + 20, ""
    while time.monotonic() < deadline and not sent:
        text = page.locator("#p-sent").inner_text().strip()
        sent = text if text not in ("0", "…") else ""  # the script polled progress.json
        page.wait_for_timeout(100)
    assert int(sent) > 0
    shot(page, "05-run-progress")
    page.locator("#run-status").wait_for(timeout=40_000)
    assert page.locator("#run-status").inner_text() == "completed"
    assert int(page.locator("#r-rejected").inner_text()) == 3
    shot(page, "06-run-report")

    # Rejected rows, for administrators (the local user is one), with a personal-data notice.
    assert "personal data" in page.locator(".notice").inner_text()
    with page.expect_download() as download:
        page.locator("#download-rejected").click()
    saved = Path(download.value.path())
    assert "not-an-email-1" in saved.read_text(encoding="utf-8")

    # History: the run is a bar of the chart and a row of the table.
    page.get_by_role("link", name="Runs of Newsletter").click()
    assert page.locator("#history-chart .run-bar").count() == 1
    assert page.locator("#history-chart rect.bar-confirmed").count() == 1
    assert page.locator("#history-table tbody tr").count() == 1

    # A second run of the same snapshot: nothing changed, so nothing is sent again.
    page.get_by_role("button", name="Run now").click()
    page.locator("#run-status").wait_for(timeout=40_000)
    assert page.locator("#r-confirmed").inner_text() == "0"
    page.get_by_role("link", name="Runs of Newsletter").click()
    assert page.locator("#history-chart .run-bar").count() == 2
    assert page.locator("#history-chart rect.bar-unchanged").count() == 1
    shot(page, "07-history")

    # 390 px wide: every page still fits and its controls can be reached.
    page.set_viewport_size({"width": 390, "height": 844})
    for path, name in [
        ("/exports", "08-exports-390"),
        ("/exports/newsletter/runs", "09-history-390"),
        ("/connections/new", "10-connection-form-390"),
        ("/exports/newsletter/edit", "11-export-form-390"),
    ]:
        page.goto(console_url + path)
        no_sideways_scroll(page)
        shot(page, name)
    assert page.get_by_role("button", name="Save", exact=True).is_visible()
    assert not [e for e in errors if "Content Security Policy" in e], errors


FOCUSABLE = "a[href], button, input:not([type=hidden]), select, textarea"
ACTIVE = """() => {
  const e = document.activeElement;
  if (!e || e === document.body) return null;
  const s = getComputedStyle(e);
  return {key: e.tagName + '#' + (e.id || e.name || e.textContent.trim().slice(0, 40)),
          visible: s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) > 0};
}"""


def tab_walk(page: object) -> list[dict[str, object]]:
    """Every stop of the Tab key through a page, from its top, once round."""
    page.evaluate("document.activeElement && document.activeElement.blur()")  # type: ignore[attr-defined]
    stops: list[dict[str, object]] = []
    for _ in range(300):
        page.keyboard.press("Tab")  # type: ignore[attr-defined]
        here = page.evaluate(ACTIVE)  # type: ignore[attr-defined]
        if here is None or (stops and here["key"] == stops[0]["key"]):
            break
        stops.append(here)
    return stops


def tab_to(page: object, selector: str) -> None:
    """Press Tab until the element matching ``selector`` has the focus (keyboard only)."""
    for _ in range(100):
        if page.evaluate(f"document.activeElement.matches({selector!r})"):  # type: ignore[attr-defined]
            return
        page.keyboard.press("Tab")  # type: ignore[attr-defined]
    pytest.fail(f"Tab never reached {selector}")


def test_every_control_is_reached_by_tab_with_a_visible_focus_and_a_form_works_by_keyboard(
    browser: object, console_url: str, sandbox: SandboxProcess
) -> None:
    page = browser.new_page()  # type: ignore[attr-defined]
    for path in ("/connections", "/connections/new", "/exports", "/exports/new"):
        page.goto(console_url + path)
        stops = tab_walk(page)
        # A group of radio buttons is one stop (the arrow keys move within it).
        controls = page.evaluate(  # type: ignore[attr-defined]
            f"new Set([...document.querySelectorAll({FOCUSABLE!r})]"
            ".filter(e => !e.disabled && e.getClientRects().length)"
            ".map(e => e.type === 'radio' ? 'radio:' + e.name : e)).size"
        )
        assert len(stops) == controls, (path, stops)
        assert all(stop["visible"] for stop in stops), (path, stops)
    # A connection made with the keyboard alone: Tab to each field, type, Space, Enter.
    page.goto(console_url + "/connections/new")
    page.evaluate("document.activeElement && document.activeElement.blur()")
    for field, value in (
        ("#name", "keyboard"),
        ("#display_name", "Keyboard"),
        ("#hostname", f"http://127.0.0.1:{sandbox.port}/api/3"),
        ("#api_key", API_KEY),
    ):
        tab_to(page, field)
        page.keyboard.type(value)
    tab_to(page, "input[type=checkbox][name=consent]")
    page.keyboard.press("Space")
    tab_to(page, "button[type=submit]")
    page.keyboard.press("Enter")
    page.wait_for_url(console_url + "/connections*")
    assert "Keyboard" in page.locator("main").inner_text()
    page.close()
