"""Progress on stderr while ``python -m exporter run`` works."""

from __future__ import annotations

from typing import IO, Any

from exporter.progress import ProgressEvent


class ProgressBar:
    """tqdm bars on stderr: rows read while preparing, then contacts settled."""

    def __init__(self, err: IO[str]) -> None:
        from tqdm import tqdm

        self._tqdm = tqdm
        self._err = err
        self._bar: Any = None
        self._phase = ""

    def __call__(self, event: ProgressEvent) -> None:
        phase = "prepare" if event.phase == "prepare" else "send"
        if phase != self._phase:
            self.close()
            self._phase = phase
            self._bar = self._tqdm(
                total=event.total,
                desc="reading rows" if phase == "prepare" else "sending contacts",
                unit=" rows" if phase == "prepare" else " contacts",
                file=self._err,
                dynamic_ncols=True,
                leave=False,
            )
        if event.phase == "push":
            self._bar.set_postfix_str(f"sent {event.done:,}", refresh=False)
            return
        if event.total is not None:
            self._bar.total = event.total
        self._bar.n = event.done
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
