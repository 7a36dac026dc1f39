"""Run a streaming query on its own connection in a thread, ahead of its consumer: the
database works (sorts, reads from disk) while this process renders something else, and a
bounded queue keeps memory flat."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator

import sqlalchemy as sa

_DONE = object()


class Prefetched:
    def __init__(self, engine: sa.Engine, produce: Callable[[sa.Connection], Iterator],
                 buffered: int = 20_000) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=buffered)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(engine, produce),
                                        name="pnfsmon-prefetch", daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, engine: sa.Engine, produce) -> None:
        try:
            with engine.connect() as conn:
                for item in produce(conn):
                    if not self._put(item):
                        return  # the consumer gave up
            self._put(_DONE)
        except BaseException as err:  # handed to the consumer, raised there
            self._put(err)

    def __iter__(self) -> Iterator:
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        """Stop the producer (if the consumer stops early) and wait for it."""
        self._stop.set()
        self._thread.join()
