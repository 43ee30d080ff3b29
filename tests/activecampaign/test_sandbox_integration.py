"""The client and the bulk sender over real HTTP against the ActiveCampaign sandbox.

Each test starts its own sandbox (in-process, loopback port) with a compressed clock
(``time_scale``) and a limiter on the same scale, then checks what the *account* ends up
holding, not just what the client believes.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from exporter.activecampaign import (
    ActiveCampaignClient,
    BulkSender,
    ConfirmedBatch,
    PollPolicy,
    RateLimiter,
    RetryPolicy,
)
from exporter.errors import ApiNotFound, AuthenticationError
from exporter.planning.contacts import Batch, PreparedContact, dumps, fingerprint
from sandbox import Faults, Field, Sandbox, SandboxConfig
from tests.openapi_contract import RecordingTransport

KEY = "sandbox-key-0123456789"
LIST = "1"
SCALE = 50.0


@pytest.fixture
def start_sandbox() -> Iterator[Callable[..., Any]]:
    started: list[Any] = []

    def start(**kw: Any) -> Any:
        kw.setdefault("lists", {LIST: "Newsletter"})
        kw.setdefault("time_scale", SCALE)
        sb = Sandbox(SandboxConfig(api_key=KEY, seed=0, port=0, **kw)).start()
        started.append(sb)
        return sb

    yield start
    for sb in started:
        sb.stop()


def make_client(
    sb: Any, *, share: float = 1.0, timeout: float = 5.0, key: str = KEY
) -> tuple[ActiveCampaignClient, RecordingTransport]:
    scale = sb.config.time_scale
    transport = RecordingTransport()
    client = ActiveCampaignClient(
        sb.base_url,
        key,
        transport=transport,
        limiter=RateLimiter(share=share, time_scale=scale),
        retry=RetryPolicy(max_attempts=10, initial_backoff=0.02, max_backoff=0.3, deadline=60),
        timeout=timeout,
    )
    return client, transport


def sender_for(client: ActiveCampaignClient, **kw: Any) -> BulkSender:
    scale = client.limiter.time_scale
    poll = PollPolicy(
        initial_interval=1.0 / scale, multiplier=1.5, max_interval=5.0 / scale, deadline=30.0
    )
    return BulkSender(client, exclude_automations=True, poll=poll, **kw)


def person(n: int, email: str | None = None) -> PreparedContact:
    email = email or f"person{n}@example.com"
    payload = dumps(
        {
            "email": email,
            "first_name": f"First{n}",
            "last_name": "Last",
            "fields": [{"id": 1, "value": "gold"}],
            "subscribe": [{"listid": LIST}],
        }
    )
    return PreparedContact(
        row=n,
        source="seg.csv",
        key=email.casefold(),
        payload=payload,
        fingerprint=fingerprint(payload),
    )


def batches(count: int, size: int) -> list[Batch]:
    return [
        Batch(index=b, contacts=[person(b * size + i) for i in range(size)]) for b in range(count)
    ]


def keys(contacts: list[PreparedContact]) -> set[str]:
    return {c.key for c in contacts}


def push(sender: BulkSender, plan: list[Batch]) -> list[ConfirmedBatch]:
    return list(sender.confirm_many([sender.send(b) for b in plan]))


TIER = Field(id="1", title="Tier", type="text", perstag="TIER")


# --- reads ----------------------------------------------------------------------------------


def test_reads_the_account(start_sandbox) -> None:
    fields = [TIER, *(Field(id=str(i), title=f"Field {i}") for i in range(2, 231))]
    sb = start_sandbox(fields=fields, tags=[f"tag{i}" for i in range(150)])
    client, _ = make_client(sb)
    assert client.verify()["id"]
    assert client.get_list(LIST)["name"] == "Newsletter"
    got = list(client.iter_fields())
    assert len(got) == 230 and got[0]["perstag"] == "TIER"
    assert len({t["tag"] for t in client.iter_tags()}) == 150
    assert sb.throttled_count() == 0


def test_unknown_list_is_not_found_with_the_servers_message(start_sandbox) -> None:
    client, _ = make_client(start_sandbox())
    with pytest.raises(ApiNotFound, match="No Result found"):
        client.get_list("99")


def test_a_wrong_key_stops_at_the_first_request(start_sandbox) -> None:
    sb = start_sandbox()
    client, transport = make_client(sb, key="wrong-key")
    with pytest.raises(AuthenticationError) as info:
        client.verify()
    assert "wrong-key" not in str(info.value)
    assert len(transport.sent) == 1


# --- bulk send and confirm ------------------------------------------------------------------


def test_sent_and_confirmed_contacts_are_exactly_the_list(start_sandbox) -> None:
    sb = start_sandbox(fields=[TIER])
    client, _ = make_client(sb)
    plan = batches(6, 40)
    results = push(sender_for(client), plan)
    confirmed = {c.key for r in results for c in r.confirmed}
    assert confirmed == {c.key for b in plan for c in b.contacts}
    assert all(r.status == "completed" and not r.failed for r in results)
    assert sb.list_members(LIST) == confirmed
    assert sb.contact("person7@example.com")["first_name"] == "First7"  # type: ignore[index]
    assert sb.automations_triggered() == 0
    assert sb.throttled_count() == 0


def test_a_validation_400_removes_just_the_bad_contact(start_sandbox) -> None:
    sb = start_sandbox(fields=[TIER])
    client, transport = make_client(sb)
    bad = person(99, "not-an-email")
    plan = [Batch(0, [person(1), person(2), bad, person(3)])]
    (result,) = push(sender_for(client), plan)
    assert [c for c, _ in result.rejected] == [bad]
    assert "email" in result.rejected[0][1]
    assert keys(result.confirmed) == {
        "person1@example.com",
        "person2@example.com",
        "person3@example.com",
    }
    assert sb.list_members(LIST) == keys(result.confirmed)
    posts = [s for s in transport.sent if s[0] == "POST"]
    assert len(posts) == 2 and b"not-an-email" not in (posts[1][2] or b"")


def test_import_failures_are_failed_and_the_rest_confirmed(start_sandbox) -> None:
    sb = start_sandbox(
        fields=[TIER],
        faults=Faults(failure_emails=frozenset({"PERSON3@example.com", "person17@example.com"})),
    )
    client, _ = make_client(sb)
    undeliverable = person(50, "someone@nodot")  # passes syntax, fails at import time
    plan = [
        Batch(0, [person(i) for i in range(10)] + [undeliverable]),
        Batch(1, [person(i) for i in range(10, 20)]),
    ]
    results = push(sender_for(client), plan)
    failed = {c.key for r in results for c, _ in r.failed}
    confirmed = {c.key for r in results for c in r.confirmed}
    assert failed == {"person3@example.com", "person17@example.com", "someone@nodot"}
    assert confirmed == {c.key for b in plan for c in b.contacts} - failed
    assert sb.list_members(LIST) == confirmed


def test_failed_batches_are_resubmitted_then_failed(start_sandbox) -> None:
    sb = start_sandbox(
        fields=[TIER], faults=Faults(batch_failed_rate=0.35, batch_interrupted_rate=0.15)
    )
    client, _ = make_client(sb)
    plan = batches(12, 10)
    results = push(sender_for(client, max_resubmits=1), plan)
    confirmed = {c.key for r in results for c in r.confirmed}
    failed = {c.key for r in results for c, _ in r.failed}
    assert confirmed | failed == {c.key for b in plan for c in b.contacts}
    assert not confirmed & failed
    assert any(r.resubmits == 1 and r.status == "completed" for r in results)
    assert any(r.status in ("failed", "interrupted") for r in results)
    assert sb.list_members(LIST) == confirmed
    assert sb.throttled_count() == 0


@pytest.mark.parametrize(
    ("faults", "kinds"),
    [
        ({"http_503_rate": 0.3}, {"http_503"}),
        ({"http_429_rate": 0.3}, {"http_429"}),
        ({"reset_rate": 0.3}, {"reset"}),
        ({"lost_response_rate": 0.3}, {"lost_response"}),
        ({"slow_rate": 0.2, "slow_seconds": 0.6}, {"slow"}),
        (
            {
                "http_503_rate": 0.1,
                "http_429_rate": 0.1,
                "reset_rate": 0.1,
                "lost_response_rate": 0.05,
                "slow_rate": 0.03,
                "slow_seconds": 0.6,
            },
            {"http_503", "http_429", "reset"},
        ),
    ],
    ids=["503", "429", "reset", "lost-response", "slow", "mixed"],
)
def test_transport_faults_are_retried_until_everything_lands(
    start_sandbox, faults: dict[str, float], kinds: set[str]
) -> None:
    sb = start_sandbox(fields=[TIER], faults=Faults(**faults))
    client, _ = make_client(sb, timeout=0.4)  # below slow_seconds: a slow answer times out
    plan = batches(15, 10)
    results = push(sender_for(client), plan)
    confirmed = {c.key for r in results for c in r.confirmed}
    assert confirmed == {c.key for b in plan for c in b.contacts}
    assert sb.list_members(LIST) == confirmed
    injected = sb.injected_fault_counts()
    assert all(injected.get(kind, 0) > 0 for kind in kinds), injected
    # The sandbox charges a slow request to the budget only after its delay, long after the
    # client timed out and moved on: each may cost one throttled answer, nothing else may.
    assert sb.throttled_count() <= injected.get("slow", 0)


@pytest.mark.serial
def test_a_clean_run_at_high_time_scale_is_never_throttled(start_sandbox) -> None:
    """Send and confirm in two threads sharing one client, as the engine does."""
    sb = start_sandbox(fields=[TIER], time_scale=100.0)
    client, _ = make_client(sb)
    sender = sender_for(client)
    plan = batches(130, 3)  # more than a (scaled) minute's bulk budget
    sent: list[Any] = []
    done = threading.Event()

    def produce() -> None:
        for b in plan:
            sent.append(sender.send(b))
        done.set()

    producer = threading.Thread(target=produce)
    producer.start()
    producer.join()
    results = list(sender.confirm_many(sent))
    assert done.is_set()
    assert sum(len(r.confirmed) for r in results) == 390
    assert sb.throttled_count() == 0
    assert sb.peak_requests_per_second() <= 5
    assert sb.bulk_requests_per_minute_peak() <= 100
    assert sb.list_members(LIST) == {c.key for b in plan for c in b.contacts}


def test_workers_with_a_share_each_stay_within_the_account(start_sandbox) -> None:
    sb = start_sandbox(fields=[TIER], time_scale=100.0)
    plans = [batches(60, 2)[0:30], batches(60, 2)[30:60]]
    results: list[list[ConfirmedBatch]] = [[], []]

    def worker(n: int) -> None:
        client, _ = make_client(sb, share=0.5)
        results[n] = push(sender_for(client), plans[n])

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(len(r.confirmed) for rs in results for r in rs) == 120
    assert sb.throttled_count() == 0


# --- single contacts and membership ---------------------------------------------------------


def test_membership_walk_sync_and_unsubscribe(start_sandbox) -> None:
    sb = start_sandbox(fields=[TIER])
    client, _ = make_client(sb)
    push(sender_for(client), batches(3, 90))
    members = list(client.iter_list_members(LIST))
    assert len(members) == 270 and len({m["id"] for m in members}) == 270
    assert {m["email"].casefold() for m in members} == sb.list_members(LIST)

    contact_id = client.contact_sync(
        "new.person@example.com", "New", "Person", "+1 555", {"1": "silver"}
    )
    found = client.find_contact("new.person@example.com")
    assert found is not None and str(found["id"]) == contact_id
    assert sb.contact("new.person@example.com")["first_name"] == "New"  # type: ignore[index]

    target = client.find_contact("person5@example.com")
    assert target is not None
    client.set_list_status(str(target["id"]), LIST, 2)
    assert "person5@example.com" not in sb.list_members(LIST)
    assert "person5@example.com" in sb.list_members(LIST, status=2)
    assert client.find_contact("nobody@example.com") is None


# --- the OpenAPI contract -------------------------------------------------------------------


def test_request_bodies_match_the_openapi_document(start_sandbox) -> None:
    from tests.openapi_contract import load_document, operation_path, validate_request

    load_document()  # skips, with the reason, when the shared reference folder is absent
    sb = start_sandbox(fields=[TIER])
    client, transport = make_client(sb)
    push(sender_for(client), batches(2, 5))
    push(sender_for(client), [Batch(9, [person(500)])])
    contact_id = client.contact_sync("sync@example.com", "S", "Y", "1", {"1": "v"})
    client.set_list_status(contact_id, LIST, 2)
    checked = set()
    for method, path, body in transport.sent:
        if body is not None:
            validate_request(path, method, json.loads(body))
            checked.add(f"{method} {operation_path(path)}")
    assert checked == {"POST /import/bulk_import", "POST /contact/sync", "POST /contactLists"}
