"""The rejected-rows CSV: columns, streaming, and formula neutralisation."""

from __future__ import annotations

import csv
import io

import pytest

from exporter.planning.contacts import Rejection
from exporter.run.rejects import RejectedRowsWriter, neutralise


def rows_of(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def test_rejected_rows_to_a_text_stream() -> None:
    out = io.StringIO()
    writer = RejectedRowsWriter(out, value_columns=["Email", "First"])
    writer.write(
        Rejection(
            row=7,
            source="seg.csv",
            reason="invalid_email",
            message="not a valid email address",
            column="Email",
            values={"Email": "x@", "First": 'Ann, "the" first\nline'},
        )
    )
    writer.write(Rejection(row=9, source="seg.csv", reason="too_large", message="big"))
    assert writer.count == 2
    assert rows_of(out.getvalue()) == [
        ["row", "source", "reason", "message", "column", "Email", "First"],
        [
            "7",
            "seg.csv",
            "invalid_email",
            "not a valid email address",
            "Email",
            "x@",
            'Ann, "the" first\nline',
        ],
        ["9", "seg.csv", "too_large", "big", "", "", ""],
    ]


@pytest.mark.parametrize("trigger", ["=", "+", "-", "@", "\t", "\r"])
def test_formula_cells_are_neutralised(trigger: str) -> None:
    value = f'{trigger}HYPERLINK("http://evil")'
    assert neutralise(value) == "'" + value
    out = io.StringIO()
    writer = RejectedRowsWriter(out, value_columns=["=Name"])
    writer.write(
        Rejection(row=1, source=f"{trigger}src", reason="r", message=value, values={"=Name": value})
    )
    header, line = rows_of(out.getvalue())
    assert header[-1] == "'=Name"
    assert line[1] == f"'{trigger}src" and line[3] == "'" + value and line[5] == "'" + value


@pytest.mark.parametrize("value", [" =1", "  +SUM(A1)", "\n=cmd", "\t -2", " \r\n@x", "\n"])
def test_triggers_after_leading_blanks_are_neutralised(value: str) -> None:
    assert neutralise(value) == "'" + value


def test_safe_cells_are_untouched() -> None:
    for value in ["plain", "a=b", " a=1", "   ", "", "12", " 12"]:
        assert neutralise(value) == value


def test_binary_stream_gets_utf8_with_bom_and_stays_open() -> None:
    out = io.BytesIO()
    with RejectedRowsWriter(out, value_columns=["Name"]) as writer:
        writer.write(Rejection(row=1, source="s", reason="r", message="m", values={"Name": "Zoë"}))
    assert not out.closed
    data = out.getvalue()
    assert data.startswith(b"\xef\xbb\xbf")
    assert rows_of(data.decode("utf-8-sig"))[1][-1] == "Zoë"
    assert data.endswith(b"\r\n")


def test_plan_file_has_an_action_column() -> None:
    out = io.StringIO()
    writer = RejectedRowsWriter(out, value_columns=["Email"], action=True)
    writer.write_row(
        row=3, source="s", reason="new", action="subscribe", values={"Email": "a@x.io"}
    )
    writer.write(Rejection(row=4, source="s", reason="invalid_email", message="m"), action="reject")
    assert rows_of(out.getvalue()) == [
        ["action", "row", "source", "reason", "message", "column", "Email"],
        ["subscribe", "3", "s", "new", "", "", "a@x.io"],
        ["reject", "4", "s", "invalid_email", "m", "", ""],
    ]
    with pytest.raises(ValueError):
        writer.write_row(row=5, source="s")


def test_action_is_refused_without_a_plan() -> None:
    writer = RejectedRowsWriter(io.StringIO(), value_columns=[])
    with pytest.raises(ValueError):
        writer.write_row(row=1, source="s", action="subscribe")
