"""``python -m exporter``: see :mod:`exporter.cli`."""

from exporter.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
