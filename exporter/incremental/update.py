"""Moving an export's state: what a run confirmed, collected as it goes (:class:`StateUpdate`),
and the next state built from it (:func:`apply`), in bounded memory."""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import numpy.typing as npt

from exporter.incremental.state import (
    _HASH_CHUNK,
    HAS_PROFILE,
    I64,
    STALE,
    SUBSCRIBED_BY_US,
    U8,
    U64,
    ExportState,
    _frozen,
    _hash_chunk,
)
from exporter.planning.contacts import PreparedContact


class KeyList:
    """Byte strings appended one by one, stored compactly (a million keys must not cost 70 MB
    of ``str`` objects)."""

    def __init__(self) -> None:
        self.blob = bytearray()
        self.lengths = array("I")

    def add(self, key: bytes) -> None:
        self.blob += key
        self.lengths.append(len(key))

    def __len__(self) -> int:
        return len(self.lengths)

    def offsets(self) -> I64:
        offsets = np.zeros(len(self.lengths) + 1, np.int64)
        np.cumsum(np.frombuffer(self.lengths, np.uint32), out=offsets[1:])
        return offsets

    def __iter__(self) -> Iterator[bytes]:
        # Slices of a view: copying the whole blob first would double its memory.
        blob, pos = memoryview(self.blob), 0
        for n in self.lengths:
            yield bytes(blob[pos : pos + n])
            pos += n

    def hashes(self) -> U64:
        """:func:`hash64` of every key, a chunk at a time (bounded memory)."""
        parts, chunk = [np.zeros(0, np.uint64)], []
        for key in self:
            chunk.append(key)
            if len(chunk) == _HASH_CHUNK:
                parts.append(_hash_chunk(chunk))
                chunk = []
        parts.append(_hash_chunk(chunk))
        return np.concatenate(parts)


class StateUpdate:
    """What a run confirmed, collected as it goes; :func:`apply` turns it into the next state.

    Record only what ActiveCampaign confirmed. Anything not recorded keeps its old entry (a
    failed *changed* contact keeps its old fingerprint and is "changed" again next run; a failed
    *new* one stays absent; a leaver whose unsubscription failed stays, and leaves again).
    """

    def __init__(self, *, snapshot_count: int | None = None) -> None:
        self.snapshot_count = snapshot_count
        """Contacts in this run's snapshot; ``None`` keeps the state's previous count."""
        self._sent = KeyList()
        self._fingerprints = array("Q")
        self._flags = array("B")
        self._profiles = KeyList()
        self._removed = KeyList()
        self.confirmed = 0
        """Sends recorded by :meth:`confirm_sent`."""
        self.left = 0
        """Leavers whose unsubscription was confirmed."""
        self.dropped = 0
        """Leavers removed without unsubscribing (policy ``keep`` or not subscribed by us)."""
        self._stale = KeyList()
        self.uncertain = 0
        """Sends and unsubscriptions recorded with an unknown outcome."""

    def confirm_sent(self, contact: PreparedContact, *, subscribed: bool = True) -> None:
        """ActiveCampaign confirmed this contact: remember its fingerprint (and profile id).

        ``subscribed``: the payload subscribed it to the list (so this export may unsubscribe
        it when it leaves).
        """
        self._record(contact, SUBSCRIBED_BY_US if subscribed else 0)
        self.confirmed += 1

    def _record(self, contact: PreparedContact, flags: int) -> None:
        self._sent.add(contact.key.encode())
        self._fingerprints.append(contact.fingerprint)
        if contact.profile_id:
            flags |= HAS_PROFILE
            self._profiles.add(contact.profile_id.encode())
        else:
            self._profiles.add(b"")
        self._flags.append(flags)

    def confirm_left(self, key: str) -> None:
        """ActiveCampaign confirmed the leaver's unsubscription: forget the contact."""
        self._removed.add(key.encode())
        self.left += 1

    def drop(self, key: str) -> None:
        """Forget a leaver without unsubscribing it (nothing to confirm)."""
        self._removed.add(key.encode())
        self.dropped += 1

    def mark_uncertain(self, contact: PreparedContact) -> None:
        """The send's outcome is unknown (it may or may not have been applied, e.g. a batch
        whose status could not be read): remember the contact as possibly subscribed by us,
        and make the next run send it again whatever its fingerprint."""
        self._record(contact, SUBSCRIBED_BY_US | STALE)
        self.uncertain += 1

    def _release_columns(self) -> None:
        """Free the per-contact columns (:func:`apply` with ``consume``)."""
        self._fingerprints = array("Q")
        self._flags = array("B")
        self._profiles = KeyList()

    def _release_keys(self) -> None:
        """Free the confirmed keys (:func:`apply` with ``consume``)."""
        self._sent = KeyList()

    def mark_uncertain_left(self, key: str) -> None:
        """A leaver's unsubscription has an unknown outcome: keep it in state (it is retried
        while it stays away), and send it again should it come back."""
        self._stale.add(key.encode())
        self.uncertain += 1


_GATHER_CHUNK = 1 << 16


def _last_confirmations(hashes: U64) -> I64:
    """Positions of the last occurrence of every distinct hash, in ascending hash order
    (last confirmation wins). One stable argsort: ``np.unique`` would sort a copy again."""
    order = np.argsort(hashes, kind="stable")
    ordered = hashes[order]
    last = np.ones(len(order), bool)
    last[:-1] = ordered[1:] != ordered[:-1]
    return order[last]


def apply(state: ExportState, update: StateUpdate, *, consume: bool = False) -> ExportState:
    """The next state: ``state`` with ``update``'s removals, then its confirmed sends.

    Entries the update does not mention are carried over untouched. When a key was confirmed
    twice the last confirmation wins.

    Memory: the old and the new state plus one column's temporaries at a time (each column
    is merged on its own, by destination positions, instead of concatenating every column and
    sorting the lot). With ``consume`` both inputs are *spent*: each column of the old state
    and of the update is released as soon as its merged column is built, so a run over ten
    million contacts never holds two whole states (or a whole update and a whole state) at
    once. A spent state is empty and must not be used again; only the caller that loaded it
    (finalize) should pass ``consume``.
    """
    spent = [state]
    snapshot_count = (
        state.snapshot_count if update.snapshot_count is None else update.snapshot_count
    )
    n = len(state)
    keep = np.ones(n, bool)
    removed = update._removed
    for h, key in zip(removed.hashes().tolist(), removed, strict=True):
        i = state._index_of(h, key)
        if i is not None:
            keep[i] = False
    flags = state.flags
    if len(update._stale):
        flags = flags.copy()
        for h, key in zip(update._stale.hashes().tolist(), update._stale, strict=True):
            i = state._index_of(h, key)
            if i is not None:
                flags[i] |= STALE
        state = replace(state, flags=flags)
        spent.append(state)
    sent = update._sent
    if not len(sent) and bool(keep.all()):
        return replace(state, snapshot_count=snapshot_count)

    sent_hashes = sent.hashes()
    pick = _last_confirmations(sent_hashes)  # ascending by hash
    up_hashes = sent_hashes[pick]
    del sent_hashes
    if n:
        at = np.minimum(np.searchsorted(state.hashes, up_hashes), n - 1)
        keep[at[state.hashes[at] == up_hashes]] = False  # replaced by the confirmed send
    kept = np.flatnonzero(keep)
    del keep
    kept_hashes = state.hashes[kept]
    # Where each confirmed send lands in the merged order; the kept entries fill the rest.
    up_dest = np.searchsorted(kept_hashes, up_hashes) + np.arange(len(up_hashes))
    total = len(kept) + len(up_hashes)
    old_dest = np.ones(total, bool)
    old_dest[up_dest] = False

    def merged(old: npt.NDArray[np.generic], new: npt.NDArray[np.generic]) -> Any:
        out = np.empty(total, old.dtype)
        out[old_dest] = old
        out[up_dest] = new
        return out

    def spend(column: str) -> None:
        if consume:
            for s in spent:
                object.__setattr__(s, column, _EMPTY[column])

    hashes = merged(kept_hashes, up_hashes)
    del kept_hashes, up_hashes
    spend("hashes")
    fingerprints = merged(
        state.fingerprints[kept], np.frombuffer(update._fingerprints, np.uint64)[pick]
    )
    spend("fingerprints")
    profiles = merged(state.profiles[kept], _profile_hashes(update._profiles)[pick])
    spend("profiles")
    new_flags = merged(state.flags[kept], np.frombuffer(update._flags, np.uint8)[pick])
    spend("flags")
    if consume:
        update._release_columns()

    up_offsets = sent.offsets()
    up_starts, up_lengths = up_offsets[:-1][pick], np.diff(up_offsets)[pick]
    del up_offsets
    old_starts = state.offsets[:-1][kept]
    old_lengths = (state.offsets[1:][kept] - old_starts).astype(np.int64)
    spend("offsets")
    lengths = merged(old_lengths, up_lengths)
    offsets = np.zeros(total + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    del lengths
    emails = bytearray(int(offsets[-1]))
    # Each key is copied straight to its place in the merged order (old keys, then new ones),
    # into a buffer the new state keeps: no concatenated copy of both sources, no final copy.
    out = np.frombuffer(emails, np.uint8)
    _scatter_keys(
        out,
        offsets,
        np.flatnonzero(old_dest),
        np.frombuffer(state.emails, np.uint8),
        old_starts,
        old_lengths,
    )
    del old_starts, old_lengths
    spend("emails")
    _scatter_keys(out, offsets, up_dest, np.frombuffer(sent.blob, np.uint8), up_starts, up_lengths)
    del out
    if consume:
        update._release_keys()
    return ExportState(
        hashes=hashes,
        fingerprints=fingerprints,
        profiles=profiles,
        flags=new_flags,
        offsets=offsets,
        emails=emails,
        snapshot_count=snapshot_count,
    )


_EMPTY: dict[str, object] = {
    "hashes": _frozen(np.zeros(0, np.uint64)),
    "fingerprints": _frozen(np.zeros(0, np.uint64)),
    "profiles": _frozen(np.zeros(0, np.uint64)),
    "flags": _frozen(np.zeros(0, np.uint8)),
    "offsets": _frozen(np.zeros(1, np.int64)),
    "emails": b"",
}
"""What a spent state's columns become (:func:`apply` with ``consume``)."""


def _scatter_keys(out: U8, offsets: I64, dest: I64, buffer: U8, starts: I64, lengths: I64) -> None:
    """Copy key ``k`` (``buffer[starts[k]:starts[k]+lengths[k]]``) to ``out`` at
    ``offsets[dest[k]]``, a chunk of keys at a time."""
    for lo in range(0, len(starts), _GATHER_CHUNK):
        s, n = starts[lo : lo + _GATHER_CHUNK], lengths[lo : lo + _GATHER_CHUNK]
        total = int(n.sum())
        if not total:
            continue
        within = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(n) - n, n)
        src = np.repeat(s, n) + within
        dst = np.repeat(offsets[dest[lo : lo + _GATHER_CHUNK]], n) + within
        out[dst] = buffer[src]


def _profile_hashes(profiles: KeyList) -> U64:
    hashes = profiles.hashes()
    hashes[np.frombuffer(profiles.lengths, np.uint32) == 0] = 0
    return hashes
