"""The body of a run request (``POST /api/exports/{name}/runs``, the console's *Run now*):
typed, every field optional, unknown fields refused, the snapshot path held to the same rule
as an export's segment."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from exporter.errors import ConfigError, ConfigErrors
from exporter.management.config import Export, config_errors, snapshot_path
from exporter.reading.refs import SnapshotRef
from exporter.run.records import RunOptions

MAX_SNAPSHOT_PATH = 1_024


def _strip(value: str) -> str:
    return value.strip()


class RunBody(BaseModel):
    """What a caller may say about a run it starts."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    snapshot: (
        Annotated[
            str,
            AfterValidator(_strip),
            Field(max_length=MAX_SNAPSHOT_PATH),
            AfterValidator(snapshot_path),
        ]
        | None
    ) = None
    """A snapshot under ``snapshots/`` to run over (default: the segment's newest)."""
    dry_run: bool = False
    """Plan only: write plan.csv, send nothing."""
    full_resync: bool = False
    """Send every contact again."""
    allow_shrink: bool = False
    """Override the shrink guard for this run."""

    def options(self) -> RunOptions:
        return RunOptions(
            dry_run=self.dry_run, full_resync=self.full_resync, allow_shrink=self.allow_shrink
        )


def parse_run_body(body: object) -> RunBody:
    """The run body, or :class:`ConfigErrors` naming each bad field (a field name that is not
    a plain identifier is not echoed back)."""
    if not isinstance(body, dict):
        raise ConfigErrors([ConfigError("expected a JSON object")])
    try:
        return RunBody.model_validate(body)
    except ValidationError as exc:
        errors = config_errors(exc).errors
        raise ConfigErrors([_safe(e) for e in errors]) from None


def _safe(error: ConfigError) -> ConfigError:
    field = error.field
    if field is not None and not (field.isidentifier() and len(field) <= 40):
        return ConfigError(error.detail, field=None)
    return error


def _in_segment(export: Export, path: str) -> bool:
    folder = export.segment.rstrip("/")
    return path.rstrip("/") == folder or export.segment_matches(path)


def check_snapshot_in_segment(export: Export, path: str) -> None:
    """Refuse a snapshot outside the export's segment, for every caller: a run sends only the
    segment its export was made for (a contributor allowed on one export must not send another
    team's snapshot through it). ``path`` is checked as requested and again once resolved
    (a folder resolves to its newest snapshot). The message never repeats the path."""
    if not _in_segment(export, path):
        raise ConfigErrors(
            [
                ConfigError(
                    f"must be a snapshot of export {export.name!r}'s segment "
                    "(or the segment itself, for its newest snapshot)",
                    field="snapshot",
                )
            ]
        )


def resolve_in_segment(
    export: Export, path: str, resolve: Callable[[str], SnapshotRef]
) -> SnapshotRef:
    """The snapshot ``path`` names (``resolve``: e.g. the engine's ``store_snapshot``), held to
    the export's segment before the store is asked and again once resolved (a folder resolves
    to its newest snapshot, which may lie elsewhere)."""
    check_snapshot_in_segment(export, path)
    snapshot = resolve(path)
    check_snapshot_in_segment(export, snapshot.path)
    return snapshot
