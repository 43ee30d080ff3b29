"""BulkSender: the one seam that sends a batch and confirms what became of it."""

from __future__ import annotations

import json

import pytest

from exporter.activecampaign import BulkSender, PollPolicy, SentBatch
from exporter.errors import AuthenticationError, FatalApiError, RetriableApiError
from exporter.planning.contacts import Batch, PreparedContact, dumps, fingerprint

from .fakes import Sent, reply

POLL = PollPolicy(initial_interval=1.0, multiplier=2.0, max_interval=4.0, deadline=20.0)
THROTTLE = {"success": 0, "message": "Rate limit exceeded.", "failureReasons": ["later"]}


def contact(n: int, email: str | None = None) -> PreparedContact:
    email = email or f"person{n}@example.com"
    payload = dumps({"email": email, "subscribe": [{"listid": "1"}]})
    return PreparedContact(
        row=n,
        source="s.csv",
        key=email.casefold(),
        payload=payload,
        fingerprint=fingerprint(payload),
    )


def batch(size: int, index: int = 0) -> Batch:
    return Batch(index=index, contacts=[contact(index * 1000 + n) for n in range(1, size + 1)])


def queued(batch_id: str, n: int = 1):  # type: ignore[no-untyped-def]
    return reply(200, {"success": 1, "queued_contacts": n, "batchId": batch_id})


def info(status: object, failure: list[str] | None = None):  # type: ignore[no-untyped-def]
    return reply(200, {"status": status, "success": [], "failure": failure or []})


def emails_in(req: Sent) -> list[str]:
    return [c["email"] for c in json.loads(req.body or b"")["contacts"]]


def rejecting(*positions: int, reason: str = "Field 'email' incorrect format"):  # type: ignore[no-untyped-def]
    body = {
        "success": 0,
        "message": "JSON payload did not pass validation.",
        "failureReasons": [{"contact": p, "failureReason": reason} for p in positions],
    }
    return reply(400, body)


@pytest.fixture
def sender_for(make_client):  # type: ignore[no-untyped-def]
    def make(script, max_resubmits: int = 1, exclude_automations: bool = True):  # type: ignore[no-untyped-def]
        client, transport = make_client(script)
        sender = BulkSender(
            client,
            exclude_automations=exclude_automations,
            max_resubmits=max_resubmits,
            poll=POLL,
        )
        return sender, transport

    return make


# --- send -----------------------------------------------------------------------------------


def test_send_posts_the_batch_once(sender_for) -> None:
    sender, transport = sender_for([queued("B1", 3)])
    b = batch(3, index=4)
    sent = sender.send(b)
    assert sent == SentBatch(4, "B1", b.contacts, [])
    body = json.loads(transport.sent[0].body or b"")
    assert body["exclude_automations"] is True
    assert emails_in(transport.sent[0]) == [json.loads(c.payload)["email"] for c in b.contacts]


def test_validation_rejects_only_the_named_contacts_and_resends_the_rest(sender_for) -> None:
    sender, transport = sender_for([rejecting(2, 4), queued("B1", 3)])
    b = batch(5)
    sent = sender.send(b)
    assert sent.batch_id == "B1"
    assert sent.sent == [b.contacts[0], b.contacts[2], b.contacts[4]]
    assert sent.rejected == [
        (b.contacts[1], "Field 'email' incorrect format"),
        (b.contacts[3], "Field 'email' incorrect format"),
    ]
    assert emails_in(transport.sent[1]) == [json.loads(c.payload)["email"] for c in sent.sent]


def test_rejections_over_several_rounds(sender_for) -> None:
    # The second round's position refers to the resent list, not the original batch.
    sender, _ = sender_for([rejecting(1, reason="a"), rejecting(2, reason="b"), queued("B1")])
    b = batch(4)
    sent = sender.send(b)
    assert [c for c, _ in sent.rejected] == [b.contacts[0], b.contacts[2]]
    assert [r for _, r in sent.rejected] == ["a", "b"]
    assert sent.sent == [b.contacts[1], b.contacts[3]]


def test_a_batch_whose_every_contact_is_rejected_sends_nothing_more(sender_for) -> None:
    sender, transport = sender_for([rejecting(1, 2)])
    sent = sender.send(batch(2))
    assert sent.batch_id is None and sent.sent == [] and len(sent.rejected) == 2
    confirmed = sender.confirm(sent)
    assert confirmed.status == "empty" and confirmed.confirmed == [] and confirmed.failed == []
    assert len(confirmed.rejected) == 2 and len(transport.sent) == 1


def test_a_rejection_beyond_the_batch_is_fatal(sender_for) -> None:
    sender, _ = sender_for([rejecting(9)])
    with pytest.raises(FatalApiError):
        sender.send(batch(2))


def test_the_bulk_throttle_is_waited_out(sender_for, clock) -> None:
    sender, transport = sender_for([reply(400, THROTTLE), queued("B1", 2)])
    assert sender.send(batch(2)).batch_id == "B1"
    assert len(transport.sent) == 2 and clock.sleeps == [60.0]


def test_a_one_contact_batch_draws_on_the_single_contact_budget(sender_for) -> None:
    sender, transport = sender_for([queued(f"B{i}") for i in range(21)])
    for i in range(21):
        sender.send(batch(1, index=i))
    at = [r.at for r in transport.sent]
    assert at[19] - at[0] < 5.0  # twenty go at the per-second pace...
    assert at[20] - at[0] >= 60.0  # ...the 21st waits for the minute


# --- confirm --------------------------------------------------------------------------------


def test_confirm_waits_through_false_and_pending_states(sender_for, clock) -> None:
    sender, transport = sender_for(
        [
            queued("B1", 3),
            info(False),
            info("waiting"),
            info("active"),
            info("completed", ["PERSON2@example.com"]),
        ]
    )
    b = batch(3)
    result = sender.confirm(sender.send(b))
    assert result.status == "completed" and result.batch_id == "B1"
    assert result.confirmed == [b.contacts[0], b.contacts[2]]
    assert [c for c, _ in result.failed] == [b.contacts[1]]
    assert all(r.params == {"batchId": "B1"} for r in transport.sent[1:])
    assert clock.sleeps == [1.0, 2.0, 4.0, 4.0]  # grows, capped


def test_failure_entries_for_other_people_are_ignored(sender_for) -> None:
    sender, _ = sender_for([queued("B1", 2), info("completed", ["stranger@example.com"])])
    result = sender.confirm(sender.send(batch(2)))
    assert len(result.confirmed) == 2 and result.failed == []


@pytest.mark.parametrize("final", ["failed", "interrupted"])
def test_a_failed_import_is_resubmitted_once(sender_for, final: str) -> None:
    sender, transport = sender_for(
        [queued("B1", 2), info(final), queued("B2", 2), info("completed")]
    )
    b = batch(2)
    result = sender.confirm(sender.send(b))
    assert result.status == "completed" and result.batch_id == "B2" and result.resubmits == 1
    assert result.confirmed == b.contacts
    assert transport.sent[0].body == transport.sent[2].body  # the very same request again


@pytest.mark.parametrize("final", ["failed", "interrupted"])
def test_an_import_that_keeps_failing_fails_its_contacts(sender_for, final: str) -> None:
    sender, _ = sender_for([queued("B1", 2), info(final), queued("B2", 2), info(final)])
    b = batch(2)
    result = sender.confirm(sender.send(b))
    assert result.status == final and result.confirmed == []
    assert [c for c, _ in result.failed] == b.contacts
    assert all(final in reason and "1 resubmission" in reason for _, reason in result.failed)


def test_no_resubmission_when_disabled(sender_for) -> None:
    sender, transport = sender_for([queued("B1", 2), info("failed")], max_resubmits=0)
    result = sender.confirm(sender.send(batch(2)))
    assert result.status == "failed" and len(result.failed) == 2 and len(transport.sent) == 2


def test_an_import_that_never_finishes_fails_at_the_deadline(sender_for, clock) -> None:
    sender, transport = sender_for([queued("B1", 2)] + [info("active")] * 50)
    start = clock()
    result = sender.confirm(sender.send(batch(2)))
    assert result.status == "timeout" and len(result.failed) == 2
    assert "20s" in result.failed[0][1] and "active" in result.failed[0][1]
    assert 20.0 <= clock() - start <= 25.0
    assert len(transport.sent) - 1 == 7  # polls at 1, 3, 7, 11, 15, 19, 23 s


def test_an_auth_failure_while_polling_stops_everything(sender_for) -> None:
    sender, _ = sender_for([queued("B1", 2), reply(403, {"message": "Forbidden"})])
    with pytest.raises(AuthenticationError):
        sender.confirm(sender.send(batch(2)))


def test_confirm_many_polls_outstanding_batches_round_robin(sender_for) -> None:
    script = [queued("A", 2), queued("B", 2), queued("C", 2)]
    statuses = {
        "A": ["active", "active", "completed"],
        "B": ["completed"],
        "C": ["active", "completed"],
    }

    def poll(req: Sent):  # type: ignore[no-untyped-def]
        return info(statuses[req.params["batchId"]].pop(0))

    sender, transport = sender_for(script + [poll] * 6)
    sent = [sender.send(batch(2, index=i)) for i in range(3)]
    results = list(sender.confirm_many(sent))
    assert [r.batch_id for r in results] == ["B", "C", "A"]
    assert all(r.status == "completed" and len(r.confirmed) == 2 for r in results)
    polled = [r.params["batchId"] for r in transport.sent[3:]]
    assert polled == ["A", "B", "C", "A", "C", "A"]


def test_confirm_many_yields_empty_batches_at_once(sender_for) -> None:
    sender, _ = sender_for([])
    results = list(sender.confirm_many([SentBatch(3, None, [], [])]))
    assert [(r.batch_index, r.status) for r in results] == [(3, "empty")]


def test_the_bulk_throttle_pause_follows_the_time_scale(make_client, clock) -> None:
    from exporter.activecampaign import RateLimiter

    limiter = RateLimiter(time_scale=60.0, clock=clock, sleep=clock.sleep)
    client, _ = make_client([reply(400, THROTTLE), queued("B1", 2)], limiter=limiter)
    BulkSender(client, exclude_automations=False).send(batch(2))
    assert clock.sleeps == [1.0]


# --- a request that exhausts its retries ----------------------------------------------------

UNAVAILABLE_503 = reply(503, b"<html>Service Unavailable</html>")


def test_a_batch_that_cannot_be_queued_comes_back_unavailable(sender_for) -> None:
    """Three 503s exhaust TEST_RETRY: the batch is not queued, its contacts fail (to be sent
    next run) and the run goes on."""
    sender, transport = sender_for([UNAVAILABLE_503] * 3)
    b = batch(2)
    sent = sender.send(b)
    assert sent.batch_id is None and sent.unavailable and "503" in sent.unavailable
    assert sent.sent == b.contacts and sent.rejected == []
    result = sender.confirm(sent)
    assert result.status == "unavailable" and result.confirmed == []
    assert [c for c, _ in result.failed] == b.contacts
    assert all(reason.startswith("not queued:") for _, reason in result.failed)
    assert len(transport.sent) == 3  # nothing polled: there is no import


def test_rejections_before_the_outage_are_kept(sender_for) -> None:
    sender, _ = sender_for([rejecting(1)] + [UNAVAILABLE_503] * 3)
    b = batch(3)
    sent = sender.send(b)
    assert sent.unavailable is not None
    assert [c for c, _ in sent.rejected] == b.contacts[:1]
    assert sent.sent == b.contacts[1:]


def test_outage_after_requests_in_a_row_that_exhaust_their_retries(sender_for) -> None:
    sender, _ = sender_for([UNAVAILABLE_503] * 9)
    assert sender.send(batch(1, index=0)).unavailable
    assert sender.send(batch(1, index=1)).unavailable
    with pytest.raises(RetriableApiError, match="503"):
        sender.send(batch(1, index=2))


def test_an_answered_request_resets_the_outage_count(sender_for) -> None:
    script = [UNAVAILABLE_503] * 6 + [queued("B1", 1)] + [UNAVAILABLE_503] * 6
    sender, _ = sender_for(script)
    outcomes = [sender.send(batch(1, index=i)) for i in range(5)]
    assert [s.batch_id for s in outcomes] == [None, None, "B1", None, None]


def test_the_outage_threshold_is_configurable(make_client) -> None:
    client, _ = make_client([UNAVAILABLE_503] * 3)
    sender = BulkSender(client, exclude_automations=True, outage_after=1)
    with pytest.raises(RetriableApiError):
        sender.send(batch(1))
    with pytest.raises(ValueError, match="outage_after"):
        BulkSender(client, exclude_automations=True, outage_after=0)


def test_a_poll_that_exhausts_its_retries_is_repeated_at_the_next_turn(sender_for) -> None:
    sender, transport = sender_for([queued("B1", 2)] + [UNAVAILABLE_503] * 3 + [info("completed")])
    result = sender.confirm(sender.send(batch(2)))
    assert result.status == "completed" and len(result.confirmed) == 2
    assert len(transport.sent) == 5


def test_polls_that_exhaust_their_retries_in_a_row_are_an_outage(sender_for) -> None:
    sender, _ = sender_for([queued("B1", 2)] + [UNAVAILABLE_503] * 9)
    sent = sender.send(batch(2))
    with pytest.raises(RetriableApiError, match="503"):
        sender.confirm(sent)


def test_polls_that_never_answer_still_end_at_the_deadline(make_client, clock) -> None:
    client, _ = make_client([queued("B1", 2)] + [UNAVAILABLE_503] * 60)
    sender = BulkSender(client, exclude_automations=True, poll=POLL, outage_after=100)
    result = sender.confirm(sender.send(batch(2)))
    assert result.status == "timeout" and len(result.failed) == 2
    assert "not started" in result.failed[0][1]


def test_a_resubmission_that_cannot_be_queued_fails_the_batch(sender_for) -> None:
    sender, _ = sender_for([queued("B1", 2), info("failed")] + [UNAVAILABLE_503] * 3)
    b = batch(2)
    result = sender.confirm(sender.send(b))
    assert result.status == "unavailable" and result.resubmits == 1
    assert [c for c, _ in result.failed] == b.contacts
    assert all(reason.startswith("not resubmitted:") for _, reason in result.failed)


def test_a_validation_answer_is_an_answer_not_an_outage(sender_for) -> None:
    """Two batches unavailable, then a third whose first answer names a bad contact before
    ActiveCampaign stops answering: only one unanswered request in a row, no outage."""
    script = [UNAVAILABLE_503] * 6 + [rejecting(1)] + [UNAVAILABLE_503] * 3
    sender, _ = sender_for(script)
    assert sender.send(batch(2, index=0)).unavailable
    assert sender.send(batch(2, index=1)).unavailable
    third = sender.send(batch(2, index=2))
    assert third.unavailable and len(third.rejected) == 1 and len(third.sent) == 1
