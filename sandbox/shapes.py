"""Response bodies in ActiveCampaign's shapes (ids and counts as strings, camelCase where the
API uses it). Only the members a client could rely on are filled; the rest of ActiveCampaign's
many columns are left out, which its OpenAPI schemas allow."""

from __future__ import annotations

import hashlib

from sandbox.account import Account, Contact, Tag
from sandbox.config import Field


def _membership_id(contact_id: int, list_id: str) -> str:
    return str(contact_id * 10_000 + int(list_id) % 10_000)


def _field_value_id(contact_id: int, field_id: str) -> str:
    return str(contact_id * 10_000 + int(field_id) % 10_000)


def contact_links(base: str, contact_id: int) -> dict[str, str]:
    """The ``links`` of a contact."""
    url = f"{base}/api/3/contacts/{contact_id}"
    return {
        name: f"{url}/{name}"
        for name in (
            "bounceLogs",
            "contactAutomations",
            "contactData",
            "contactGoals",
            "contactLists",
            "contactLogs",
            "contactTags",
            "contactDeals",
            "deals",
            "fieldValues",
            "geoIps",
            "notes",
            "organization",
            "plusAppend",
            "trackingLogs",
            "scoreValues",
        )
    }


def contact(c: Contact, base: str) -> dict[str, object]:
    """A contact as ``GET /contacts`` lists it."""
    local, _, domain = c.email.partition("@")
    return {
        "cdate": c.cdate,
        "email": c.email,
        "phone": c.phone,
        "firstName": c.first_name,
        "lastName": c.last_name,
        "orgid": "0",
        "orgname": "",
        "segmentio_id": "",
        "bounced_hard": "0",
        "bounced_soft": "0",
        "ip": "0",
        "hash": hashlib.md5(c.email.encode(), usedforsecurity=False).hexdigest(),
        "email_local": local,
        "email_domain": domain,
        "sentcnt": "0",
        "gravatar": "0",
        "deleted": "0",
        "udate": c.udate,
        "scoreValues": [],
        "links": contact_links(base, c.id),
        "id": str(c.id),
        "organization": None,
    }


def page_input(
    *, list_id: str | None, status: int | None, limit: int, offset: int
) -> dict[str, object]:
    """``meta.page_input`` of ``GET /contacts`` (``segmentid`` is null, as the API sends)."""
    return {
        "segmentid": None,
        "formid": 0,
        "listid": int(list_id) if list_id else 0,
        "tagid": 0,
        "limit": limit,
        "offset": offset,
        "search": None,
        "sort": None,
        "seriesid": 0,
        "waitid": 0,
        "status": -1 if status is None else status,
        "forceQuery": 0,
        "cacheid": "",
    }


def contact_list(
    c: Contact, list_id: str, status: int, base: str, *, status_as_int: bool = False
) -> dict[str, object]:
    """A list membership (``contactLists``). The status is a string everywhere except in the
    answer to ``POST /contactLists``, where ActiveCampaign sends an integer."""
    url = f"{base}/api/3/contactLists/{_membership_id(c.id, list_id)}"
    return {
        "contact": str(c.id),
        "list": list_id,
        "form": None,
        "seriesid": "0",
        "sdate": c.cdate,
        "udate": c.udate,
        "status": status if status_as_int else str(status),
        "responder": "1",
        "sync": "0",
        "unsubreason": "",
        "campaign": None,
        "message": None,
        "first_name": c.first_name,
        "last_name": c.last_name,
        "ip4Sub": "0",
        "sourceid": "0",
        "autosyncLog": None,
        "ip4_last": "0",
        "ip4Unsub": "0",
        "unsubscribeAutomation": None,
        "links": {
            "automation": f"{url}/automation",
            "list": f"{url}/list",
            "contact": f"{url}/contact",
            "form": f"{url}/form",
            "autosyncLog": f"{url}/autosyncLog",
            "campaign": f"{url}/campaign",
            "unsubscribeAutomation": f"{url}/unsubscribeAutomation",
            "message": f"{url}/message",
        },
        "id": _membership_id(c.id, list_id),
        "automation": None,
    }


def field_values(c: Contact, base: str) -> list[dict[str, object]]:
    """The contact's custom field values (``fieldValues``)."""
    out: list[dict[str, object]] = []
    for field_id, value in c.field_map().items():
        fv_id = _field_value_id(c.id, field_id)
        out.append(
            {
                "contact": str(c.id),
                "field": field_id,
                "value": value,
                "cdate": c.cdate,
                "udate": c.udate,
                "created_by": None,
                "updated_by": None,
                "links": {
                    "owner": f"{base}/api/3/fieldValues/{fv_id}/owner",
                    "field": f"{base}/api/3/fieldValues/{fv_id}/field",
                },
                "id": fv_id,
                "owner": str(c.id),
            }
        )
    return out


def contact_detail(c: Contact, account: Account, base: str) -> dict[str, object]:
    """``GET /contacts/{id}``: the contact with its memberships, field values and tags."""
    memberships = [
        contact_list(c, list_id, status, base) for list_id, status in account.statuses(c).items()
    ]
    values = field_values(c, base)
    record = contact(c, base)
    record["contactLists"] = [str(m["id"]) for m in memberships]
    record["fieldValues"] = [str(v["id"]) for v in values]
    record["contactAutomations"] = []
    record["geoIps"] = []
    record["deals"] = []
    record["accountContacts"] = []
    return {
        "contactAutomations": [],
        "contactLists": memberships,
        "deals": [],
        "fieldValues": values,
        "geoAddresses": [],
        "geoIps": [],
        "contactTags": [{"contact": str(c.id), "tag": name} for name in c.tags],
        "contact": record,
    }


def synced_contact(c: Contact, base: str) -> dict[str, object]:
    """The answer to ``POST /contact/sync``."""
    values = field_values(c, base)
    return {
        "fieldValues": values,
        "contact": {
            "email": c.email,
            "phone": c.phone,
            "firstName": c.first_name,
            "lastName": c.last_name,
            "email_empty": False,
            "cdate": c.cdate,
            "udate": c.udate,
            "orgid": "0",
            "orgname": "",
            "links": contact_links(base, c.id),
            "hash": hashlib.md5(c.email.encode(), usedforsecurity=False).hexdigest(),
            "fieldValues": [str(v["id"]) for v in values],
            "id": str(c.id),
            "organization": "",
        },
    }


def mailing_list(list_id: str, name: str, cdate: str, base: str) -> dict[str, object]:
    """A list (``GET /lists``)."""
    url = f"{base}/api/3/lists/{list_id}"
    return {
        "stringid": "-".join(name.lower().split()) or list_id,
        "userid": "1",
        "name": name,
        "cdate": cdate,
        "private": "0",
        "require_name": "0",
        "get_unsubscribe_reason": "0",
        "optinoptout": "1",
        "sender_name": "",
        "sender_url": "",
        "sender_reminder": "",
        "deletestamp": None,
        "udate": None,
        "links": {
            "contactGoalLists": f"{url}/contactGoalLists",
            "user": f"{url}/user",
            "addressLists": f"{url}/addressLists",
        },
        "id": list_id,
        "user": "1",
    }


def custom_field(f: Field, order: int, cdate: str, base: str) -> dict[str, object]:
    """A custom field (``GET /fields``)."""
    url = f"{base}/api/3/fields/{f.id}"
    return {
        "title": f.title,
        "descript": None,
        "type": f.type,
        "isrequired": "0",
        "perstag": f.perstag or "",
        "defval": None,
        "show_in_list": "0",
        "rows": "0",
        "cols": "0",
        "visible": "1",
        "service": "",
        "ordernum": str(order),
        "cdate": cdate,
        "udate": cdate,
        "options": [],
        "relations": [],
        "links": {"options": f"{url}/options", "relations": f"{url}/relations"},
        "id": f.id,
    }


def tag(t: Tag, base: str) -> dict[str, object]:
    """A tag (``GET /tags``)."""
    url = f"{base}/api/3/tags/{t.id}"
    return {
        "tagType": "contact",
        "tag": t.name,
        "description": "",
        "cdate": t.cdate,
        "subscriber_count": "0",
        "links": {"contactGoalTags": f"{url}/contactGoalTags"},
        "id": t.id,
    }


def user(base: str) -> dict[str, object]:
    """``GET /users/me``: the key's user."""
    url = f"{base}/api/3/users/1"
    return {
        "user": {
            "username": "sandbox",
            "firstName": "Sandbox",
            "lastName": "User",
            "email": "sandbox@example.com",
            "phone": "",
            "signature": None,
            "links": {
                name: f"{url}/{name}"
                for name in ("lists", "userGroup", "dealGroupTotals", "dealGroupUsers", "configs")
            },
            "id": "1",
        }
    }
