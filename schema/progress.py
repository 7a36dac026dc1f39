"""Progress lines for long commands: rewritten in place on a terminal, silent otherwise
(cron mails and condor logs get only the final summary); and the one-line warnings that
name a few of many items."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, stream: TextIO | None = None, interval: float = 1.0) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self.interval = interval
        self._last = 0.0
        self._shown = False

    def update(self, text: str, *, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if force or now - self._last >= self.interval:
            self._last = now
            self.stream.write("\r\x1b[K" + text)
            self.stream.flush()
            self._shown = True

    def done(self) -> None:
        if self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def warn_list(what: str, items: list[str], shown: int = 5) -> None:
    """``warning: WHAT: a, b, c, d, e and 7 more`` on stdout (cron mails it)."""
    more = len(items) - shown
    print(f"warning: {what}: {', '.join(items[:shown])}"
          + (f" and {more} more" if more > 0 else ""))
