"""Problem rows rendered once, kept by id in a temporary SQLite file on local disk while a
report is written: the by-size and by-time pages and the history pages reuse them, so the
database sends each wide row once and the report's memory stays flat however many
problems there are."""

from __future__ import annotations

import os
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator

from markupsafe import Markup


class RowStore:
    def __init__(self) -> None:
        fd, self.path = tempfile.mkstemp(prefix="pnfsmon-report-", suffix=".sqlite")
        os.close(fd)
        self.db = sqlite3.connect(self.path)
        self.db.executescript(
            "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;"
            "CREATE TABLE rows (id INTEGER PRIMARY KEY, row TEXT NOT NULL, heading TEXT)")

    def add(self, items: Iterable[tuple[int, str, str]]) -> None:
        """(id, row HTML, history heading HTML) tuples."""
        self.db.executemany("INSERT INTO rows VALUES (?, ?, ?)", items)

    def rows(self, ids: list[int]) -> list[Markup]:
        """The rows of ``ids``, in that order."""
        found = dict(self.db.execute(
            f"SELECT id, row FROM rows WHERE id IN ({','.join('?' * len(ids))})", ids))
        return [Markup(found[i]) for i in ids if i in found]

    def headings(self) -> Iterator[tuple[int, Markup]]:
        """(id, history heading) of every row, by id."""
        for file_id, heading in self.db.execute("SELECT id, heading FROM rows ORDER BY id"):
            yield file_id, Markup(heading)

    def close(self) -> None:
        self.db.close()
        os.unlink(self.path)

    def __enter__(self) -> RowStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
