"""The command line configures logging once per process, however often main() runs."""

from __future__ import annotations

import io
import logging

from exporter import cli


def test_repeated_verbose_calls_keep_one_handler() -> None:
    root = logging.getLogger()
    before = list(root.handlers)
    level = root.level
    try:
        for _ in range(3):
            cli._configure_logging(1, io.StringIO())
        ours = [h for h in root.handlers if getattr(h, cli._CLI_HANDLER, False)]
        assert len(ours) == 1
    finally:
        for handler in [h for h in root.handlers if h not in before]:
            root.removeHandler(handler)
        root.setLevel(level)
