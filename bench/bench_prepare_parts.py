"""Throughput of the front half of *prepare*: read + map + batch, on one core.

Generates a CSV of typical rows (email, first, last, phone, three custom fields: text, date,
multiselect), then streams it through :func:`exporter.reading.snapshot.open_snapshot`,
:class:`exporter.planning.mapping.Mapper` and :class:`exporter.planning.batching.BatchPlanner`, and
prints rows/s
(CPU time: the machine may be shared) and the process's peak RSS, for the row function one row
at a time and for the block path prepare uses (:class:`exporter.planning.blockmap.BlockMapper`,
contacts as columns). Goal: at least 300,000 rows/s.

    .venv/bin/python -m bench.bench_prepare_parts [--rows 200000] [--gzip]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import random
import resource
import tempfile
import time
from pathlib import Path

from exporter.planning.batching import BatchPlanner
from exporter.planning.blockmap import BlockMapper
from exporter.planning.contacts import PreparedContact
from exporter.planning.mapping import FieldMapping, Mapper, MappingSpec
from exporter.reading.snapshot import local_opener, open_snapshot

FIRST = ["Anna", "Bernd", "Chloé", "David", "Eva", "François", "Greta", "Hans", "Ines", "Jürgen"]
LAST = ["Müller", "Smith", "García", "Nguyen", "O'Brien", "Kowalski", "Rossi", "Dubois"]
COLORS = ["red", "green", "blue", "yellow"]


def write_csv(path: Path, rows: int, *, compress: bool) -> None:
    """A deterministic CSV of ``rows`` typical contacts."""
    rnd = random.Random(7)
    opener = gzip.open if compress else open
    with opener(path, "wt", encoding="utf-8", newline="") as fh:
        fh.write("Email,FirstName,LastName,Phone,City,Birthday,Colors\r\n")
        for i in range(rows):
            first, last = rnd.choice(FIRST), rnd.choice(LAST)
            colors = ";".join(rnd.sample(COLORS, 2))
            local = first.lower().encode("ascii", "ignore").decode()
            fh.write(
                f"{local}.{i}@example{i % 97}.com,{first},{last},+49 30 {i:07d},"
                f'Berlin,19{60 + i % 40}-0{1 + i % 9}-1{i % 10},"{colors}"\r\n'
            )


SPEC = MappingSpec(
    email="email",
    list_id="7",
    first_name="firstname",
    last_name="lastname",
    phone="phone",
    fields=[
        FieldMapping("City", "1", "text"),
        FieldMapping("Birthday", "2", "date"),
        FieldMapping("Colors", "3", "multiselect"),
    ],
)


def baseline(path: Path) -> float:
    """CPU seconds of bare ``csv.reader`` over the file: the floor, to compare machines."""
    start = time.process_time()
    with open(path, encoding="utf-8", newline="") as fh:
        for _ in csv.reader(fh):
            pass
    return time.process_time() - start


def run(path: Path) -> tuple[int, int, float]:
    """(rows, batches, CPU seconds) for read + map + batch over ``path``."""
    start = time.process_time()
    rows = batches = 0
    with open_snapshot(str(path), opener=local_opener) as reader:
        mapper = Mapper(SPEC, reader.columns, source=str(path))
        planner = BatchPlanner(exclude_automations=True)
        map_row, add = mapper.map, planner.add
        for source, row_no, values in reader.rows():
            rows += 1
            item = map_row(source, row_no, values)
            if type(item) is PreparedContact and add(item) is not None:
                batches += 1
        if planner.flush() is not None:
            batches += 1
    return rows, batches, time.process_time() - start


def run_blocks(path: Path) -> tuple[int, int, float]:
    """:func:`run` the way prepare reads and maps: a block at a time, contacts as columns."""
    start = time.process_time()
    rows = batches = 0
    with open_snapshot(str(path), opener=local_opener) as reader:
        mapper = BlockMapper(Mapper(SPEC, reader.columns, source=str(path)))
        planner = BatchPlanner(exclude_automations=True)
        for source, first, block in reader.blocks(1024):
            rows += len(block)
            contacts, _at, _rejected = mapper.map_columns(source, first, block)
            batches += len(planner.add_all(contacts.contacts()))
        if planner.flush() is not None:
            batches += 1
    return rows, batches, time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--gzip", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("bench.csv.gz" if args.gzip else "bench.csv")
        write_csv(path, args.rows, compress=args.gzip)
        run(path)  # warm-up (page cache, imports)
        results = {
            name: min((fn(path) for _ in range(3)), key=lambda r: r[2])
            for name, fn in (("row by row", run), ("blocks", run_blocks))
        }
        floor = min(baseline(path) for _ in range(3)) if not args.gzip else 0.0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for name, (rows, batches, seconds) in results.items():
        print(
            f"read+map+batch ({name}): {rows} rows, {batches} batches in {seconds:.3f} CPU s = "
            f"{rows / seconds:,.0f} rows/s"
        )
    print(f"peak RSS {peak_mb:.0f} MB")
    if floor:
        print(f"bare csv.reader on this machine: {rows / floor:,.0f} rows/s (for comparison)")


if __name__ == "__main__":
    main()
