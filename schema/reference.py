"""Where a file's reference checksum came from, or why it has none: a closed vocabulary,
stored as a small integer in ``statuses.reference`` and in the ``status_counts`` ledger,
shown by name everywhere else. ``statuses.recorded_from`` says which interface of the
storage answered (or was asked): ``xrootd``, ``xrdcks``, ``pnfs``, ``chimera``."""

from __future__ import annotations

import enum


class Reference(enum.IntEnum):
    UNKNOWN = 0  # listed before pnfs-monitor kept this (schema revision 0005)
    STORAGE = 1  # the checksum the storage records
    FIRST_READ = 2  # the storage keeps none: the first complete read became the reference
    NONE_KEPT = 3  # the storage was asked and keeps none for this file (yet)
    UNREADABLE = 4  # the storage keeps checksums, but this one could not be read
    NOT_ASKED = 5  # the crawl was told not to ask (--checksums none, --no-xattr)

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", " ")


#: No reference yet: a check asks the storage again before its own reading becomes one
#: (except where the operator said not to ask).
ASK_AGAIN: tuple[Reference, ...] = (Reference.UNKNOWN, Reference.NONE_KEPT,
                                    Reference.UNREADABLE)
