"""The benchmarks' input: deterministic synthetic segments built from :mod:`examples.synthetic`.

Row ``i`` is :func:`examples.synthetic.row` (email, first and last name, phone and three
custom attributes; 0.5% invalid emails, 0.2% duplicates), so the same ``rows`` always give the
same bytes. The *daily refresh* snapshot is the same segment a day later: the first 0.5% of
the contacts have left, 0.5% new contacts joined at the end, and 1% of the others moved to
another city (a changed custom attribute).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from examples import synthetic

CHANGED_EVERY = 100
"""1% of the contacts change between the full snapshot and the daily refresh."""
CHANGED_RESIDUE = 50
"""Which rows change (``i % 100 == 50``: never an invalid or duplicate row)."""
LEFT_SHARE = 0.005
JOINED_SHARE = 0.005
CDM_PARTITIONS = 10


@dataclass(frozen=True)
class Dataset:
    """The files of one benchmark invocation."""

    rows: int
    full_csv: Path
    """The segment as one plain CSV (with a header row)."""
    full_cdm: Path
    """The same segment as a Customer Insights folder: its ``model.json`` path."""
    refresh_csv: Path
    """The segment a day later (see the module docstring)."""


def refresh_rows(n: int) -> Iterator[list[str]]:
    """The refresh snapshot's rows for a segment of ``n`` rows."""
    left, joined = round(n * LEFT_SHARE), round(n * JOINED_SHARE)
    cities = synthetic.CITIES
    for i in range(left, n + joined):
        values = synthetic.row(i)
        if i % CHANGED_EVERY == CHANGED_RESIDUE:
            values[4] = cities[(cities.index(values[4]) + 1) % len(cities)]
        yield values


def _write_csv(path: Path, rows: Iterator[list[str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\r\n")
        writer.writerow(synthetic.COLUMNS)
        writer.writerows(rows)
    return path


def generate(folder: Path, rows: int) -> Dataset:
    """Write the three snapshots of ``rows`` contacts under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    full_csv = synthetic.write_csv(folder / "segment.csv", rows)
    full_cdm = synthetic.write_cdm(folder / "segment-cdm", rows, partitions=CDM_PARTITIONS)
    refresh_csv = _write_csv(folder / "segment-refresh.csv", refresh_rows(rows))
    return Dataset(rows, full_csv, full_cdm, refresh_csv)


def generate_csv(folder: Path, rows: int) -> tuple[Path, Path]:
    """Only the plain CSV and its daily refresh (the scale benchmark: no CDM copy of ten
    million rows). Returns ``(full_csv, refresh_csv)``."""
    folder.mkdir(parents=True, exist_ok=True)
    full_csv = synthetic.write_csv(folder / "segment.csv", rows)
    refresh_csv = _write_csv(folder / "segment-refresh.csv", refresh_rows(rows))
    return full_csv, refresh_csv
