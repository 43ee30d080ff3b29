"""Moving an export's state: what a run confirmed, collected as it goes (:class:`StateUpdate`),
and the next state built from it (:func:`apply`), in bounded memory."""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from exporter.incremental.codec import StateWriter
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
    hash_words,
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
        """:func:`hash64` of every key, a chunk at a time, straight from the blob: each chunk's
        keys are laid out as zero-padded rows of 64-bit words by numpy (no ``bytes`` object per
        key: at ten million keys that was half a minute of finalize)."""
        lengths = np.frombuffer(self.lengths, np.uint32)
        out = np.empty(len(lengths), np.uint64)
        blob = np.frombuffer(self.blob, np.uint8)
        start = 0
        for lo in range(0, len(lengths), _HASH_CHUNK):
            n = lengths[lo : lo + _HASH_CHUNK].astype(np.int64)
            total = int(n.sum())
            width = max(8, -(-int(n.max()) // 8) * 8)
            rows = np.zeros((len(n), width), np.uint8)
            within = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(n) - n, n)
            rows[np.repeat(np.arange(len(n)), n), within] = blob[start : start + total]
            words: U64 = rows.view("<u8")
            out[lo : lo + len(n)] = hash_words(words)
            start += total
        del blob
        return out


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
_RUN_COPY_RATIO = 16
"""Keys are copied run by run when runs are on average longer than this many keys (below it,
one Python step per run costs more than the per-byte gather)."""


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
    (finalize) should pass ``consume``. :func:`encode_next` goes further: it never builds the
    next state at all.
    """
    merge = _Merge.plan(state, update, consume=consume)
    if isinstance(merge, ExportState):
        return merge
    columns: list[Any] = [column for _name, column in merge.columns()]
    hashes, fingerprints, profiles, flags = columns
    del columns
    lengths = merge.key_lengths()
    offsets = np.zeros(merge.total + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    emails = bytearray(int(offsets[-1]))
    out, pos = np.frombuffer(emails, np.uint8), 0
    for piece in merge.key_pieces(lengths):
        out[pos : pos + len(piece)] = np.frombuffer(piece, np.uint8)
        pos += len(piece)
    del out
    return ExportState(
        hashes=hashes,
        fingerprints=fingerprints,
        profiles=profiles,
        flags=flags,
        offsets=offsets,
        emails=emails,
        snapshot_count=merge.snapshot_count,
    )


def encode_next(state: ExportState, update: StateUpdate) -> tuple[bytearray, int]:
    """:func:`apply` then :meth:`ExportState.encode`, without ever holding the next state:
    each merged column is encoded as soon as it is built and then freed, and the keys are
    merged and compressed a chunk at a time. Both inputs are spent (``consume``). Returns the
    encoded state and its number of contacts.

    This is what finalize uses: at ten million contacts the next state (~640 MB in memory)
    never exists, only the old one being released column by column, the update, and the
    encoded bytes being written (~250 MB)."""
    merge = _Merge.plan(state, update, consume=True)
    if isinstance(merge, ExportState):
        return merge.encode(), len(merge)
    writer = StateWriter(merge.total, merge.snapshot_count)
    for name, column in merge.columns():
        writer.column(name, column)
        del column
    lengths = merge.key_lengths()
    writer.key_lengths(lengths)
    writer.keys(merge.key_pieces(lengths))
    return writer.finish(), merge.total


def _snapshot_count(state: ExportState, update: StateUpdate) -> int:
    return state.snapshot_count if update.snapshot_count is None else update.snapshot_count


@dataclass
class _Merge:
    """How ``state`` and ``update`` merge: which old entries are kept, which confirmations
    land and where; the merged columns are then built one at a time (:meth:`columns`, then
    :meth:`key_lengths` and :meth:`key_pieces`)."""

    state: ExportState
    update: StateUpdate
    spent: list[ExportState]
    kept: I64
    """Old entries carried over, ascending (their merged order)."""
    pick: I64
    """The confirmations that land (the last one of each key), ascending by key hash."""
    up_hashes: U64
    up_dest: I64
    """Where each picked confirmation lands in the merged order."""
    old_dest: npt.NDArray[np.bool_]
    """True where a kept old entry lands."""
    total: int
    snapshot_count: int
    consume: bool

    @classmethod
    def plan(
        cls, state: ExportState, update: StateUpdate, *, consume: bool
    ) -> _Merge | ExportState:
        """The merge, or the next state itself when no entry comes or goes (at most stale
        flags and the snapshot count moved)."""
        spent = [state]
        n = len(state)
        keep = np.ones(n, bool)
        removed = update._removed
        for h, key in zip(removed.hashes().tolist(), removed, strict=True):
            i = state._index_of(h, key)
            if i is not None:
                keep[i] = False
        if len(update._stale):
            flags = state.flags.copy()
            for h, key in zip(update._stale.hashes().tolist(), update._stale, strict=True):
                i = state._index_of(h, key)
                if i is not None:
                    flags[i] |= STALE
            state = replace(state, flags=flags)
            spent.append(state)
        sent = update._sent
        if not len(sent) and bool(keep.all()):
            return replace(state, snapshot_count=_snapshot_count(state, update))
        sent_hashes = sent.hashes()
        pick = _last_confirmations(sent_hashes)  # ascending by hash
        up_hashes = sent_hashes[pick]
        del sent_hashes
        if n:
            at = np.minimum(np.searchsorted(state.hashes, up_hashes), n - 1)
            keep[at[state.hashes[at] == up_hashes]] = False  # replaced by the confirmed send
        kept = np.flatnonzero(keep)
        del keep
        # Where each confirmed send lands in the merged order; the kept entries fill the rest.
        up_dest = np.searchsorted(state.hashes[kept], up_hashes) + np.arange(len(up_hashes))
        total = len(kept) + len(up_hashes)
        old_dest = np.ones(total, bool)
        old_dest[up_dest] = False
        return cls(
            state,
            update,
            spent,
            kept,
            pick,
            up_hashes,
            up_dest,
            old_dest,
            total,
            _snapshot_count(state, update),
            consume,
        )

    def _merged(self, old: npt.NDArray[np.generic], new: npt.NDArray[np.generic]) -> Any:
        out = np.empty(self.total, old.dtype)
        out[self.old_dest] = old
        out[self.up_dest] = new
        return out

    def _spend(self, column: str) -> None:
        if self.consume:
            for s in self.spent:
                object.__setattr__(s, column, _EMPTY[column])

    def columns(self) -> Iterator[tuple[str, npt.NDArray[np.generic]]]:
        """The merged hashes, fingerprints, profile hashes and flags, one at a time (with
        ``consume``, each source column is released once its merged column is built)."""
        state, update, pick = self.state, self.update, self.pick
        hashes = self._merged(state.hashes[self.kept], self.up_hashes)
        self.up_hashes = _EMPTY["hashes"]  # type: ignore[assignment]
        self._spend("hashes")
        yield "hashes", hashes
        del hashes
        column = self._merged(
            state.fingerprints[self.kept], np.frombuffer(update._fingerprints, np.uint64)[pick]
        )
        self._spend("fingerprints")
        yield "fingerprints", column
        del column
        column = self._merged(state.profiles[self.kept], _profile_hashes(update._profiles)[pick])
        self._spend("profiles")
        yield "profiles", column
        del column
        column = self._merged(state.flags[self.kept], np.frombuffer(update._flags, np.uint8)[pick])
        self._spend("flags")
        if self.consume:
            update._release_columns()
        yield "flags", column

    def key_lengths(self) -> I64:
        """Every merged key's length in bytes, in merged order."""
        old = np.diff(self.state.offsets)[self.kept]
        new = np.diff(self.update._sent.offsets())[self.pick]
        merged: I64 = self._merged(old, new)
        return merged

    def key_pieces(self, lengths: I64) -> Iterator[memoryview]:
        """The merged keys, concatenated, a chunk of entries at a time (with ``consume``, the
        old keys and the update's are released at the end)."""
        old_buffer = np.frombuffer(self.state.emails, np.uint8)
        old_starts = self.state.offsets
        new_buffer = np.frombuffer(self.update._sent.blob, np.uint8)
        new_starts = self.update._sent.offsets()
        o = u = 0
        for lo in range(0, self.total, _GATHER_CHUNK):
            hi = min(lo + _GATHER_CHUNK, self.total)
            is_old = self.old_dest[lo:hi]
            local = np.zeros(hi - lo + 1, np.int64)
            np.cumsum(lengths[lo:hi], out=local[1:])
            piece = np.empty(int(local[-1]), np.uint8)
            at_old = np.flatnonzero(is_old)
            at_new = np.flatnonzero(~is_old)
            src_old = self.kept[o : o + len(at_old)]
            src_new = self.pick[u : u + len(at_new)]
            o, u = o + len(at_old), u + len(at_new)
            _scatter_keys(
                piece, local, at_old, old_buffer, old_starts[src_old], lengths[lo:hi][at_old]
            )
            _scatter_keys(
                piece, local, at_new, new_buffer, new_starts[src_new], lengths[lo:hi][at_new]
            )
            yield piece.data
        del old_buffer, new_buffer
        self._spend("offsets")
        self._spend("emails")
        if self.consume:
            self.update._release_keys()


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
    ``offsets[dest[k]]``, a chunk of keys at a time.

    Keys that follow each other in ``buffer`` and land next to each other in ``out`` are
    copied as one slice: a refresh keeps almost every old key in place, so its keys come in
    long runs, and a run costs one copy instead of an index per byte."""
    if not len(starts):
        return
    at = offsets[dest]
    ends = starts + lengths
    breaks = np.flatnonzero((starts[1:] != ends[:-1]) | (at[1:] != at[:-1] + lengths[:-1])) + 1
    if len(breaks) * _RUN_COPY_RATIO < len(starts):
        firsts = np.concatenate(([0], breaks)).tolist()
        lasts = np.concatenate((breaks - 1, [len(starts) - 1])).tolist()
        for a, b in zip(firsts, lasts, strict=True):
            first, put, end = int(starts[a]), int(at[a]), int(ends[b])
            out[put : put + end - first] = buffer[first:end]
        return
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
