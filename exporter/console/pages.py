"""The console's pages: each handler reads the form, calls the management service, renders.

Handlers run in a worker thread (the service makes blocking HTTP calls when it verifies a key
or checks a list). A :class:`~exporter.errors.ConfigError` from the service re-renders the form
with the messages at their fields; other errors become an error page with their HTTP status.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.responses import JSONResponse, Response

from exporter.console import forms
from exporter.console.app import Page
from exporter.console.charts import history_chart
from exporter.errors import ConfigError, ExporterError, NotFoundError, PermissionDenied
from exporter.management.config import CONSENT_STATEMENT
from exporter.management.permissions import Action, authorize
from exporter.management.secret_names import ref_for_new_key
from exporter.run import history
from exporter.run.report import RunReport
from exporter.storage import runs

# --- connections --------------------------------------------------------------------------------


def connections(page: Page) -> Response:
    items = page.service.list_connections(page.caller)
    used = {e["connection"] for e in page.service.list_exports(page.caller)}
    return page.render("connections.html", connections=items, used=used)


def _connection_form(
    page: Page,
    view: dict[str, Any],
    *,
    creating: bool,
    errors: forms.FieldErrors | None = None,
    notes: list[str] | None = None,
    status: int = 200,
    etag: str = "",
) -> Response:
    return page.render(
        "connection_form.html",
        status=status,
        etag=etag,
        view=view,
        creating=creating,
        errors=errors or forms.FieldErrors(),
        notes=notes or [],
        consent_statement=CONSENT_STATEMENT,
    )


def connection_new(page: Page) -> Response:
    authorize(page.caller, Action.CREATE_CONNECTION)
    if page.request.method == "GET":
        return _connection_form(page, {"allow_contributors": False}, creating=True)
    payload, key = forms.connection_payload(page.form, creating=True)
    view = dict(payload)
    if key is None:
        errors = forms.FieldErrors()
        errors.add("api_key", "type the account's API key (Settings → Developer)", ["api_key"])
        return _connection_form(page, view, creating=True, errors=errors, status=400)
    payload["api_key_ref"] = ref_for_new_key(str(payload["name"]))
    try:
        page.service.create_connection(page.caller, payload, key, verify=True)
    except ConfigError as exc:
        errors = forms.errors_from(exc, forms.CONNECTION_FIELDS)
        return _connection_form(page, view, creating=True, errors=errors, status=400)
    except ExporterError as exc:  # ActiveCampaign refused the key or could not be reached
        errors = forms.FieldErrors(general=[f"ActiveCampaign did not accept the connection: {exc}"])
        return _connection_form(page, view, creating=True, errors=errors, status=400)
    return page.redirect("connections")


def connection_edit(page: Page) -> Response:
    name = page.param("name")
    fetched = page.service.get_connection(page.caller, name)
    authorize(page.caller, Action.UPDATE_CONNECTION)
    if page.request.method == "GET":
        return _connection_form(page, fetched.view, creating=False, etag=fetched.etag)
    payload, key = forms.connection_payload(page.form, creating=False)
    if key is not None:  # rotate: a new version of the app's own secret, or a fresh one
        payload["api_key_ref"] = ref_for_new_key(name, fetched.view.get("api_key_ref"))
    view = {**fetched.view, **payload}
    etag = forms.first(page.form, "etag")
    try:
        page.service.update_connection(
            page.caller, name, payload, if_match=etag or None, api_key=key, verify=True
        )
    except ConfigError as exc:
        errors = forms.errors_from(exc, forms.CONNECTION_FIELDS[1:])  # no name field to edit
        return _connection_form(page, view, creating=False, errors=errors, status=400, etag=etag)
    except ExporterError as exc:
        errors = forms.FieldErrors(general=[f"not saved: ActiveCampaign refused it: {exc}"])
        return _connection_form(page, view, creating=False, errors=errors, status=400, etag=etag)
    fresh = page.service.get_connection(page.caller, name)
    notes = [f"saved: ActiveCampaign at {fresh.view['hostname']} accepted the key"]
    return _connection_form(page, fresh.view, creating=False, notes=notes, etag=fresh.etag)


def connection_remove(page: Page) -> Response:
    name = page.param("name")
    if page.request.method == "GET":
        page.service.get_connection(page.caller, name)
        authorize(page.caller, Action.DELETE_CONNECTION)
        return page.render(
            "confirm.html",
            kind="connection",
            name=name,
            back=page.url("connections"),
            consequence="Its settings go; its API key secret stays where it is kept. A "
            "connection that exports still use is not removed.",
        )
    try:
        page.service.delete_connection(page.caller, name)
    except ConfigError as exc:
        items = page.service.list_connections(page.caller)
        used = {e["connection"] for e in page.service.list_exports(page.caller)}
        return page.render(
            "connections.html",
            status=409,
            connections=items,
            used=used,
            problem=f"{name} was not removed: {exc.detail}. Remove or move its exports first.",
        )
    return page.redirect("connections")


# --- exports ------------------------------------------------------------------------------------


def _last_run(page: Page, name: str) -> RunReport | None:
    found = history.list_runs(page.host.store, name, limit=1)
    return found[0] if found else None


def exports(page: Page) -> Response:
    items = page.service.list_exports(page.caller)
    now = datetime.now(UTC)
    rows = []
    for e in items:
        times, why = forms.next_times(e.get("schedule"), now, 1)
        rows.append(
            {
                "export": e,
                "next": times[0] if times else None,
                "why": why,
                "last": _last_run(page, e["name"]),
            }
        )
    saved = page.request.query_params.get("saved")
    return page.render(
        "exports.html",
        rows=rows,
        can_run=page.runner is not None,
        run_hint=page.host.run_hint,
        request_saved=f"Export {saved} saved. Saving does not run it." if saved else "",
    )


def _account(page: Page, connection: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str]:
    """The account's lists and custom fields for the form's choices (empty when unknown)."""
    if not connection:
        return [], [], ""
    try:
        lists, fields = page.service.account_choices(page.caller, connection)
    except ExporterError as exc:
        return [], [], f"the account's lists could not be read: {exc}"
    return lists, fields, ""


def _export_form(
    page: Page,
    view: dict[str, Any],
    rows: list[forms.Attribute],
    *,
    creating: bool,
    errors: forms.FieldErrors | None = None,
    etag: str = "",
    status: int = 200,
) -> Response:
    usable = page.service.list_connections(page.caller)
    connection = str(view.get("connection") or (usable[0]["name"] if usable else ""))
    lists, fields, account_problem = _account(page, connection)
    times, why = forms.next_times(view.get("schedule"), datetime.now(UTC))
    return page.render(
        "export_form.html",
        status=status,
        view=view,
        rows=rows or [forms.Attribute()],
        creating=creating,
        errors=errors or forms.FieldErrors(),
        etag=etag,
        connections=usable,
        connection=connection,
        lists=lists,
        fields=fields,
        account_problem=account_problem,
        next_times=times,
        schedule_note=why,
        kinds=forms.ATTRIBUTE_KINDS,
    )


def _view_of_form(page: Page, creating: bool, base: dict[str, Any]) -> dict[str, Any]:
    payload = forms.export_payload(page.form, creating=creating)
    view = {**base, **payload}
    view["max_shrink_percent"] = forms.first(page.form, "max_shrink_percent")
    return view


def _save_export(page: Page, name: str | None, base: dict[str, Any]) -> Response:
    creating = name is None
    view = _view_of_form(page, creating, base)
    rows = forms.attribute_rows(page.form)
    action = forms.first(page.form, "action")
    etag = forms.first(page.form, "etag")
    if action == "add_attribute":
        return _export_form(page, view, [*rows, forms.Attribute()], creating=creating, etag=etag)
    if action.startswith("remove_attribute:"):
        index = int(action.split(":", 1)[1]) if action.split(":", 1)[1].isdigit() else -1
        rows = [r for i, r in enumerate(rows) if i != index]
        return _export_form(page, view, rows, creating=creating, etag=etag)
    if action == "refresh":
        return _export_form(page, view, rows, creating=creating, etag=etag)
    payload = forms.export_payload(page.form, creating=creating)
    try:
        if name is None:
            saved = page.service.create_export(page.caller, payload)
        else:
            saved = page.service.update_export(page.caller, name, payload, if_match=etag or None)
    except ConfigError as exc:
        known = forms.EXPORT_FIELDS if creating else forms.EXPORT_FIELDS[1:]  # name: not editable
        errors = forms.errors_from(exc, known)
        return _export_form(
            page, view, rows, creating=creating, errors=errors, etag=etag, status=400
        )
    return page.redirect(f"exports?saved={saved.view['name']}")


def export_new(page: Page) -> Response:
    if page.request.method == "GET":
        view = {
            "email": "Email",
            "leaver_policy": "unsubscribe",
            "max_shrink_percent": "20",
            "encoding": "utf-8",
            "enabled": True,
            "segment": "snapshots/",
        }
        return _export_form(page, view, [], creating=True)
    return _save_export(page, None, {})


def export_edit(page: Page) -> Response:
    name = page.param("name")
    fetched = page.service.get_export(page.caller, name)
    if page.request.method == "GET":
        view = dict(fetched.view)
        view["max_shrink_percent"] = f"{float(view.get('max_shrink', 0.2)) * 100:g}"
        view["tags"] = ", ".join(view.get("tags", []))
        return _export_form(
            page, view, forms.rows_of_export(fetched.view), creating=False, etag=fetched.etag
        )
    return _save_export(page, name, {"name": name})


def export_remove(page: Page) -> Response:
    name = page.param("name")
    if page.request.method == "GET":
        page.service.get_export(page.caller, name)
        return page.render(
            "confirm.html",
            kind="export",
            name=name,
            back=page.url(f"exports/{name}/edit"),
            consequence="Its settings, its state (who it sent) and its run files are deleted; "
            "each run's report stays. Its running run is stopped and its schedule ends.",
        )
    page.service.delete_export(page.caller, name)
    return page.redirect("exports")


# --- runs ---------------------------------------------------------------------------------------


def run_start(page: Page) -> Response:
    name = page.param("name")
    if page.runner is None:
        raise ConfigError(page.host.run_hint or "runs cannot be started from this console")
    dry_run = forms.first(page.form, "dry_run") == "yes"
    run_id = page.runner.start(page.caller, page.service, name, dry_run=dry_run)
    return page.redirect(f"exports/{name}/runs/{run_id}")


def _progress(page: Page, name: str, run_id: str) -> dict[str, Any]:
    live = page.runner.progress(name, run_id) if page.runner else None
    if live is not None:
        return live
    report = history.get_run(page.host.store, name, run_id)
    return {
        "export": name,
        "run_id": run_id,
        "status": report.status,
        "phase": report.status,
        "dry_run": report.dry_run,
        "rows_read": report.rows_read,
        "sent": report.sent,
        "confirmed": report.confirmed,
        "total": None,
        "rate_per_second": None,
        "seconds_left": None,
        "cancel_requested": False,
        "error": report.error,
        "finished": report.status != "running",
    }


def run_progress(page: Page) -> Response:
    name, run_id = page.param("name"), page.param("run_id")
    page.service.get_export(page.caller, name)
    return JSONResponse(_progress(page, name, run_id))


def run_cancel(page: Page) -> Response:
    name, run_id = page.param("name"), page.param("run_id")
    page.service.authorize_run(page.caller, name)
    if page.runner is None:
        raise ConfigError(page.host.run_hint or "runs cannot be cancelled from this console")
    page.runner.cancel(name, run_id)
    return page.redirect(f"exports/{name}/runs/{run_id}")


def run_history(page: Page) -> Response:
    name = page.param("name")
    export = page.service.get_export(page.caller, name).view
    reports = history.list_runs(page.host.store, name, limit=30)
    return page.render(
        "history.html",
        export=export,
        reports=reports,
        chart=history_chart(reports),
        can_run=page.runner is not None,
        run_hint=page.host.run_hint,
    )


def run_detail(page: Page) -> Response:
    name, run_id = page.param("name"), page.param("run_id")
    export = page.service.get_export(page.caller, name).view
    progress = _progress(page, name, run_id)
    report = None
    if progress["finished"]:
        report = history.get_run(page.host.store, name, run_id)
    files = {
        kind: page.host.store.exists(path)
        for kind, path in (
            ("rejected", runs.rejected_path(name, run_id)),
            ("plan", runs.plan_path(name, run_id)),
        )
    }
    return page.render(
        "run.html",
        export=export,
        progress=progress,
        report=report,
        files=files,
        can_run=page.runner is not None,
    )


def run_download(page: Page) -> Response:
    name, run_id, kind = page.param("name"), page.param("run_id"), page.param("kind")
    page.service.get_export(page.caller, name)
    if not page.caller.is_admin:
        raise PermissionDenied(
            "rejected rows and plans hold personal data: only administrators may download them"
        )
    runs.check_run_id(run_id)
    paths = {"rejected.csv": runs.rejected_path, "plan.csv": runs.plan_path}
    if kind not in paths:
        raise NotFoundError(f"no file {kind!r} for a run")
    data = page.host.store.read_bytes(paths[kind](name, run_id))
    return Response(
        data,
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{name}-{run_id}-{kind}"'},
    )


def home(page: Page) -> Response:
    return page.redirect("exports")


ROUTES: list[tuple[str, Any, list[str]]] = [
    ("/", home, ["GET"]),
    ("/connections", connections, ["GET"]),
    ("/connections/new", connection_new, ["GET", "POST"]),
    ("/connections/{name}/edit", connection_edit, ["GET", "POST"]),
    ("/connections/{name}/remove", connection_remove, ["GET", "POST"]),
    ("/exports", exports, ["GET"]),
    ("/exports/new", export_new, ["GET", "POST"]),
    ("/exports/{name}/edit", export_edit, ["GET", "POST"]),
    ("/exports/{name}/remove", export_remove, ["GET", "POST"]),
    ("/exports/{name}/run", run_start, ["POST"]),
    ("/exports/{name}/runs", run_history, ["GET"]),
    ("/exports/{name}/runs/{run_id}", run_detail, ["GET"]),
    ("/exports/{name}/runs/{run_id}/progress.json", run_progress, ["GET"]),
    ("/exports/{name}/runs/{run_id}/cancel", run_cancel, ["POST"]),
    ("/exports/{name}/runs/{run_id}/{kind}", run_download, ["GET"]),
]
