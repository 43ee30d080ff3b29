"""Customer Insights folders: ``model.json`` read into entities, and the partition files of an
entity resolved (relative to the folder of ``model.json``, by their path tail) into
:class:`~exporter.reading.refs.Part` objects for the CSV reader."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from exporter.errors import InputError
from exporter.reading.limits import MODEL_JSON_BYTES
from exporter.reading.refs import Opener, Part, open_raw


@dataclass(frozen=True)
class CdmEntity:
    name: str
    columns: list[str]
    partitions: list[tuple[str, dict[str, Any]]]
    """(location URL or path, fileFormatSettings)."""


def load_model(path: str, opener: Opener) -> list[CdmEntity]:
    fh = open_raw(path, opener)
    try:
        data = fh.read(MODEL_JSON_BYTES + 1)
    finally:
        fh.close()
    if len(data) > MODEL_JSON_BYTES:
        raise InputError(f"model.json is larger than {MODEL_JSON_BYTES} bytes", file=path)
    try:
        model = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise InputError(f"model.json is not UTF-8 (byte offset {exc.start})", file=path) from None
    except json.JSONDecodeError as exc:
        raise InputError(
            f"malformed model.json: {exc.msg} at line {exc.lineno} column {exc.colno}",
            file=path,
            row=exc.lineno,
        ) from None
    entities = model.get("entities") if isinstance(model, dict) else None
    if not isinstance(entities, list) or not entities:
        raise InputError("malformed model.json: no 'entities' list", file=path)
    found: list[CdmEntity] = []
    for i, ent in enumerate(entities):
        if not isinstance(ent, dict) or ent.get("$type", "LocalEntity") != "LocalEntity":
            continue
        found.append(_parse_entity(path, i, ent))
    if not found:
        raise InputError("malformed model.json: no LocalEntity in 'entities'", file=path)
    return found


def _parse_entity(path: str, i: int, ent: dict[str, Any]) -> CdmEntity:
    name = str(ent.get("name") or f"entities[{i}]")
    attrs = ent.get("attributes")
    if not isinstance(attrs, list) or not attrs:
        raise InputError(f"malformed model.json: entity {name!r} has no attributes", file=path)
    columns: list[str] = []
    for a in attrs:
        if not isinstance(a, dict) or not isinstance(a.get("name"), str):
            raise InputError(
                f"malformed model.json: entity {name!r} has an attribute without a name",
                file=path,
            )
        columns.append(a["name"])
    parts = ent.get("partitions", [])
    if not isinstance(parts, list):
        raise InputError(f"malformed model.json: entity {name!r} partitions", file=path)
    partitions: list[tuple[str, dict[str, Any]]] = []
    for p in parts:
        loc = p.get("location") if isinstance(p, dict) else None
        if not isinstance(loc, str) or not loc:
            raise InputError(
                f"malformed model.json: entity {name!r} has a partition without a location",
                file=path,
            )
        settings = p.get("fileFormatSettings") or {}
        partitions.append((loc, settings if isinstance(settings, dict) else {}))
    return CdmEntity(name=name, columns=columns, partitions=partitions)


def dirname(path: str) -> str:
    head, sep, _tail = path.replace("\\", "/").rpartition("/")
    return head + sep


def _resolve_location(model_path: str, location: str, existing: set[str] | None) -> str:
    """Map a partition URL to a path beside ``model_path`` by its path tail.

    Preferred: the part of the URL path after the segment named like model.json's folder
    (``<exportName>``). Otherwise the longest tail that exists (when a listing is known), else
    the file name.
    """
    base = dirname(model_path)
    url_path = unquote(urlsplit(location).path) if "://" in location else location
    segs = [s for s in url_path.replace("\\", "/").split("/") if s]
    if any(s in (".", "..") for s in segs):
        raise InputError(
            f"partition location {location!r} leaves the folder of model.json", file=model_path
        )
    folder = base.rstrip("/").rpartition("/")[2]
    candidates: list[str] = []
    if folder and folder in segs[:-1]:
        anchor = len(segs) - 1 - segs[::-1].index(folder)
        candidates.append(base + "/".join(segs[anchor + 1 :]))
    candidates.extend(base + "/".join(segs[-k:]) for k in range(len(segs), 0, -1))
    if existing is None:
        return candidates[0]
    for c in candidates:
        if c in existing:
            return c
    return candidates[0]


def _bool(value: Any, default: bool) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return default


def cdm_parts(
    model_path: str,
    entity: CdmEntity,
    existing: set[str] | None,
    delimiter: str | None,
    encoding: str | None,
) -> list[Part]:
    parts = []
    seen: set[str] = set()
    for loc, settings in entity.partitions:
        path = _resolve_location(model_path, loc, existing)
        if path in seen:
            raise InputError(
                f"model.json names partition {path} of entity {entity.name!r} twice",
                file=model_path,
            )
        seen.add(path)
        if existing is not None and path not in existing:
            folder = any(p.startswith(path + "/") for p in existing)
            raise InputError(
                f"model.json names partition {loc!r} of entity {entity.name!r}, "
                f"but {path} {'is a folder, not a file' if folder else 'does not exist'}",
                file=model_path,
            )
        delim = delimiter or settings.get("delimiter") or ","
        enc = encoding or str(settings.get("encoding") or "utf-8")
        parts.append(
            Part(
                path=path,
                delimiter=str(delim),
                header=_bool(settings.get("columnHeaders"), False),
                encoding=enc,
            )
        )
    return parts


def pick_entity(path: str, entities: list[CdmEntity], name: str | None) -> CdmEntity:
    if name is not None:
        for e in entities:
            if e.name == name:
                return e
        names = ", ".join(e.name for e in entities)
        raise InputError(f"model.json has no entity {name!r} (it has: {names})", file=path)
    if len(entities) == 1:
        return entities[0]
    names = ", ".join(e.name for e in entities)
    raise InputError(
        f"model.json describes several entities ({names}); name the one to read", file=path
    )
