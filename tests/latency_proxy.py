"""A loopback TCP proxy that delays each direction by a fixed time without limiting
throughput, to put a WAN-like round trip between an XRootD client and a real server (this
kernel has no ``netem``). Each direction is a delay line: a reader stamps every chunk as
it arrives and a writer sends it ``delay`` seconds later, so data keeps flowing while
earlier chunks wait.

    with LatencyProxy(("127.0.0.1", server_port), delay=0.005) as proxy:
        url = f"root://127.0.0.1:{proxy.port}"
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time


class LatencyProxy:
    def __init__(self, target: tuple[str, int], delay: float) -> None:
        self.target = target
        self.delay = delay
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.bytes = {"up": 0, "down": 0}  # client→server, server→client
        self.connections = 0
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._closed = False

    def start(self) -> LatencyProxy:
        threading.Thread(target=self._accept, name="latency-proxy", daemon=True).start()
        return self

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self.connections += 1
                self._sockets += [client, server]
            self._pipe(client, server, "up")
            self._pipe(server, client, "down")

    def _pipe(self, source: socket.socket, sink: socket.socket, direction: str) -> None:
        line: queue.SimpleQueue = queue.SimpleQueue()

        def read() -> None:
            while True:
                try:
                    data = source.recv(1 << 20)
                except OSError:
                    data = b""
                line.put((time.monotonic() + self.delay, data))
                if not data:
                    return
                with self._lock:
                    self.bytes[direction] += len(data)

        def write() -> None:
            while True:
                due, data = line.get()
                pause = due - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                if not data:
                    with contextlib.suppress(OSError):
                        sink.shutdown(socket.SHUT_WR)
                    return
                try:
                    sink.sendall(data)
                except OSError:
                    return

        for job in (read, write):
            threading.Thread(target=job, name=f"latency-{direction}", daemon=True).start()

    def stop(self) -> None:
        self._closed = True
        self.listener.close()
        with self._lock:
            for s in self._sockets:
                with contextlib.suppress(OSError):
                    s.close()

    def __enter__(self) -> LatencyProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
