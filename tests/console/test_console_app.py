"""The console over HTTP (Starlette's test client, no browser): the seed's flow against the
sandbox, field errors from the service, CSRF, the security headers, escaping, and keys that are
never echoed."""

from __future__ import annotations

import html
import re
import time
from pathlib import Path

from starlette.testclient import TestClient

from exporter.console.app import ConsoleHost
from exporter.storage import runs
from sandbox import Sandbox
from tests.console.conftest import API_KEY, LIST_ID, SEGMENT, csrf_of, segment_csv


def _errors(html: str) -> list[str]:
    return re.findall(r'class="field-error" id="([a-z_]+)-error"', html)


def connect(client: TestClient, account: Sandbox, **changes: str) -> None:
    token = csrf_of(client.get("/connections/new").text)
    form = {
        "csrf_token": token,
        "name": "shop",
        "display_name": "Shop account",
        "hostname": f"http://127.0.0.1:{account.port}/",
        "api_key": API_KEY,
        "allow_contributors": "admins",
        "consent": "yes",
    }
    form.update(changes)
    answer = client.post("/connections/new", data=form, follow_redirects=False)
    assert answer.status_code == 303, answer.text


def add_export(client: TestClient) -> None:
    token = csrf_of(client.get("/exports/new").text)
    form = {
        "csrf_token": token,
        "action": "save",
        "name": "newsletter",
        "display_name": "Newsletter",
        "connection": "shop",
        "segment": SEGMENT,
        "list_id": LIST_ID,
        "email": "Email",
        "attr_kind": ["first_name", "last_name", "phone", "field"],
        "attr_column": ["FirstName", "LastName", "Phone", "City"],
        "attr_field": ["", "", "", "City"],
        "max_shrink_percent": "20",
        "leaver_policy": "unsubscribe",
        "enabled": "yes",
    }
    answer = client.post("/exports/new", data=form, follow_redirects=False)
    assert answer.status_code == 303, answer.text


def test_connecting_shows_the_services_errors_at_their_fields_then_saves(
    client: TestClient, account: Sandbox, home: Path
) -> None:
    token = csrf_of(client.get("/connections/new").text)
    form = {
        "csrf_token": token,
        "name": "shop",
        "display_name": "Shop",
        "hostname": "https://evil.example.com/api/3",
        "api_key": API_KEY,
    }
    bad = client.post("/connections/new", data=form)
    assert bad.status_code == 400
    assert set(_errors(bad.text)) >= {"hostname", "consent"}
    assert API_KEY not in bad.text  # write-only: never put back into the form
    wrong_key = client.post(
        "/connections/new",
        data={
            **form,
            "hostname": f"127.0.0.1:{account.port}",
            "consent": "yes",
            "api_key": "wrong-key-000000000000",
        },
    )
    assert wrong_key.status_code == 400
    assert "did not accept" in wrong_key.text and "wrong-key" not in wrong_key.text
    assert client.get("/connections").text.count("/edit") == 0  # nothing was saved
    connect(client, account)
    listing = client.get("/connections").text
    assert "Shop account" in listing and "ada" in listing  # consent recorded: who
    assert API_KEY not in client.get("/connections/shop/edit").text
    stored = [p.read_text() for p in home.rglob("*") if p.is_file() and p.parent.name != "keys"]
    assert not any(API_KEY in text for text in stored if "\x00" not in text)
    keys = list((home / "keys").iterdir())
    assert len(keys) == 1 and keys[0].read_text() == API_KEY and keys[0].stat().st_mode & 0o77 == 0


def test_a_post_without_the_csrf_token_of_this_browser_is_refused(
    client: TestClient, account: Sandbox
) -> None:
    form = {"name": "shop", "display_name": "x", "hostname": "127.0.0.1:1", "consent": "yes"}
    client.get("/connections/new")
    assert client.post("/connections/new", data=form).status_code == 403
    assert client.post("/connections/new", data={**form, "csrf_token": "0" * 64}).status_code == 403
    token = csrf_of(client.get("/connections/new").text)
    client.cookies.clear()  # another browser: the token is bound to the nonce cookie
    assert client.post("/connections/new", data={**form, "csrf_token": token}).status_code == 403
    assert "Shop" not in client.get("/connections").text


def test_every_answer_has_a_strict_csp_and_refuses_framing(client: TestClient) -> None:
    for path in ("/exports", "/connections/new", "/static/console.css", "/nowhere"):
        answer = client.get(path)
        csp = answer.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert answer.headers["x-frame-options"] == "DENY"
    page = client.get("/exports/new").text
    assert not re.search(r"<script(?![^>]*\bsrc=)", page)  # no inline script
    assert " style=" not in page and "<style" not in page


def test_markup_in_names_and_list_names_renders_inert(client: TestClient, account: Sandbox) -> None:
    connect(client, account, display_name='<script>alert("x")</script>')
    listing = client.get("/connections").text
    assert '<script>alert("x")' not in listing
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in listing
    form = client.get("/exports/new").text
    assert "Customers &lt;VIP&gt;" in form and "Customers <VIP>" not in form


def test_an_export_is_saved_without_running_and_add_attribute_adds_a_row(
    client: TestClient, account: Sandbox, home: Path
) -> None:
    connect(client, account)
    page = client.get("/exports/new").text
    assert "Newsletter (ID 7)" in page  # the account's lists are offered
    token = csrf_of(page)
    more = client.post(
        "/exports/new",
        data={
            "csrf_token": token,
            "action": "add_attribute",
            "attr_kind": "first_name",
            "attr_column": "FirstName",
            "attr_field": "",
            "schedule": "0 30 6 * * 1",
        },
    )
    assert more.text.count('name="attr_kind"') == 2
    assert more.text.count("06:30 UTC") == 5  # the next five times, all Mondays
    typed = client.post(
        "/exports/new",
        data={
            "csrf_token": token,
            "action": "save",
            "name": "typed-list",
            "display_name": "X",
            "connection": "shop",
            "segment": SEGMENT,
            "list_id_typed": "999",
            "email": "Email",
        },
    )
    assert typed.status_code == 400 and "list_id" in _errors(typed.text)
    add_export(client)
    listing = client.get("/exports").text
    assert "Newsletter" in listing and "never" in listing
    assert not (home / "runs").exists()  # saving did not run it


def test_run_now_then_history_chart_and_admin_downloads(
    client: TestClient, account: Sandbox, host: ConsoleHost
) -> None:
    connect(client, account)
    add_export(client)
    token = csrf_of(client.get("/exports").text)
    started = client.post(
        "/exports/newsletter/run", data={"csrf_token": token}, follow_redirects=False
    )
    assert started.status_code == 303
    run_url = started.headers["location"]
    run_id = run_url.rsplit("/", 1)[1]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        progress = client.get(run_url + "/progress.json").json()
        if progress["finished"]:
            break
        time.sleep(0.2)
    assert progress["finished"] and progress["status"] == "completed", progress
    detail = client.get(run_url).text
    assert "rejected.csv" in detail and "personal data" in detail
    assert "&lt;b&gt;bold&lt;/b&gt;" not in detail or "<b>bold" not in detail
    history = client.get("/exports/newsletter/runs").text
    assert f'data-run="{run_id}"' in history and 'class="bar-confirmed"' in history
    csv = client.get(run_url + "/rejected.csv")
    assert csv.status_code == 200 and "attachment" in csv.headers["content-disposition"]
    assert "not-an-email-1" in csv.text
    assert host.store.exists(runs.rejected_path("newsletter", run_id))
    assert client.get(run_url + "/secrets.csv").status_code == 404


def test_a_connection_in_use_is_not_removed_and_says_why(
    client: TestClient, account: Sandbox
) -> None:
    connect(client, account)
    add_export(client)
    confirm = client.get("/connections/shop/remove").text
    assert "Remove connection" in confirm
    refused = client.post("/connections/shop/remove", data={"csrf_token": csrf_of(confirm)})
    assert refused.status_code == 409
    assert "not removed" in refused.text and "newsletter" in refused.text
    assert "/connections/shop/edit" in client.get("/connections").text


def test_cancel_stops_sending_and_the_run_ends_cancelled(
    client: TestClient, account: Sandbox, host: ConsoleHost
) -> None:
    connect(client, account)
    add_export(client)
    store = host.store
    store.write_bytes(SEGMENT + "2026-01-06.csv", segment_csv(6000, bad=0))
    token = csrf_of(client.get("/exports").text)
    started = client.post(
        "/exports/newsletter/run", data={"csrf_token": token}, follow_redirects=False
    )
    run_url = started.headers["location"]
    # Cancelled while it prepares: it stops at the first chunk it sends, before the rest.
    cancelled = client.post(run_url + "/cancel", data={"csrf_token": token}, follow_redirects=False)
    assert cancelled.status_code == 303
    deadline = time.monotonic() + 60
    while not (progress := client.get(run_url + "/progress.json").json())["finished"]:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert progress["status"] == "cancelled", progress
    report = client.get(run_url).text
    assert 'id="run-status">cancelled' in report
    confirmed = int(re.search(r'id="r-confirmed">([\d,]+)<', report).group(1).replace(",", ""))  # type: ignore[union-attr]
    assert confirmed <= 250  # at most the one chunk sent before the cancel took effect


def test_a_rotated_key_is_checked_before_it_replaces_the_stored_one(
    client: TestClient, account: Sandbox, home: Path
) -> None:
    connect(client, account)
    page = client.get("/connections/shop/edit").text
    etag = html.unescape(re.search(r'name="etag" value="([^"]+)"', page).group(1))  # type: ignore[union-attr]
    form = {
        "csrf_token": csrf_of(page),
        "etag": etag,
        "display_name": "Shop renamed",
        "hostname": f"127.0.0.1:{account.port}",
        "allow_contributors": "contributors",
        "api_key": "a-wrong-new-key-1234567890",
    }
    refused = client.post("/connections/shop/edit", data=form)
    assert refused.status_code == 400 and "not saved" in refused.text
    assert "a-wrong-new-key" not in refused.text
    (key_file,) = (home / "keys").iterdir()
    assert key_file.read_text() == API_KEY  # the working key stays
    rotated = client.post("/connections/shop/edit", data={**form, "api_key": API_KEY})
    assert rotated.status_code == 200
    assert "accepted the key" in rotated.text
    listing = client.get("/connections").text
    assert "Shop renamed" in listing and "Administrators and contributors" in listing


def test_removing_an_export_asks_first_then_deletes_it(
    client: TestClient, account: Sandbox
) -> None:
    connect(client, account)
    add_export(client)
    confirm = client.get("/exports/newsletter/remove")
    assert confirm.status_code == 200 and "run files are deleted" in confirm.text
    assert "/exports/newsletter/edit" in client.get("/exports").text  # asking removed nothing
    done = client.post(
        "/exports/newsletter/remove",
        data={"csrf_token": csrf_of(confirm.text)},
        follow_redirects=False,
    )
    assert done.status_code == 303
    assert "/exports/newsletter/edit" not in client.get("/exports").text
    assert client.get("/exports/newsletter/edit").status_code == 404
    removed = client.post(
        "/connections/shop/remove",
        data={"csrf_token": csrf_of(client.get("/connections/shop/remove").text)},
        follow_redirects=False,
    )
    assert removed.status_code == 303  # no export uses it any more


def test_a_dry_run_sends_nothing_and_offers_its_plan_to_administrators(
    client: TestClient, account: Sandbox, home: Path
) -> None:
    connect(client, account)
    add_export(client)
    saved = client.get("/exports?saved=newsletter").text
    assert "Saving does not run it" in saved
    imports_before = account.request_counts().get("POST /import/bulk_import", 0)
    started = client.post(
        "/exports/newsletter/run",
        data={"csrf_token": csrf_of(saved), "dry_run": "yes"},
        follow_redirects=False,
    )
    run_url = started.headers["location"]
    deadline = time.monotonic() + 30
    while not (progress := client.get(run_url + "/progress.json").json())["finished"]:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert progress["status"] == "dry_run", progress
    detail = client.get(run_url).text
    assert "plan.csv" in detail and "personal data" in detail
    plan = client.get(run_url + "/plan.csv")
    assert plan.status_code == 200 and "person10@example.com" in plan.text
    assert account.request_counts().get("POST /import/bulk_import", 0) == imports_before


def test_the_command_line_uses_a_key_typed_into_the_console(
    client: TestClient, account: Sandbox, home: Path
) -> None:
    import io

    from exporter.cli import main

    connect(client, account)
    out, err = io.StringIO(), io.StringIO()
    env = {"EXPORTER_ALLOW_LOOPBACK_SANDBOX": "true"}
    code = main(["--home", str(home), "connections", "verify", "shop"], env=env, out=out, err=err)
    assert code == 0, err.getvalue()
    assert "accepted the key" in out.getvalue() and API_KEY not in out.getvalue() + err.getvalue()


def test_an_exports_text_encoding_is_chosen_checked_and_kept(
    client: TestClient, account: Sandbox
) -> None:
    connect(client, account)
    page = client.get("/exports/new").text
    assert 'id="encoding" name="encoding" value="utf-8"' in page  # the default, shown
    form = {
        "csrf_token": csrf_of(page),
        "action": "save",
        "name": "latin",
        "display_name": "Latin",
        "connection": "shop",
        "segment": SEGMENT,
        "list_id": LIST_ID,
        "email": "Email",
        "encoding": "klingon-8",
    }
    refused = client.post("/exports/new", data=form)
    assert refused.status_code == 400 and _errors(refused.text) == ["encoding"]
    assert "not a known text encoding" in refused.text
    saved = client.post("/exports/new", data={**form, "encoding": "cp1252"}, follow_redirects=False)
    assert saved.status_code == 303, saved.text
    edit = client.get("/exports/latin/edit").text
    assert 'id="encoding" name="encoding" value="cp1252"' in edit
