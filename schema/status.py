"""The closed vocabulary of verdicts. Status names are stored as small integer codes in the
database and shown by name everywhere else (CLI, reports, exports); this module is the only
place that maps one to the other."""

from __future__ import annotations

import enum


class Status(enum.IntEnum):
    UNCHECKED = 0  # listed by the crawler, not verified yet (or changed since the last check)
    OK = 1  # content matches the reference checksum
    CORRUPTED = 2  # content or size differs from the reference
    MISSING = 3  # listed in the namespace, but the data cannot be found
    TIMEOUT = 4  # reading took longer than the timeout; bytes_read says how far it got
    UNREADABLE = 5  # I/O or permission error while reading; see the error column
    CHANGED = 6  # rewritten since it was listed: not judged, the next crawl re-queues it
    VANISHED = 7  # no longer in the namespace at the last crawl (deleted on purpose, usually)
    NEARLINE = 8  # dCache says it is only on tape: listed, not read (crawl --include-nearline)
    # Vanished while missing or corrupted: the data is lost, not deleted on purpose as far
    # as anyone told us. It stays (never pruned) until a person acknowledges it (``pnfsmon
    # ack``, then ``vanished``) or it comes back.
    LOST = 9

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def from_label(cls, label: str) -> Status:
        try:
            return cls[label.upper()]
        except KeyError:
            names = ", ".join(s.label for s in cls)
            raise ValueError(f"unknown status {label!r}; known: {names}") from None


#: Statuses that mean the storage lost or damaged data: what the reports list first.
PROBLEMS: tuple[Status, ...] = (
    Status.MISSING,
    Status.CORRUPTED,
    Status.TIMEOUT,
    Status.UNREADABLE,
    Status.LOST,
)

#: Statuses of files no longer in the namespace (the crawl did not list them).
GONE: tuple[Status, ...] = (Status.VANISHED, Status.LOST)

#: What a file's status becomes when it vanishes: the lost ones are kept in view.
LOST_WHEN_GONE: tuple[Status, ...] = (Status.MISSING, Status.CORRUPTED)
