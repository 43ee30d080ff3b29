"""Deterministic synthetic segments: the demo's sample data and the benchmarks' input.

Row ``i`` of a segment is a pure function of ``i`` (and of the snapshot ``version``), so any
number of rows streams out at C speed (``csv.writer.writerows`` over a generator) and the same
arguments always give the same bytes. About 0.5% of the rows carry an invalid email and about
0.2% repeat an earlier row's email in other letter case (a duplicate).

Versions model a segment that moves on: in version ``v > 0`` every ``CHANGE_EVERY``-th contact
has a new city, the first ``v * LEAVERS_PER_VERSION`` contacts have left, and
``v * JOINERS_PER_VERSION`` new contacts have joined at the end.

    python -m examples.synthetic out.csv --rows 200000
    python -m examples.synthetic out-folder --rows 200000 --cdm --partitions 4
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from collections.abc import Iterator
from pathlib import Path

COLUMNS = ["Email", "FirstName", "LastName", "Phone", "City", "Birthday", "Tier"]
"""The segment's columns: email, names, phone and three custom attributes."""

FIRST = [
    "Anna",
    "Bernd",
    "Chloé",
    "David",
    "Eva",
    "François",
    "Greta",
    "Hans",
    "Ines",
    "Jürgen",
    "Kofi",
    "Lena",
    "Mateo",
    "Nora",
    "Omar",
    "Priya",
    "Quinn",
    "Rosa",
    "Sven",
    "Tomás",
]
LAST = [
    "Müller",
    "Smith",
    "García",
    "Nguyen",
    "OBrien",
    "Kowalski",
    "Rossi",
    "Dubois",
    "Jensen",
    "Tanaka",
    "Silva",
    "Novak",
    "Larsen",
    "Costa",
    "Wagner",
    "Ahmed",
]
CITIES = [
    "Berlin",
    "Lisbon",
    "Chicago",
    "Osaka",
    "Nairobi",
    "Lyon",
    "Austin",
    "Oslo",
    "Porto",
    "Denver",
    "Kraków",
    "Seattle",
]
TIERS = ["Bronze", "Silver", "Gold"]
INVALID = [
    "no-at-sign.example.com",
    "user@",
    "two@@example.com",
    "spaces in@example.com",
    "trailing.dot.@example.com",
]

INVALID_EVERY = 200
"""One row in 200 (0.5%) has an invalid email."""
DUPLICATE_EVERY = 500
"""One row in 500 (0.2%) repeats the previous row's email (other letter case)."""
CHANGE_EVERY = 50
LEAVERS_PER_VERSION = 10
JOINERS_PER_VERSION = 10

_ASCII = {name: name.encode("ascii", "ignore").decode().lower() for name in FIRST + LAST}


def _mix(i: int) -> int:
    """A cheap, well-spread integer hash of the row number."""
    return (i * 2654435761 + 0x9E3779B9) & 0xFFFFFFFF


def email_of(i: int) -> str:
    """The (valid) email of contact ``i``."""
    h = _mix(i)
    first, last = FIRST[h % len(FIRST)], LAST[(h >> 8) % len(LAST)]
    return f"{_ASCII[first]}.{_ASCII[last]}.{i}@example{i % 37}.com"


def row(i: int, version: int = 0) -> list[str]:
    """Row ``i`` of the segment at ``version``."""
    h = _mix(i)
    first, last = FIRST[h % len(FIRST)], LAST[(h >> 8) % len(LAST)]
    city = CITIES[(h >> 16) % len(CITIES)]
    if version and i % CHANGE_EVERY == 0:
        city = CITIES[((h >> 16) + version) % len(CITIES)]
    if i % INVALID_EVERY == 7:
        email = INVALID[(i // INVALID_EVERY) % len(INVALID)]
    elif i % DUPLICATE_EVERY == 3 and i > 0:
        email = email_of(i - 1).upper()
    else:
        email = email_of(i)
    return [
        email,
        first,
        last,
        f"+1 555 {i:07d}",
        city,
        f"{1950 + i % 50}-{1 + i % 12:02d}-{1 + i % 28:02d}",
        TIERS[(h >> 24) % 3],
    ]


def rows(n: int, version: int = 0, start: int = 0) -> Iterator[list[str]]:
    """The segment's rows at ``version``: ``n`` base contacts, minus leavers, plus joiners."""
    first = start + version * LEAVERS_PER_VERSION
    last = start + n + version * JOINERS_PER_VERSION
    return (row(i, version) for i in range(first, last))


def write_csv(path: str | os.PathLike[str], n: int, *, version: int = 0) -> Path:
    """A plain CSV snapshot with a header row."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\r\n")
        writer.writerow(COLUMNS)
        writer.writerows(rows(n, version))
    return out


def write_cdm(
    folder: str | os.PathLike[str], n: int, *, partitions: int = 2, version: int = 0
) -> Path:
    """A Customer Insights export folder: ``model.json`` plus ``partitions`` header-less CSV
    partitions (the rows split evenly, in order). Returns the model.json path."""
    base = Path(folder)
    (base / "Segment").mkdir(parents=True, exist_ok=True)
    total = n + version * (JOINERS_PER_VERSION - LEAVERS_PER_VERSION)
    per = -(-total // max(partitions, 1))
    it = rows(n, version)
    parts = []
    for p in range(partitions):
        name = f"Segment/part-{p:05d}.csv"
        with (base / name).open("w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\r\n", quoting=csv.QUOTE_ALL)
            writer.writerows(next(it) for _ in range(min(per, max(total - p * per, 0))))
        parts.append(
            {
                "name": f"part-{p:05d}",
                "location": f"https://example.dfs.core.windows.net/ci/{base.name}/{name}",
                "fileFormatSettings": {
                    "$type": "CsvFormatSettings",
                    "columnHeaders": False,
                    "delimiter": ",",
                    "quoteStyle": "QuoteStyle.Csv",
                    "csvStyle": "CsvStyle.QuoteAlways",
                    "encoding": "UTF-8",
                },
            }
        )
    model = {
        "name": "segment-export",
        "version": "1.0",
        "entities": [
            {
                "$type": "LocalEntity",
                "name": "Segment",
                "attributes": [{"name": c, "dataType": "string"} for c in COLUMNS],
                "partitions": parts,
            }
        ],
    }
    path = base / "model.json"
    path.write_text(json.dumps(model, indent=2), encoding="utf-8")
    return path


def expected_valid_emails(n: int, version: int = 0) -> set[str]:
    """The lower-cased emails a correct export of this segment subscribes."""
    out = set()
    for values in rows(n, version):
        email = values[0].lower()
        if "@" in email and email not in INVALID and " " not in email:
            out.add(email)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="CSV file, or folder with --cdm")
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--version", type=int, default=0)
    parser.add_argument("--cdm", action="store_true", help="a Customer Insights folder")
    parser.add_argument("--partitions", type=int, default=2)
    args = parser.parse_args(argv)
    if args.cdm:
        print(write_cdm(args.out, args.rows, partitions=args.partitions, version=args.version))
    else:
        print(write_csv(args.out, args.rows, version=args.version))


if __name__ == "__main__":
    main()
