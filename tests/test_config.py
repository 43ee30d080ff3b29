"""Connection and export models: every field validated, errors naming the field."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from exporter.errors import ConfigError, ConfigErrors
from exporter.management.config import Connection, Export, parse_connection, parse_export
from exporter.management.permissions import ADMIN, CONTRIBUTOR

KEY = "0123456789abcdef" * 4 + "deadbeef"
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def connection(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "shop-ac",
        "display_name": "Shop ActiveCampaign",
        "hostname": "shop.api-us1.com",
        "api_key_ref": "env:AC_KEY",
        "consent": {"agreed": True, "by": "ada@example.com", "at": NOW.isoformat()},
    }
    data.update(overrides)
    return data


def export(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "high-value",
        "display_name": "High value customers",
        "connection": "shop-ac",
        "segment": "snapshots/high-value/",
        "list_id": "3",
        "email": "EmailAddress",
    }
    data.update(overrides)
    return data


def fields_of(exc: ConfigErrors) -> dict[str | None, str]:
    return {e.field: e.detail for e in exc.errors}


def test_a_minimal_connection_gets_safe_defaults() -> None:
    conn = parse_connection(connection())
    assert conn.type == "activecampaign"
    assert conn.allow_contributors is False  # administrators only by default
    assert conn.consent is not None and conn.consent.by == "ada@example.com"
    assert conn.require_consent().at == NOW


def test_a_minimal_export_gets_safe_defaults() -> None:
    exp = parse_export(export(list_id=3))
    assert exp.list_id == "3"
    assert exp.exclude_automations and exp.enabled
    assert exp.leaver_policy == "unsubscribe"
    assert exp.max_shrink == 0.2
    assert exp.schedule is None and exp.fields == [] and exp.tags == []


def test_unknown_keys_are_refused_by_name() -> None:
    with pytest.raises(ConfigErrors) as info:
        parse_connection(connection(api_key=KEY))
    assert fields_of(info.value) == {"api_key": "unknown field"}
    assert KEY not in str(info.value)
    with pytest.raises(ConfigErrors) as info:
        parse_export(export(fields=[{"column": "Tier", "field": "TIER", "colour": "red"}]))
    assert fields_of(info.value) == {"fields.0.colour": "unknown field"}


def test_every_problem_is_reported_with_its_field() -> None:
    with pytest.raises(ConfigErrors) as info:
        parse_export(
            {
                "name": "X",
                "display_name": "",
                "connection": "ab",
                "segment": "high-value",
                "list_id": "three",
                "schedule": "0 0 25 * * *",
                "max_shrink": 1.5,
                "leaver_policy": "delete",
            }
        )
    found = fields_of(info.value)
    assert set(found) == {
        "name",
        "display_name",
        "connection",
        "segment",
        "list_id",
        "email",
        "schedule",
        "max_shrink",
        "leaver_policy",
    }
    assert found["email"] == "is required"
    assert "hour 25" in found["schedule"]
    assert all(isinstance(e, ConfigError) for e in info.value.errors)


@pytest.mark.parametrize("name", ["ab", "-abc", "abc-", "ABC", "a_b", "a" * 64, "a/b", "a.b"])
def test_names_are_slugs(name: str) -> None:
    with pytest.raises(ConfigErrors) as info:
        parse_connection(connection(name=name))
    assert "name" in fields_of(info.value)


@pytest.mark.parametrize("name", ["abc", "a" * 63, "shop-2"])
def test_good_names(name: str) -> None:
    assert parse_connection(connection(name=name)).name == name


@pytest.mark.parametrize("ref", [KEY, "AC_KEY", f"env:{KEY}", "file:key.txt", "s3:bucket"])
def test_api_key_ref_must_be_a_reference_and_is_never_echoed(ref: str) -> None:
    with pytest.raises(ConfigErrors) as info:
        parse_connection(connection(api_key_ref=ref))
    assert set(fields_of(info.value)) == {"api_key_ref"}
    assert KEY not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


@pytest.mark.parametrize("host", ["https://shop.api-us1.com", "shop.api-us1.com/api/3", "a b"])
def test_stored_hostname_is_the_hostname_only(host: str) -> None:
    with pytest.raises(ConfigErrors) as info:
        parse_connection(connection(hostname=host))
    assert set(fields_of(info.value)) == {"hostname"}


def test_consent_must_be_true_and_is_required_to_use() -> None:
    with pytest.raises(ConfigErrors) as info:
        parse_connection(connection(consent={"agreed": False, "by": "x", "at": NOW.isoformat()}))
    assert "consent.agreed" in fields_of(info.value)
    conn = parse_connection(connection(consent=None))
    with pytest.raises(ConfigError) as err:
        conn.require_consent()
    assert err.value.field == "consent"
    assert "privacy" in err.value.detail


def test_contributors_see_only_name_display_name_and_type() -> None:
    conn = parse_connection(connection())
    assert conn.to_public_dict(CONTRIBUTOR) == {
        "name": "shop-ac",
        "display_name": "Shop ActiveCampaign",
        "type": "activecampaign",
    }
    full = conn.to_public_dict(ADMIN)
    assert full["hostname"] == "shop.api-us1.com"
    assert full["api_key_ref"] == "env:AC_KEY"
    assert full["consent"]["by"] == "ada@example.com"


@pytest.mark.parametrize("list_id", ["0", "-1", "3a", "", " ", "1.5", True])
def test_list_id_is_digits(list_id: object) -> None:
    with pytest.raises(ConfigErrors) as info:
        parse_export(export(list_id=list_id))
    assert set(fields_of(info.value)) == {"list_id"}


def test_optional_columns_fields_and_tags() -> None:
    exp = parse_export(
        export(
            first_name="GivenName",
            last_name="Surname",
            phone="Mobile",
            fields=[{"column": "Tier", "field": "%TIER%"}, {"column": "Since", "field": "7"}],
            tags=["segment:high-value"],
            tag_column="Interests",
            profile_id_column="CustomerId",
            schedule="0 0 2 * * *",
            leaver_policy="keep",
            max_shrink=0,
        )
    )
    assert [f.field for f in exp.fields] == ["%TIER%", "7"]
    assert exp.fields[0].field_id is None
    assert exp.leaver_policy == "keep" and exp.max_shrink == 0


def test_the_same_custom_field_cannot_be_mapped_twice() -> None:
    with pytest.raises(ConfigErrors) as info:
        parse_export(
            export(fields=[{"column": "a", "field": "Tier"}, {"column": "b", "field": "tier"}])
        )
    assert "fields" in fields_of(info.value)


@pytest.mark.parametrize(
    "segment", ["snapshots/", "snapshot/x", "snapshots/../config/", "snapshots//x", "x"]
)
def test_segment_must_be_under_snapshots(segment: str) -> None:
    with pytest.raises(ConfigErrors) as info:
        parse_export(export(segment=segment))
    assert set(fields_of(info.value)) == {"segment"}


def test_a_segment_is_a_snapshot_path_in_a_narrower_alphabet() -> None:
    """A segment is typed by a person and may be a glob: it follows the snapshot-path rule
    and a conservative character set on top (a snapshot named in a run may use any)."""
    with pytest.raises(ConfigErrors) as info:
        parse_export(export(segment="snapshots/high (value)/"))
    assert "not allowed in a segment" in fields_of(info.value)["segment"]
    assert parse_export(export(segment="snapshots/high value/*.csv")).segment


@pytest.mark.parametrize(
    ("segment", "path", "matches"),
    [
        ("snapshots/high-value/", "snapshots/high-value/2024/05/01/part-0.csv", True),
        ("snapshots/high-value/", "snapshots/high-value-2/a.csv", False),
        ("snapshots/high-value", "snapshots/high-value/a.csv", True),
        ("snapshots/high-value", "snapshots/high-value-2/a.csv", False),
        ("snapshots/hv/segment.csv", "snapshots/hv/segment.csv", True),
        ("snapshots/hv/*.csv", "snapshots/hv/a.csv", True),
        ("snapshots/hv/*.csv", "snapshots/hv/2024/a.csv", False),
        ("snapshots/hv/**.csv", "snapshots/hv/2024/a.csv", True),
        ("snapshots/hv/**/*.csv.gz", "snapshots/hv/2024/05/a.csv.gz", True),
        ("snapshots/hv/part-?.csv", "snapshots/hv/part-1.csv", True),
        ("snapshots/hv/part-[0-3].csv", "snapshots/hv/part-4.csv", False),
    ],
)
def test_segment_matching(segment: str, path: str, matches: bool) -> None:
    assert parse_export(export(segment=segment)).segment_matches(path) is matches


def test_not_an_object() -> None:
    with pytest.raises(ConfigErrors, match="JSON object"):
        parse_export(["not", "a", "dict"])


def test_round_trip_through_json() -> None:
    exp = parse_export(export(schedule="0 0 2 * * *", created_at=NOW.isoformat()))
    again = Export.model_validate_json(exp.model_dump_json())
    assert again == exp
    conn = parse_connection(connection())
    assert Connection.model_validate_json(conn.model_dump_json()) == conn


def test_contributor_segments_are_folders_and_bound_contributors_segments() -> None:
    conn = parse_connection(connection(contributor_segments=["snapshots/team-a", "snapshots/b/"]))
    assert conn.contributor_segments == ["snapshots/team-a/", "snapshots/b/"]
    assert conn.open_to_contributors("snapshots/team-a/")
    assert conn.open_to_contributors("snapshots/team-a")
    assert conn.open_to_contributors("snapshots/team-a/eu/*.csv")
    assert not conn.open_to_contributors("snapshots/team-ab/")
    assert not conn.open_to_contributors("snapshots/*/x.csv")
    assert parse_connection(connection()).open_to_contributors("snapshots/anything/")
    for bad in (["snapshots/*/"], ["config/x/"], ["snapshots/../x/"], "snapshots/a/"):
        with pytest.raises(ConfigErrors) as info:
            parse_connection(connection(contributor_segments=bad))
        assert {e.field for e in info.value.errors} <= {
            "contributor_segments",
            "contributor_segments.0",
        }
