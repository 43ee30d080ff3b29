"""Limits that keep reading a hostile snapshot in bounded memory and time.

Every limit has a default that fits real segment exports with room to spare, and a setting
(an environment variable of the command line, read once at the edge by
:meth:`ReadLimits.from_env`) that raises it. A file over a limit is an
:class:`~exporter.errors.InputError` naming the file, the row, the limit and its setting:
nothing is sent (CLI exit 2).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

from exporter.errors import ConfigError

SETTINGS = {
    "max_record_bytes": "EXPORTER_MAX_RECORD_BYTES",
    "max_field_chars": "EXPORTER_MAX_FIELD_CHARS",
    "max_columns": "EXPORTER_MAX_COLUMNS",
    "max_decompressed_bytes": "EXPORTER_MAX_DECOMPRESSED_BYTES",
    "max_decompression_ratio": "EXPORTER_MAX_DECOMPRESSION_RATIO",
    "max_partitions": "EXPORTER_MAX_PARTITIONS",
    "max_rejected_rows": "EXPORTER_MAX_REJECTED_ROWS",
}
"""Each limit's setting (environment variable / app setting)."""

RATIO_FLOOR = 16 << 20
"""Decompressed bytes read before the decompression ratio is checked (a small, very
compressible file is not a bomb)."""
BLOCK_BYTES = 16 << 20
"""Input bytes a block of rows may hold at most (rows per block = this / max_record_bytes)."""
MODEL_JSON_BYTES = 16 << 20
"""Largest model.json read."""


@dataclass(frozen=True)
class ReadLimits:
    """The limits one snapshot is read under."""

    max_record_bytes: int = 1 << 20
    """Bytes of one record (a physical line, or several when a quoted field holds line
    breaks), measured to within one 64 KB read."""
    max_field_chars: int = 1 << 20
    """Characters of one field."""
    max_columns: int = 10_000
    """Columns of the header, and delimiters in one record (quoted ones count too)."""
    max_decompressed_bytes: int = 20 << 30
    """Bytes a gzip file may decompress to."""
    max_decompression_ratio: int = 200
    """Decompressed / compressed bytes of a gzip file (checked after 16 MB)."""
    max_partitions: int = 5_000
    """Partition files a model.json entity may list."""
    max_rejected_rows: int = 100_000
    """Rejected rows after which a run stops as ``guarded`` (and, from 10,000 rows read,
    more than half of the rows rejected stops it too)."""

    def __post_init__(self) -> None:
        for f in fields(self):
            if getattr(self, f.name) < 1:
                raise ValueError(f"{f.name} must be at least 1")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ReadLimits:
        """Limits from settings; an unset setting keeps its default."""
        given: dict[str, int] = {}
        for name, setting in SETTINGS.items():
            raw = (env.get(setting) or "").strip()
            if not raw:
                continue
            try:
                given[name] = int(raw)
            except ValueError:
                raise ConfigError(f"must be a whole number, got {raw!r}", field=setting) from None
            if given[name] < 1:
                raise ConfigError("must be at least 1", field=setting)
        return cls(**given)

    def block_rows(self, wanted: int) -> int:
        """Rows per block so that a block of records at the size limit stays in
        :data:`BLOCK_BYTES`."""
        return max(16, min(wanted, BLOCK_BYTES // self.max_record_bytes))


def over(limit: str, value: int) -> str:
    """The end of a limit's error message: which limit, and which setting raises it."""
    return f"(limit {limit}={value}; raise it with the setting {SETTINGS[limit]})"
