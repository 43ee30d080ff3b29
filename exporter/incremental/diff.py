"""Classify a snapshot against an export's state, find the leavers, and guard against shrinking.

A run streams its prepared contacts through a :class:`Differ`; each comes back as
:attr:`Change.NEW` (not in state), :attr:`Change.CHANGED` (fingerprint differs) or
:attr:`Change.UNCHANGED`. Only new and changed contacts are sent. :meth:`Differ.finish` then
yields a :class:`DiffResult`: the counts, the *leavers* (in state, not in this snapshot) split by
the export's leaver policy, and the email changes recognised by profile id.

Memory stays bounded: the differ keeps one byte per state entry ("seen") and a few counters,
never a set of a million strings. Contacts are classified in batches (key hashes, lookups and
fingerprint comparisons vectorised with numpy). A key-hash collision can never make a contact
"unchanged" (silently not sent): a hit with an equal fingerprint is the same contact, because
the fingerprint covers the payload and the payload holds the address (another address would
need a second, independent 64-bit collision); a hit with a different fingerprint has its stored
address compared, and on a mismatch the contact counts as new (``counts.collisions``).

Usage::

    differ = Differ(state, leavers=export.leaver_policy, full_resync=resync)
    for contact, change in differ.classify(prepared_contacts):
        if change is not Change.UNCHANGED:
            planner.add(contact)
    result = differ.finish()
    check_shrink(state.snapshot_count, result.snapshot_count, override=allow_shrink)
    update = result.new_update()        # the kept leavers are already dropped in it
    ...  # confirm_sent / confirm_left as ActiveCampaign confirms
    save(store, export, apply(state, update), if_match=etag)

The input must be de-duplicated by key (the prepare step does it): a repeated key is classified
again, like the first.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from enum import IntEnum
from itertools import islice
from operator import attrgetter
from typing import Literal, NamedTuple

import numpy as np
import numpy.typing as npt

from exporter.errors import ConfigError, GuardError
from exporter.incremental.state import (
    HAS_PROFILE,
    I64,
    STALE,
    SUBSCRIBED_BY_US,
    U64,
    ExportState,
    HashIndex,
    hash64,
)
from exporter.incremental.update import KeyList, StateUpdate
from exporter.planning.contacts import PreparedContact


class Change(IntEnum):
    """How a contact compares with what the export last confirmed."""

    NEW = 0
    """Not in state (never confirmed, or forgotten): send it."""
    CHANGED = 1
    """In state with another fingerprint (or a full resync): send it."""
    UNCHANGED = 2
    """In state with the same fingerprint: do not send it."""


_CHANGES = (Change.NEW, Change.CHANGED, Change.UNCHANGED)
_KEY = attrgetter("key")
_FINGERPRINT = attrgetter("fingerprint")

LeaverPolicy = Literal["unsubscribe", "keep"]
"""What happens to a contact that left the segment: ``unsubscribe`` it from the list (only if
this export subscribed it), or ``keep`` it subscribed. Either way the state forgets it once
handled."""
LEAVER_POLICIES: tuple[LeaverPolicy, ...] = ("unsubscribe", "keep")


class Leaver(NamedTuple):
    """A contact in the state but not in this snapshot."""

    email: str
    """The address to unsubscribe (the stored, lower-cased email)."""
    key: str
    """The identity to pass to :meth:`StateUpdate.confirm_left` (today the same string)."""


class EmailChange(NamedTuple):
    """A profile id whose email changed: the old address leaves, the new one is new."""

    old_email: str
    new_email: str


@dataclass(frozen=True)
class DiffCounts:
    """The diff's numbers for the run report."""

    new: int = 0
    changed: int = 0
    unchanged: int = 0
    left: int = 0
    """In state, not in this snapshot (``to_unsubscribe + kept``)."""
    to_unsubscribe: int = 0
    """Leavers to unsubscribe (policy ``unsubscribe`` and subscribed by this export)."""
    kept: int = 0
    """Leavers forgotten without unsubscribing (policy ``keep``, or not subscribed by us)."""
    email_changes: int = 0
    """Leavers recognised, by profile id, as the old address of a new contact."""
    collisions: int = 0
    """Key-hash hits whose stored address differed (treated as new; expect 0)."""

    @property
    def to_send(self) -> int:
        """Contacts to send: new + changed."""
        return self.new + self.changed

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True, eq=False)
class DiffResult:
    """The outcome of classifying one snapshot against a state."""

    counts: DiffCounts
    snapshot_count: int
    """Contacts classified: the count the next run's shrink guard compares with."""
    full_resync: bool
    leaver_policy: LeaverPolicy
    email_changes: tuple[EmailChange, ...]
    """Personal data: mask before logging (:func:`exporter.masking.mask_email`)."""
    state: ExportState
    """The state the snapshot was compared with."""
    unsubscribe_index: I64
    """State positions of the leavers to unsubscribe."""
    kept_index: I64
    """State positions of the leavers forgotten without unsubscribing."""

    def leavers_to_unsubscribe(self) -> Iterator[Leaver]:
        """Leavers to send unsubscribe payloads for (decoded lazily, one at a time)."""
        return self._leavers(self.unsubscribe_index)

    def leavers_kept(self) -> Iterator[Leaver]:
        """Leavers the state forgets without unsubscribing them."""
        return self._leavers(self.kept_index)

    def _leavers(self, index: I64) -> Iterator[Leaver]:
        for i in index.tolist():
            email = self.state.email_at(i)
            yield Leaver(email, email)

    def new_update(self) -> StateUpdate:
        """A :class:`StateUpdate` for this run, with the snapshot count and the kept leavers'
        removal already in it; add the confirmations as they come."""
        update = StateUpdate(snapshot_count=self.snapshot_count)
        for leaver in self.leavers_kept():
            update.drop(leaver.key)
        return update


class Differ:
    """Classifies a snapshot's contacts against ``state``, a batch at a time.

    ``full_resync`` sends everything: contacts in state are ``CHANGED`` even when identical
    (contacts not in state stay ``NEW``); leavers are computed as usual.
    """

    def __init__(
        self,
        state: ExportState,
        *,
        leavers: LeaverPolicy = "unsubscribe",
        full_resync: bool = False,
        batch_size: int = 4096,
        pre_existing: U64 | None = None,
    ) -> None:
        """``pre_existing``: sorted hashes of keys that were active on the list before this
        export subscribed them (:mod:`exporter.run.members`): never unsubscribed, kept."""
        if leavers not in LEAVER_POLICIES:
            raise ConfigError(f"must be one of {', '.join(LEAVER_POLICIES)}", field="leavers")
        self.state = state
        self.leavers: LeaverPolicy = leavers
        self.full_resync = full_resync
        self.batch_size = batch_size
        self.pre_existing = pre_existing
        self._index = HashIndex(state.hashes)
        self._seen = np.zeros(len(state), bool)
        self._counts = np.zeros(3, np.int64)
        self._collisions = 0
        self._has_profiles = bool(np.any(state.flags & np.uint8(HAS_PROFILE)))
        self._new_profiles = KeyList()
        """Profile ids of new contacts, and (same position) their keys."""
        self._new_keys = KeyList()

    def classify(
        self, contacts: Iterable[PreparedContact]
    ) -> Iterator[tuple[PreparedContact, Change]]:
        """Every contact with its :class:`Change`, in input order (streamed in batches)."""
        stream = iter(contacts)
        while batch := list(islice(stream, self.batch_size)):
            yield from zip(batch, self.classify_batch(batch), strict=True)

    def classify_batch(self, contacts: Sequence[PreparedContact]) -> list[Change]:
        """Classify a batch of contacts (any size; a few thousand amortises numpy's overhead)."""
        if not contacts:
            return []
        kinds = self.classify_columns(
            list(map(_KEY, contacts)),
            list(map(_FINGERPRINT, contacts)),
            [c.profile_id for c in contacts] if self._has_profiles else (),
        )
        return list(map(_CHANGES.__getitem__, kinds.tolist()))

    def classify_columns(
        self, keys: Sequence[str], fingerprints: Sequence[int], profile_ids: Sequence[str | None]
    ) -> npt.NDArray[np.uint8]:
        """:meth:`classify_batch` for contacts given as columns (their keys, fingerprints and
        profile ids): each one's :class:`Change` as its value."""
        kinds = np.zeros(len(keys), np.uint8)  # Change.NEW
        if not len(keys):
            return kinds
        encoded = list(map(str.encode, keys))
        if len(self.state):
            self._classify_known(fingerprints, encoded, kinds)
        if self._has_profiles:
            self._note_profiles(profile_ids, encoded, kinds)
        self._counts += np.bincount(kinds, minlength=3)
        return kinds

    def _classify_known(
        self,
        fingerprints: Sequence[int],
        keys: list[bytes],
        kinds: npt.NDArray[np.uint8],
    ) -> None:
        state = self.state
        at = self._index.find(hash64(keys))
        hit = np.flatnonzero(at >= 0)  # contact positions in the batch
        if not len(hit):
            return
        where = at[hit]  # their state positions
        theirs = np.fromiter(fingerprints, np.uint64, len(keys))[hit]
        same = state.fingerprints[where] == theirs
        # Equal key hash *and* equal fingerprint is the same contact: the fingerprint covers the
        # payload, which holds the address, so mistaking another contact for this one would
        # take a second, independent 64-bit collision. Only a differing fingerprint (changed,
        # or a key-hash collision) needs the addresses compared.
        suspects = np.flatnonzero(~same)
        if len(suspects):
            collided = suspects[~self._same_keys(where[suspects], hit[suspects], keys)]
            if len(collided):
                self._collisions += len(collided)
                genuine = np.ones(len(hit), bool)
                genuine[collided] = False
                hit, where, same = hit[genuine], where[genuine], same[genuine]
        self._seen[where] = True
        if self.full_resync:
            kinds[hit] = Change.CHANGED
            return
        same &= (state.flags[where] & np.uint8(STALE)) == 0
        kinds[hit] = np.where(same, Change.UNCHANGED, Change.CHANGED)

    def _same_keys(self, where: I64, positions: I64, keys: list[bytes]) -> npt.NDArray[np.bool_]:
        """Whether the state's keys at ``where`` equal ``keys[positions]``."""
        emails = self.state.emails
        starts = self.state.offsets[where].tolist()
        ends = self.state.offsets[where + 1].tolist()
        return np.array(
            [
                emails[s:e] == keys[p]
                for p, s, e in zip(positions.tolist(), starts, ends, strict=True)
            ],
            dtype=bool,
        )

    def _note_profiles(
        self,
        profile_ids: Sequence[str | None],
        keys: list[bytes],
        kinds: npt.NDArray[np.uint8],
    ) -> None:
        """Remember new contacts with a profile id: they may be a known profile's new address."""
        for p in np.flatnonzero(kinds == Change.NEW).tolist():
            if pid := profile_ids[p]:
                self._new_profiles.add(pid.encode())
                self._new_keys.add(keys[p])

    def _email_changes(self, left: I64) -> list[EmailChange]:
        """Leavers whose profile id came back as a new contact under another address."""
        if not len(self._new_profiles) or not len(left):
            return []
        state = self.state
        left = left[(state.flags[left] & np.uint8(HAS_PROFILE)) != 0]
        wanted = self._new_profiles.hashes()
        order = np.argsort(wanted, kind="stable")
        wanted = wanted[order]
        at = np.minimum(np.searchsorted(wanted, state.profiles[left]), len(wanted) - 1)
        match = wanted[at] == state.profiles[left]
        new_offsets = self._new_keys.offsets()
        new_keys = bytes(self._new_keys.blob)
        changes = []
        for old, j in zip(left[match].tolist(), order[at[match]].tolist(), strict=True):
            new_key = new_keys[new_offsets[j] : new_offsets[j + 1]].decode()
            old_key = state.email_at(old)
            if new_key != old_key:
                changes.append(EmailChange(old_key, new_key))
        return changes

    def finish(self) -> DiffResult:
        """The counts, leavers and email changes, once every contact has been classified."""
        state = self.state
        left = np.flatnonzero(~self._seen)
        ours = (state.flags[left] & np.uint8(SUBSCRIBED_BY_US)) != 0
        if self.pre_existing is not None and len(self.pre_existing):
            ours &= ~np.isin(state.hashes[left], self.pre_existing)
        if self.leavers == "unsubscribe":
            unsubscribe, kept = left[ours], left[~ours]
        else:
            unsubscribe, kept = left[:0], left
        changes = self._email_changes(left)
        new, changed, unchanged = (int(x) for x in self._counts)
        return DiffResult(
            counts=DiffCounts(
                new=new,
                changed=changed,
                unchanged=unchanged,
                left=len(left),
                to_unsubscribe=len(unsubscribe),
                kept=len(kept),
                email_changes=len(changes),
                collisions=self._collisions,
            ),
            snapshot_count=new + changed + unchanged,
            full_resync=self.full_resync,
            leaver_policy=self.leavers,
            email_changes=tuple(changes),
            state=state,
            unsubscribe_index=unsubscribe.astype(np.int64),
            kept_index=kept.astype(np.int64),
        )


def check_shrink(
    previous_count: int | None,
    current_count: int,
    max_shrink: float = 0.2,
    override: bool = False,
) -> None:
    """Stop a run whose snapshot is empty or shrank by more than ``max_shrink`` since the last.

    A broken upstream job that drops an empty or half-written snapshot would otherwise
    unsubscribe most of the list. No-op on the first run (``previous_count`` 0 or ``None``) and
    with ``override``. Raises :class:`GuardError`.
    """
    if not 0.0 <= max_shrink <= 1.0:
        raise ConfigError(f"must be between 0 and 1, not {max_shrink}", field="max_shrink")
    if override or not previous_count:
        return
    how_to = (
        "Nothing was sent. If this is intended, run again with --allow-shrink (command line) "
        'or "allow_shrink": true (HTTP).'
    )
    if current_count <= 0:
        raise GuardError(
            f"Shrink guard: the snapshot has no contacts, but the last run had "
            f"{previous_count:,}. {how_to}"
        )
    share = (previous_count - current_count) / previous_count
    if share > max_shrink + 1e-12:
        raise GuardError(
            f"Shrink guard: the snapshot has {current_count:,} contacts, {share:.1%} fewer "
            f"than the {previous_count:,} of the last run (the limit is {max_shrink:.0%}). "
            f"{how_to}"
        )
