"""Optional C speed-ups of *prepare* (``_speedups.c``): scanning plain CSV text into records,
mapping its common rows and fingerprinting payloads, without a Python object per field.

Built in place by ``make setup`` (``python setup.py build_ext --inplace``; it needs a C
compiler and the Python headers). Where it is not built, :data:`SPEEDUPS` is ``None`` and
every caller runs its pure-Python path, which stays the reference: the results are the same
byte for byte (``tests/test_native.py``, ``tests/test_prepare_paths.py``), only slower.
:func:`disabled` turns the speed-ups off for a block of code (tests compare both paths).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import ModuleType

_built: ModuleType | None
try:
    import exporter.native._speedups as _built
except ImportError:  # not built: the pure-Python paths run
    _built = None

SPEEDUPS: ModuleType | None = _built
"""The compiled module, or ``None`` (not built, or :func:`disabled`)."""


def available() -> bool:
    """Whether the compiled module is built (whatever :func:`disabled` says)."""
    return _built is not None


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Run the pure-Python paths inside this block (not thread-safe: for tests and benches)."""
    global SPEEDUPS
    saved, SPEEDUPS = SPEEDUPS, None
    try:
        yield
    finally:
        SPEEDUPS = saved
