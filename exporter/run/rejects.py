"""The rejected-rows CSV (and, with an ``action`` column, the dry-run plan CSV).

Columns: ``row, source, reason, message, column``, then one column per mapped snapshot column
with the values as read; a plan puts ``action`` first. The file is meant to be opened in a
spreadsheet, and its cells come from untrusted input, so any cell starting with ``=``, ``+``,
``-``, ``@``, tab or carriage return -- also after leading spaces, tabs or line breaks, which
spreadsheet programs skip -- is prefixed with ``'`` (CSV/formula injection). Rows are
written as they come (streaming); nothing is held in memory.

Written to a text stream as is, or to a binary stream as UTF-8 with a BOM (so spreadsheet
programs detect the encoding).
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections.abc import Mapping, Sequence
from typing import IO

from exporter.planning.contacts import PreparedContact, Rejection
from exporter.run.records import RunRequest
from exporter.storage import runs
from exporter.storage.records import Manifest
from exporter.storage.store import ObjectNotFound, Store

BASE_COLUMNS = ("row", "source", "reason", "message", "column")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")
_LEADING_BLANKS = " \t\r\n"


def neutralise(cell: str) -> str:
    """``cell`` made safe to open in a spreadsheet: a formula trigger at its start, or after
    leading blanks (spreadsheets skip them: `` =1`` is a formula), is quoted."""
    if cell.startswith(_FORMULA_START) or cell.lstrip(_LEADING_BLANKS).startswith(_FORMULA_START):
        return "'" + cell
    return cell


class RejectedRowsWriter:
    """Streams rejected rows (or plan rows) to a CSV file object."""

    def __init__(
        self,
        fh: IO[str] | IO[bytes],
        *,
        value_columns: Sequence[str],
        action: bool = False,
    ) -> None:
        self._wrapper: io.TextIOWrapper | None = None
        text: IO[str]
        if isinstance(fh, io.TextIOBase):
            text = fh
        else:
            self._wrapper = io.TextIOWrapper(
                fh,  # type: ignore[arg-type]
                encoding="utf-8-sig",
                newline="",
                write_through=True,
            )
            text = self._wrapper
        self._writer = csv.writer(text, lineterminator="\r\n")
        self._action = action
        self.value_columns = list(value_columns)
        """The snapshot columns written after the fixed ones."""
        self.count = 0
        """Rows written (not counting the header)."""
        header = (["action"] if action else []) + list(BASE_COLUMNS) + self.value_columns
        self._writer.writerow([neutralise(c) for c in header])

    def write(self, rejection: Rejection, *, action: str | None = None) -> None:
        """One rejected row."""
        self.write_row(
            row=rejection.row,
            source=rejection.source,
            reason=rejection.reason,
            message=rejection.message,
            column=rejection.column,
            values=rejection.values,
            action=action,
        )

    def write_row(
        self,
        *,
        row: int,
        source: str,
        reason: str = "",
        message: str = "",
        column: str | None = None,
        values: Mapping[str, str] | None = None,
        action: str | None = None,
    ) -> None:
        """One row of the file; ``action`` is required (and only allowed) for a plan."""
        if self._action != (action is not None):
            raise ValueError("action is required for a plan file and not allowed otherwise")
        vals = values or {}
        cells: list[str] = [action] if action is not None else []
        cells += [str(row), source, reason, message, column or ""]
        cells += [vals.get(c, "") for c in self.value_columns]
        self._writer.writerow([neutralise(c) for c in cells])
        self.count += 1

    def close(self) -> None:
        """Flush; the caller's file object stays open (a binary one is detached, not closed)."""
        if self._wrapper is not None:
            self._wrapper.flush()
            self._wrapper.detach()
            self._wrapper = None

    def __enter__(self) -> RejectedRowsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


API_REJECTED = "api_rejected"
"""Rejection reason of contacts ActiveCampaign's validation refused."""


def append_api_rejections(
    store: Store,
    req: RunRequest,
    manifest: Manifest,
    rejections: list[tuple[PreparedContact, str]],
) -> None:
    """rejected.csv = prepare's rows (exactly as many as it wrote) + the API's refusals:
    rebuilt from the same inputs every time, so a repeated finalize writes the same file."""
    path = runs.rejected_path(req.export, req.run_id)
    keep = manifest.rejected_rows
    email_column = manifest.email_column
    columns = list(manifest.value_columns)
    with tempfile.TemporaryDirectory(prefix="exporter-fin-") as tmp:
        out_path = os.path.join(tmp, "rejected.csv")
        with open(out_path, "wb") as out:
            writer = RejectedRowsWriter(out, value_columns=columns)
            raw = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=True)
            copier = csv.writer(raw, lineterminator="\r\n")
            try:
                with store.open_read(path) as fh:
                    rows = csv.reader(io.TextIOWrapper(fh, encoding="utf-8-sig", newline=""))
                    next(rows, None)  # the header: the writer wrote it already
                    for i, row in enumerate(rows):
                        if i >= keep:
                            break
                        copier.writerow(row)
            except ObjectNotFound:
                pass
            raw.flush()
            raw.detach()
            for contact, reason in rejections:
                writer.write_row(
                    row=contact.row,
                    source=contact.source,
                    reason=API_REJECTED,
                    message=f"ActiveCampaign refused the contact: {reason}",
                    column=email_column,
                    values={email_column: contact.key},
                )
            writer.close()
        store.write_file(path, out_path)
