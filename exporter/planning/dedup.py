"""De-duplication of a run's contacts by key, a block of rows at a time, in bounded memory.

:class:`SeenKeys` remembers the keys seen so far as 64-bit hashes in sorted numpy runs (8 bytes
a key; a Python ``set`` of the same hashes costs ~65), merged like a log-structured tree so a
lookup touches a few sorted arrays. :meth:`SeenKeys.first_seen` answers for a whole block which
contacts are the first with their key, in row order: the first occurrence wins, within the
block and across blocks.

The hash is Python's own string hash (computed once per ``str`` and cached; seeded per
process). Two different addresses with the same hash (p ~ 3e-8 for a million) would make the
second a reported duplicate for this run only: the next run, in another process, sends it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]
Mask = npt.NDArray[np.bool_]


class SeenKeys:
    """The hashes of the keys seen in this run (see the module docstring)."""

    def __init__(self) -> None:
        self._runs: list[I64] = []
        """Sorted, disjoint arrays; each at most half as long as the one before it."""
        self._count = 0

    def __len__(self) -> int:
        return self._count

    @property
    def nbytes(self) -> int:
        """Bytes the hashes take."""
        return sum(run.nbytes for run in self._runs)

    def first_seen(self, keys: Sequence[str]) -> Mask:
        """For each key, in order, whether it is the first with its hash (not seen before,
        nor earlier in ``keys``); those are remembered."""
        hashes = np.fromiter(map(hash, keys), np.int64, len(keys))
        if not len(hashes):
            return np.zeros(0, bool)
        unique, first_at = np.unique(hashes, return_index=True)  # sorted; index of the first
        fresh = np.ones(len(unique), bool)
        for run in self._runs:
            at = np.searchsorted(run, unique)
            np.minimum(at, len(run) - 1, out=at)
            fresh &= run[at] != unique
        new = np.zeros(len(hashes), bool)
        new[first_at[fresh]] = True
        self._add(unique[fresh])
        return new

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
