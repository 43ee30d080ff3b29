"""A server's wait shared by an account's workers through the store: raised by the worker told,
read by every other before its next request — also in another run, on another instance."""

from __future__ import annotations

from pathlib import Path

from exporter.activecampaign import RateLimiter, RequestKind
from exporter.storage.block_note import StoreBlockNote, note_path
from exporter.storage.store import LocalStore, Store
from tests.activecampaign.fakes import FakeClock

HOST = "acme.api-us1.com"


def check_note(store: Store) -> None:
    note = StoreBlockNote(store, HOST)
    assert note.until() == 0.0
    note.hold_until(1_000.0)
    note.hold_until(900.0)  # a shorter wait never replaces a longer one
    assert StoreBlockNote(store, HOST).until() == 1_000.0
    note.hold_until(1_500.0)
    assert note.until() == 1_500.0


def test_the_note_keeps_the_longest_wait(tmp_path: Path) -> None:
    check_note(LocalStore(tmp_path))


def test_a_damaged_note_is_no_wait(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.write_bytes(note_path(HOST), b"{not json")
    assert StoreBlockNote(store, HOST).until() == 0.0


def test_a_wait_told_to_one_worker_holds_back_another(tmp_path: Path) -> None:
    """Two paced workers of different runs (their own limiters, one note): the first is told
    to wait 30 s; the second's next request starts no earlier."""
    store = LocalStore(tmp_path)
    clock = FakeClock(1_000_000.0)

    def worker() -> RateLimiter:
        return RateLimiter(
            share=0.3,
            rate_share=0.2,
            paced=True,
            clock=clock,
            sleep=clock.sleep,
            block_note=StoreBlockNote(store, HOST),
        )

    told, other = worker(), worker()
    told.acquire(RequestKind.BULK_MULTI)
    told.block_until(clock() + 30.0)
    resumed_at = clock() + 30.0
    other.acquire(RequestKind.OTHER)
    assert clock() >= resumed_at
