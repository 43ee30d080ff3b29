"""De-duplication of a run's contacts by key, a block of rows at a time, in bounded memory.

:class:`SeenKeys` remembers the keys seen so far as 64-bit hashes in sorted numpy runs (8 bytes
a key; a Python ``set`` of the same hashes costs ~65), merged like a log-structured tree so a
lookup touches a few sorted arrays. :meth:`SeenKeys.first_seen` answers for a whole block which
contacts are the first with their key, in row order: the first occurrence wins, within the
block and across blocks.

With :mod:`exporter.native` built, the hashes are kept in its ``KeySet`` instead, a C hash
table (8 bytes a slot, at most 3/4 full: 11-21 bytes a key), about four times cheaper a block
than the sorted runs' numpy calls; the answers are the same, a set of the same hashes.

The hash is Python's own string hash (computed once per ``str`` and cached; seeded per
process). Two different addresses with the same hash (p ~ 3e-8 for a million) would make the
second a reported duplicate for this run only: the next run, in another process, sends it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from exporter import native

I64 = npt.NDArray[np.int64]
Mask = npt.NDArray[np.bool_]


BLOOM_BITS_PER_KEY = 16
"""Bloom filter bits per key remembered (two probes: ~1.4% of new keys are looked up)."""
_MIN_BITS = 1 << 16
_32 = np.uint64(32)
_63 = np.uint64(63)
_6 = np.uint64(6)
_ONE = np.uint64(1)


class SeenKeys:
    """The hashes of the keys seen in this run (see the module docstring).

    A Bloom filter in front of the sorted runs keeps most lookups off them: a new key (most
    keys are) costs two bit probes, and only the ~1.4% the filter cannot rule out, and true
    repeats, are searched for in the runs (random reads over megabytes: the slow part).
    """

    def __init__(self) -> None:
        self._runs: list[I64] = []
        """Sorted, disjoint arrays; each at most half as long as the one before it."""
        self._count = 0
        self._bits = np.zeros(_MIN_BITS // 64, np.uint64)
        speedups = native.SPEEDUPS
        self._table = speedups.KeySet() if speedups is not None else None
        """The compiled hash table, which then holds every hash (the runs stay empty)."""

    def __len__(self) -> int:
        return self._count if self._table is None else len(self._table)

    @property
    def nbytes(self) -> int:
        """Bytes the hashes and the filter take."""
        if self._table is not None:
            return int(self._table.nbytes)
        return sum(run.nbytes for run in self._runs) + self._bits.nbytes

    def first_seen(self, keys: Sequence[str]) -> Mask:
        """For each key, in order, whether it is the first with its hash (not seen before,
        nor earlier in ``keys``); those are remembered."""
        if self._table is not None:
            marks = self._table.first_seen(keys if isinstance(keys, list) else list(keys))
            return np.frombuffer(marks, np.bool_)
        hashes = np.fromiter(map(hash, keys), np.int64, len(keys))
        if not len(hashes):
            return np.zeros(0, bool)
        ordered = np.sort(hashes)
        if len(ordered) < 2 or bool((ordered[1:] != ordered[:-1]).all()):
            return self._first_seen_distinct(hashes, ordered)
        unique, first_at = np.unique(hashes, return_index=True)  # sorted; index of the first
        fresh = ~self._seen_before(unique)
        new = np.zeros(len(hashes), bool)
        new[first_at[fresh]] = True
        self._add(unique[fresh])
        return new

    def _first_seen_distinct(self, hashes: I64, ordered: I64) -> Mask:
        """:meth:`first_seen` for a block without a repeated hash (``ordered``: sorted)."""
        new = ~self._seen_before(hashes)
        self._add(ordered if new.all() else np.sort(hashes[new]))
        return new

    def _seen_before(self, hashes: I64) -> Mask:
        """Which of ``hashes`` (distinct) an earlier block added: the Bloom filter first, then
        a binary search of every sorted run for the few it lets through."""
        seen = np.zeros(len(hashes), bool)
        maybe = np.flatnonzero(self._maybe(hashes))
        if len(maybe):
            wanted = hashes[maybe]
            for run in self._runs:
                at = np.searchsorted(run, wanted)
                np.minimum(at, len(run) - 1, out=at)
                seen[maybe[run[at] == wanted]] = True
        return seen

    def _probes(self, hashes: I64) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]]:
        u = hashes.view(np.uint64)
        mask = np.uint64(len(self._bits) * 64 - 1)
        return u & mask, (u >> _32) & mask

    def _maybe(self, hashes: I64) -> Mask:
        bits = self._bits
        hit = np.ones(len(hashes), bool)
        for probe in self._probes(hashes):
            hit &= ((bits[probe >> _6] >> (probe & _63)) & _ONE).astype(bool)
        return hit

    def _remember(self, hashes: I64) -> None:
        for probe in self._probes(hashes):
            np.bitwise_or.at(self._bits, probe >> _6, _ONE << (probe & _63))

    def _add(self, run: I64) -> None:
        if not len(run):
            return
        self._count += len(run)
        runs = self._runs
        runs.append(run)
        while len(runs) > 1 and len(runs[-2]) <= 2 * len(runs[-1]):
            top = runs.pop()
            merged = np.concatenate((runs.pop(), top))
            merged.sort(kind="stable")
            runs.append(merged)
        if self._count * BLOOM_BITS_PER_KEY > len(self._bits) * 64:  # rebuild it twice as big
            size = len(self._bits) * 2
            while self._count * BLOOM_BITS_PER_KEY > size * 64:
                size *= 2
            self._bits = np.zeros(size, np.uint64)
            for old in runs:
                self._remember(old)
        else:
            self._remember(run)
