"""The checksum-query path of an XRootD crawl: each listed file's recorded checksum asked of
the server with ``query checksum``, many in flight, as a small scheduler with one method
per event (``add``: a file was listed; ``send``: room to ask; ``answered``: the server
answered). The crawl's loop (``crawler.xrootd``) feeds it the events.

A default ``xrootd.chksum adler32`` server computes a checksum on its first query (a full
read) and, busy, asks the client to wait (``kXR_wait``) longer than its timeout: the query
ends ``Operation expired`` although the server keeps that checksum a moment later. So an
error is never "the storage keeps none":
- a query that fails for now (expired, connection dropped, server busy or failing) is
  asked again after a backoff, up to ``ATTEMPTS`` times; what still fails is marked
  *unreadable* on the file (not "none kept"), counted and named by the crawl;
- the number in flight adapts (``Window``): halved when the server answers with an error,
  grown again while it keeps up;
- ``kXR_Unsupported`` means the server keeps no checksums: said once, and no more asked."""

from __future__ import annotations

import heapq
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from pnfsmon.crawler.listing import Listed
from pnfsmon.schema.xrootd import UNSUPPORTED, checksum_failure, parse_checksum_response

log = logging.getLogger(__name__)

SOURCE = "xrootd"  # recorded_from
QUERIES_IN_FLIGHT = 256  # a WAN round trip each: 64 reached 5k files/s at 5 ms, 256 12k
ATTEMPTS = 8  # queries of one file before its error stands
FIRST_DELAY = 0.25  # seconds before asking again, doubled each time...
MAX_DELAY = 30.0  # ...up to this (the kXR_wait a busy server asks for)
# Seconds one query may take at most, whatever --request-timeout says. A busy server
# answers kXR_wait 30 (measured); the client sits that out when the timeout leaves room,
# holding the whole window for 30 s per round (300 fresh files: 92 s at 60 s), and fails
# at once when it does not, so the scheduler sees the busy server and backs off with
# fewer in flight (the same 300 files: under 1 s). A computation still running when a
# query expires goes on in the server, and the query is asked again.
QUERY_TIMEOUT = 20


def backoff(attempts: int) -> float:
    """Seconds to wait before asking again after ``attempts`` failed queries."""
    return min(MAX_DELAY, FIRST_DELAY * 2 ** (attempts - 1))


class Window:
    """How many queries may be in flight, between 1 and ``ceiling``: halved on an error,
    grown by a quarter after each window's worth of answers. The errors of one burst cut
    it once: a query remembers the ``round`` it was sent in, and only an error of the
    current round cuts (as TCP reduces once per round trip)."""

    def __init__(self, ceiling: int) -> None:
        self.ceiling = self.size = ceiling
        self.round = 0
        self._answered = 0

    def succeeded(self) -> None:
        self._answered += 1
        if self._answered >= self.size:
            self.size = min(self.ceiling, self.size + max(1, self.size // 4))
            self._answered = 0

    def failed(self, sent_in: int) -> None:
        if sent_in == self.round:
            self.size = max(1, self.size // 2)
            self.round += 1
            self._answered = 0


@dataclass(eq=False)
class Query:
    path: str  # on the server
    item: Listed
    attempts: int = 0
    round: int = 0  # the window's round it was last sent in


class ChecksumQueries:
    """``ask(query)`` sends one query; its answer must come back to ``answered``.
    ``enabled`` False: nothing is asked, files pass through as "not asked"."""

    def __init__(self, ask: Callable[[Query], None], *, enabled: bool = True,
                 ceiling: int = QUERIES_IN_FLIGHT,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ask = ask
        self.enabled = enabled
        self.unsupported = False  # the server said it keeps no checksums
        self.window = Window(ceiling)
        self.clock = clock
        self.ready: list[Query] = []
        self.later: list[tuple[float, int, Query]] = []  # (when, tie-breaker, query)
        self.in_flight = 0
        self.retries = 0  # queries asked again
        self.smallest_window = ceiling
        self._order = itertools.count()  # ties in ``later`` go first come, first served

    @property
    def waiting(self) -> int:
        """Files listed and not yet answered for (the listing pauses above a bound)."""
        return len(self.ready) + len(self.later) + self.in_flight

    @property
    def busy(self) -> bool:
        return bool(self.ready or self.later or self.in_flight)

    def seconds_to_next(self) -> float | None:
        """How long the loop may wait for an answer before a retry falls due (None: no
        retry is waiting)."""
        if not self.later:
            return None
        return max(0.0, self.later[0][0] - self.clock())

    # -- events ------------------------------------------------------------------------

    def add(self, path: str, item: Listed) -> list[Listed]:
        """A file was listed: ask for its checksum (or pass it on, not asked): the files
        now done."""
        if not self.enabled:
            return [item]
        if self.unsupported:
            item.recorded(SOURCE, None)
            return [item]
        self.ready.append(Query(path, item))
        return []

    def send(self) -> None:
        """Ask what is due, as far as the window allows."""
        now = self.clock()
        while self.later and self.later[0][0] <= now:
            self.ready.append(heapq.heappop(self.later)[2])
        while self.ready and self.in_flight < self.window.size:
            query = self.ready.pop()
            query.attempts += 1
            query.round = self.window.round
            self.in_flight += 1
            self.ask(query)

    def answered(self, query: Query, status: dict, response: bytes | None) -> list[Listed]:
        """The server answered ``query``: the files now done."""
        self.in_flight -= 1
        if status["ok"]:
            self.window.succeeded()
            query.item.recorded(SOURCE, parse_checksum_response(response))
            return [query.item]
        if status["errno"] == UNSUPPORTED:
            return self._unsupported(query)
        again, why = checksum_failure(status["errno"], status.get("message") or "")
        if not again:
            query.item.not_read(SOURCE, why)
            return [query.item]
        self.window.failed(query.round)
        self.smallest_window = min(self.smallest_window, self.window.size)
        if query.attempts >= ATTEMPTS:
            query.item.not_read(SOURCE, f"{why} (asked {query.attempts} times)")
            return [query.item]
        self.retries += 1
        log.debug("asking again for %s in %.2f s: %s (%d in flight at most now)",
                  query.path, backoff(query.attempts), why, self.window.size)
        heapq.heappush(self.later, (self.clock() + backoff(query.attempts),
                                    next(self._order), query))
        return []

    def _unsupported(self, query: Query) -> list[Listed]:
        """The server keeps no checksums: this file and every one not yet asked have none;
        answers still to come say the same."""
        if not self.unsupported:
            self.unsupported = True
            log.warning("the server keeps no checksums (kXR_Unsupported): files are listed "
                        "without one, and their first read becomes their reference")
        pending = [query, *self.ready, *(q for _when, _n, q in self.later)]
        self.ready, self.later = [], []
        for each in pending:
            each.item.recorded(SOURCE, None)
        return [each.item for each in pending]
