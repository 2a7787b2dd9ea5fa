"""What a person (or a log collector) sees while a run goes on.

On a terminal: one tqdm bar owned by the run (done, failed, in flight, ETA), with log
lines routed around it. Elsewhere (cron, CI, Kubernetes): a plain line every so often.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any, Protocol, TextIO

from tqdm import tqdm

log = logging.getLogger("batch.run.progress")


class Progress(Protocol):
    def start(self, total: int, done: int) -> None: ...
    def item_finished(self, *, ok: bool) -> None: ...
    def in_flight(self, count: int) -> None: ...
    def close(self) -> None: ...


class SilentProgress:
    def start(self, total: int, done: int) -> None:
        pass

    def item_finished(self, *, ok: bool) -> None:
        pass

    def in_flight(self, count: int) -> None:
        pass

    def close(self) -> None:
        pass


class BarProgress:
    """A tqdm bar on a terminal."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stderr
        self._bar: tqdm[Any] | None = None
        self._failed = 0
        self._flying = 0

    def start(self, total: int, done: int) -> None:
        self._bar = tqdm(
            total=total,
            initial=done,
            file=self._stream,
            unit="img",
            dynamic_ncols=_width_known(self._stream),
            ncols=None if _width_known(self._stream) else 100,
        )
        self._refresh()

    def item_finished(self, *, ok: bool) -> None:
        if not ok:
            self._failed += 1
        if self._bar is not None:
            self._bar.update(1)
            self._refresh()

    def in_flight(self, count: int) -> None:
        self._flying = count
        self._refresh()

    def _refresh(self) -> None:
        if self._bar is not None:
            self._bar.set_postfix(failed=self._failed, in_flight=self._flying, refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _width_known(stream: TextIO) -> bool:
    """Some terminals (serial consoles, fresh ptys) report a width of 0: tqdm then draws nothing."""
    try:
        return os.get_terminal_size(stream.fileno()).columns > 0
    except (OSError, ValueError, AttributeError):
        return False


class LineProgress:
    """A plain progress line at most every `every_s` seconds, for logs."""

    def __init__(self, every_s: float = 30.0) -> None:
        self._every_s = every_s
        self._total = 0
        self._done = 0
        self._failed = 0
        self._flying = 0
        self._started = time.monotonic()
        self._last = 0.0

    def start(self, total: int, done: int) -> None:
        self._total, self._done = total, done
        self._started = self._last = time.monotonic()
        log.info("starting: %d items, %d already done", total, done)

    def item_finished(self, *, ok: bool) -> None:
        self._done += 1
        self._failed += 0 if ok else 1
        self._maybe_report()

    def in_flight(self, count: int) -> None:
        self._flying = count
        self._maybe_report()

    def _maybe_report(self) -> None:
        now = time.monotonic()
        if now - self._last < self._every_s:
            return
        self._last = now
        rate = self._done / max(now - self._started, 1e-9)
        left = self._total - self._done
        eta = f"{left / rate:.0f}s" if rate > 0 else "unknown"
        log.info(
            "progress: %d/%d done, %d failed, %d in flight, eta %s",
            self._done,
            self._total,
            self._failed,
            self._flying,
            eta,
        )

    def close(self) -> None:
        pass
