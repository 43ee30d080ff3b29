"""Mapping and validation: column binding, email rules, value formats, the payload bytes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.errors import ConfigError, InputError
from exporter.planning.contacts import (
    PreparedContact,
    Rejection,
    dumps,
    encode_bulk_body,
    fingerprint,
)
from exporter.planning.mapping import (
    FieldMapping,
    FieldValueError,
    Mapper,
    MappingSpec,
    format_date,
    format_datetime,
    format_value,
    leaver_payload,
    normalise_email,
)
from tests.conftest import OPENAPI_PATH

COLUMNS = [
    " Email ",
    "First Name",
    "LAST_NAME",
    "Phone",
    "City",
    "Birthday",
    "Colors",
    "Tags",
    "Pid",
]
SPEC = MappingSpec(
    email="email",
    list_id="12",
    first_name="first name",
    last_name="last_name",
    phone="PHONE",
    fields=[
        FieldMapping("city", "3"),
        FieldMapping("birthday", "7", "date"),
        FieldMapping("colors", "9", "multiselect"),
    ],
    tags=["segment:vip", "segment:vip", " "],
    tag_column="tags",
    profile_id_column="pid",
)


def row(**over: str) -> list[str]:
    base = {
        "email": "Ada.Lovelace@Example.com",
        "first": "Ada",
        "last": "Lovelace",
        "phone": "+44 20 7946 0000",
        "city": "London",
        "birthday": "1815-12-10",
        "colors": "red; blue",
        "tags": "math|poet",
        "pid": "p-1",
    }
    base.update(over)
    return list(base.values())


def expected_obj(**over: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "email": "Ada.Lovelace@Example.com",
        "first_name": "Ada",
        "last_name": "Lovelace",
        "phone": "+44 20 7946 0000",
        "fields": [
            {"id": 3, "value": "London"},
            {"id": 7, "value": "1815-12-10"},
            {"id": 9, "value": "red||blue"},
        ],
        "tags": ["segment:vip", "math", "poet"],
        "subscribe": [{"listid": "12"}],
    }
    obj.update(over)
    return {k: v for k, v in obj.items() if v is not None}


@pytest.fixture
def mapper() -> Mapper:
    return Mapper(SPEC, COLUMNS, source="s.csv")


def contact(mapper: Mapper, values: list[str], row_no: int = 1) -> PreparedContact:
    out = mapper.map("s.csv", row_no, values)
    assert isinstance(out, PreparedContact), out
    return out


def rejection(mapper: Mapper, values: list[str]) -> Rejection:
    out = mapper.map("s.csv", 4, values)
    assert isinstance(out, Rejection), out
    return out


# --- binding ----------------------------------------------------------------------------------


def test_columns_bind_case_insensitively_with_trimmed_headers(mapper: Mapper) -> None:
    c = contact(mapper, row(), 5)
    assert (c.row, c.source, c.profile_id) == (5, "s.csv", "p-1")
    assert c.payload == dumps(expected_obj())
    assert c.key == "ada.lovelace@example.com"
    assert c.fingerprint == fingerprint(c.payload)
    assert mapper.value_columns == COLUMNS


def test_a_missing_column_lists_the_columns_that_exist() -> None:
    spec = MappingSpec(email="e-mail", list_id="1")
    with pytest.raises(InputError) as err:
        Mapper(spec, ["Email", "Name"], source="seg.csv")
    assert err.value.file == "seg.csv" and err.value.column == "e-mail"
    assert "'Email', 'Name'" in str(err.value)
    with pytest.raises(ConfigError) as cerr:
        Mapper(spec, ["Email", "Name"])
    assert "'Email', 'Name'" in str(cerr.value) and cerr.value.field == "mapping.email"


def test_a_file_without_header_is_a_mapping_error() -> None:
    with pytest.raises(InputError) as err:
        Mapper(MappingSpec(email="email", list_id="1"), [], source="x.csv")
    assert "no header" in str(err.value)


def test_an_ambiguous_column_is_refused() -> None:
    with pytest.raises(ConfigError, match="matches several columns"):
        Mapper(MappingSpec(email="email", list_id="1"), ["Email", " EMAIL"])


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        (MappingSpec(email="email", list_id=""), "list id"),
        (MappingSpec(email=" ", list_id="1"), "email column"),
        (MappingSpec(email="email", list_id="1", fields=[FieldMapping("x", "abc")]), "number"),
        (MappingSpec(email="email", list_id="1", fields=[FieldMapping("x", "1", "blob")]), "type"),
    ],
)
def test_invalid_specs(spec: MappingSpec, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        Mapper(spec, ["email", "x"])


# --- payload ----------------------------------------------------------------------------------


def test_empty_values_are_not_sent(mapper: Mapper) -> None:
    c = contact(mapper, row(first="  ", phone="", city="", colors=" ; ", tags="", pid=" "))
    assert c.payload == dumps(
        expected_obj(
            first_name=None,
            phone=None,
            fields=[{"id": 7, "value": "1815-12-10"}],
            tags=["segment:vip"],
        )
    )
    assert c.profile_id is None


def test_minimal_spec_payload() -> None:
    m = Mapper(MappingSpec(email="Email", list_id="3"), ["Email"])
    c = m.map("f", 1, ["  x@example.com "])
    assert isinstance(c, PreparedContact)
    assert c.payload == '{"email":"x@example.com","subscribe":[{"listid":"3"}]}'


# Rows come from strictly decoded UTF-8, so they never hold lone surrogates.
UTF8 = st.characters(codec="utf-8")


@settings(max_examples=300, deadline=None)
@given(
    first=st.text(alphabet=UTF8),
    last=st.text(alphabet=UTF8, max_size=20),
    city=st.text(alphabet=UTF8, max_size=30),
    tags=st.lists(
        st.text(alphabet=st.characters(codec="utf-8", exclude_characters=",;|"), max_size=8),
        max_size=4,
    ),
)
def test_payload_is_byte_identical_to_dumps(
    first: str, last: str, city: str, tags: list[str]
) -> None:
    m = Mapper(SPEC, COLUMNS)
    values = row(first=first, last=last, city=city, tags="|".join(tags), colors="")
    c = m.map("s.csv", 1, values)
    assert isinstance(c, PreparedContact)
    want_tags = list(dict.fromkeys(["segment:vip", *(t.strip() for t in tags if t.strip())]))
    obj = {
        "email": "Ada.Lovelace@Example.com",
        "first_name": first.strip() or None,
        "last_name": last.strip() or None,
        "phone": "+44 20 7946 0000",
        "fields": [
            f
            for f in [{"id": 3, "value": city.strip()}, {"id": 7, "value": "1815-12-10"}]
            if f["value"]
        ],
        "tags": want_tags,
        "subscribe": [{"listid": "12"}],
    }
    assert c.payload == dumps({k: v for k, v in obj.items() if v is not None})
    assert c.fingerprint == fingerprint(c.payload)


def test_special_characters_are_escaped_like_dumps(mapper: Mapper) -> None:
    tricky = 'Zoë "the" \\ \n\t\x01 \u2028 😀'
    c = contact(mapper, row(first=tricky, city="a</script>"))
    assert c.payload == dumps(
        expected_obj(
            first_name=tricky.strip(),
            fields=[
                {"id": 3, "value": "a</script>"},
                {"id": 7, "value": "1815-12-10"},
                {"id": 9, "value": "red||blue"},
            ],
        )
    )
    assert json.loads(c.payload)["first_name"] == tricky.strip()


def test_leaver_payload() -> None:
    assert leaver_payload("a@x.io", "12") == dumps(
        {"email": "a@x.io", "unsubscribe": [{"listid": "12"}]}
    )


def test_payloads_validate_against_the_openapi_bulk_import_schema(mapper: Mapper) -> None:
    if not OPENAPI_PATH.exists():
        pytest.skip(f"ActiveCampaign OpenAPI subset not found at {OPENAPI_PATH}")
    import jsonschema

    doc = json.loads(OPENAPI_PATH.read_text())
    schema = doc["paths"]["/import/bulk_import"]["post"]["requestBody"]["content"][
        "application/json"
    ]["schema"]
    contacts = [contact(mapper, row()).payload, contact(mapper, row(tags="", colors="")).payload]
    contacts.append(leaver_payload("b@x.io", "12"))
    body = json.loads(encode_bulk_body(contacts, exclude_automations=True))
    jsonschema.Draft202012Validator(schema).validate(body)
    assert body["contacts"][0]["fields"][0]["id"] == 3  # an integer, as the schema says


# --- rejections -------------------------------------------------------------------------------


def test_missing_email(mapper: Mapper) -> None:
    r = rejection(mapper, row(email="   "))
    assert (r.reason, r.column, r.row, r.source) == ("missing_email", " Email ", 4, "s.csv")
    assert r.values["First Name"] == "Ada" and r.values[" Email "] == "   "


def test_ragged_row(mapper: Mapper) -> None:
    r = rejection(mapper, [*row(), "extra", "more"])
    assert r.reason == "ragged_row" and "11 values" in r.message and "9 columns" in r.message
    assert r.values[" Email "] == "Ada.Lovelace@Example.com"


def test_short_row_reads_missing_trailing_values_as_empty(mapper: Mapper) -> None:
    full = row()
    short = full[:-2]
    padded = [*short, "", ""]
    got = mapper.map("s.csv", 4, short)
    want = mapper.map("s.csv", 4, padded)
    assert isinstance(got, PreparedContact) and isinstance(want, PreparedContact)
    assert got == want
    assert mapper.map("s.csv", 4, full) != got  # the trimmed values really were mapped ones


def test_invalid_date_names_the_column(mapper: Mapper) -> None:
    r = rejection(mapper, row(birthday="10/12/1815"))
    assert (r.reason, r.column) == ("invalid_field_value", "Birthday")
    assert "10/12/1815" in r.message


@pytest.mark.parametrize(
    "email",
    [
        "a@example.com",
        "first.last+tag@sub.example.co.uk",
        "o'brien@example.ie",
        "x_y-z!#$%&*/=?^`{|}~@example.io",
        "A@EXAMPLE.COM",
        "u@xn--strae-oqa.de",
        "a" * 64 + "@example.com",
        "a@" + "b" * 63 + ".com",
    ],
)
def test_valid_emails(email: str) -> None:
    assert normalise_email(email) == (email, "")


@pytest.mark.parametrize(
    ("email", "why"),
    [
        ("plainaddress", "not a valid"),
        ("a@b", "not a valid"),
        ("a..b@example.com", "not a valid"),
        (".a@example.com", "not a valid"),
        ("a.@example.com", "not a valid"),
        ("a@-example.com", "not a valid"),
        ("a@example.c", "not a valid"),
        ("a b@example.com", "not a valid"),
        ("a@b@example.com", "not a valid"),
        ("a@example.com.", "not a valid"),
        ("a" * 65 + "@example.com", "before @ is longer than 64"),
        ("a@" + ("b" * 60 + ".") * 5 + "com", "longer than 254"),
        ("jürgen@example.de", "non-ASCII characters before the @"),
        ("a@exa mple.de", "not a valid"),
    ],
)
def test_invalid_emails(email: str, why: str) -> None:
    fixed, reason = normalise_email(email)
    assert fixed is None and why in reason


def test_internationalised_domains_are_idna_encoded(mapper: Mapper) -> None:
    assert normalise_email("hans@straße.de") == ("hans@xn--strae-oqa.de", "")
    c = contact(mapper, row(email="Hans@Bücher.example"))
    assert json.loads(c.payload)["email"] == "Hans@xn--bcher-kva.example"
    assert c.key == "hans@xn--bcher-kva.example"


def test_invalid_email_rejection_carries_the_reason(mapper: Mapper) -> None:
    r = rejection(mapper, row(email="jürgen@example.de"))
    assert r.reason == "invalid_email" and "non-ASCII" in r.message and r.column == " Email "
    long_value = "x" * 1_000_000
    assert rejection(mapper, row(email=long_value)).reason == "invalid_email"


# --- value formats ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "out"),
    [
        ("2024-02-29", "2024-02-29"),
        ("2024/2/9", "2024-02-09"),
        ("2024.12.01", "2024-12-01"),
        ("2024-03-05T23:30:00+05:00", "2024-03-05"),
        ("2024-03-05 08:00", "2024-03-05"),
        ("2024-03-05T08:00:00.123Z", "2024-03-05"),
        ("20240305", "2024-03-05"),
        ("05.03.2024", "2024-03-05"),
    ],
)
def test_dates(value: str, out: str) -> None:
    assert format_date(value) == out


@pytest.mark.parametrize(
    "value", ["2023-02-29", "03/05/2024", "5 March 2024", "2024-13-01", "2024-03-05Tnoon"]
)
def test_bad_dates(value: str) -> None:
    with pytest.raises(FieldValueError):
        format_date(value)


def test_datetimes() -> None:
    assert format_datetime("2024-03-05T08:09:10.5+01:00") == "2024-03-05T08:09:10+01:00"
    assert format_datetime("2024-03-05 08:09") == "2024-03-05T08:09:00"
    assert format_datetime("2024-03-05") == "2024-03-05T00:00:00"
    with pytest.raises(FieldValueError):
        format_datetime("yesterday")


@pytest.mark.parametrize(
    ("value", "ftype", "out"),
    [
        ("a, b ;c|d", "multiselect", "a||b||c||d"),
        ("a,,b, ", "checkbox", "a||b"),
        ("x || y", "listbox", "x||y"),
        ("Red, dark", "dropdown", "Red, dark"),
        ("12,5", "number", "12.5"),
        ("-3", "currency", "-3"),
        ("free text", "textarea", "free text"),
    ],
)
def test_value_formats(value: str, ftype: str, out: str) -> None:
    assert format_value(value, ftype) == out


def test_bad_number_is_rejected() -> None:
    m = Mapper(
        MappingSpec(email="e", list_id="1", fields=[FieldMapping("n", "2", "number")]), ["e", "n"]
    )
    r = m.map("f", 1, ["a@x.io", "12 apples"])
    assert isinstance(r, Rejection) and r.reason == "invalid_field_value" and r.column == "n"


def test_short_row_of_a_wide_file_is_padded_too() -> None:
    columns = ["Email", *(f"c{i}" for i in range(30))]
    spec = MappingSpec(email="email", list_id="1", fields=[FieldMapping("c29", "5")])
    wide = Mapper(spec, columns, source="w.csv")
    got = wide.map("w.csv", 2, ["a@x.io", "1"])
    assert isinstance(got, PreparedContact), got
    assert got == wide.map("w.csv", 2, ["a@x.io", "1", *[""] * 29])
    longer = wide.map("w.csv", 2, ["a@x.io", *[""] * 31])
    assert isinstance(longer, Rejection) and longer.reason == "ragged_row"
