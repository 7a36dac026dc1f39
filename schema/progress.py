"""Progress of a long command (crawl, check). On a terminal: one line rewritten in place,
with the total and an ETA where the total is known. Elsewhere (cron mail, an HTCondor
job's ``.out``, journald): an INFO log line every ``interval`` seconds, with the time.
Also the sizes and "a, b and 7 more" lists that summaries print."""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

from pnfsmon.schema.logs import DEFAULT_INTERVAL

log = logging.getLogger(__name__)


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def count(n: int, word: str, plural: str | None = None) -> str:
    """``1 file``, ``2 files``, ``1,000 directories`` (with ``plural``)."""
    return f"{n:,} {word if n == 1 else plural or word + 's'}"


def stopped_by(err: BaseException) -> str:
    """``Ctrl-C`` or ``SIGTERM``: what stopped a command (KeyboardInterrupt, or the
    ``Interrupted`` the command's SIGTERM handler raises)."""
    if isinstance(err, KeyboardInterrupt):
        return "Ctrl-C"
    return str(err).removeprefix("stopped by ") or type(err).__name__


def human_duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class Progress:
    """``update(done, detail)`` as often as convenient; ``total`` may be unknown (None)
    or an estimate (the last crawl's file count), then the ETA is one too."""

    def __init__(self, what: str, total: int | None = None, *, unit: str = "files",
                 interval: float = DEFAULT_INTERVAL, stream: TextIO | None = None) -> None:
        self.what = what
        self.total = total
        self.unit = unit
        self.stream = stream or sys.stderr
        self.terminal = self.stream.isatty()
        self.interval = 1.0 if self.terminal else interval
        self.started = time.monotonic()
        self._last = self.started
        self._shown = False

    def line(self, done: int, detail: str = "") -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = done / elapsed
        text = f"{self.what}: {done:,}"
        if self.total:
            text += f" of {self.total:,} {self.unit} ({100.0 * done / self.total:.0f} %)"
        else:
            text += f" {self.unit}"
        text += f", {rate:,.0f}/s"
        if self.total and rate > 0 and done < self.total:
            text += f", ETA {human_duration((self.total - done) / rate)}"
        return text + (f"; {detail}" if detail else "")

    def update(self, done: int, detail: str = "") -> None:
        now = time.monotonic()
        if now - self._last < self.interval:
            return
        self._last = now
        if self.terminal:
            self.stream.write("\r\x1b[K" + self.line(done, detail))
            self.stream.flush()
            self._shown = True
        else:
            log.info("%s", self.line(done, detail))

    def done(self) -> None:
        if self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def warn_list(what: str, items: list[str], shown: int = 5) -> None:
    """One WARNING line: ``WHAT: a, b, c, d, e and 7 more``."""
    more = len(items) - shown
    log.warning("%s: %s%s", what, ", ".join(items[:shown]),
                f" and {more} more" if more > 0 else "")
