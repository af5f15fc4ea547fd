"""A TCP relay to a database server that a test can freeze: it stops passing
bytes (and taking new connections) without closing anything, as a server whose
process is stopped, or a NAS gone to sleep, looks to its clients."""

from __future__ import annotations

import select
import socket
import threading

LOOK_SECONDS = 0.05  # how often the relay's threads look whether they should stop


class Relay:
    """Listens on 127.0.0.1 (``port``) and passes each connection on to ``target``."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.running = threading.Event()  # cleared: frozen
        self.running.set()
        self.closed = threading.Event()
        self.connections = 0
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._passing = threading.Lock()  # held while bytes pass: freeze() waits for it
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def freeze(self) -> None:
        """Stop passing bytes on and accepting connections; nothing is closed.
        Once it returns, no byte passes until ``thaw()``."""
        with self._passing:
            self.running.clear()

    def thaw(self) -> None:
        self.running.set()

    def held_back(self) -> bool:
        """Whether bytes wait in the relay, not passed on (frozen: a query, or its
        answer, that a client waits for)."""
        with self._lock:
            sockets = [s for s in self._sockets if s.fileno() != -1]
        try:
            ready, _, _ = select.select(sockets, [], [], 0)
        except (OSError, ValueError):
            return False
        return bool(ready)

    def close(self) -> None:
        self.closed.set()
        self.running.set()
        for thread in self._threads:
            thread.join(5)
        with self._lock:
            for sock in [self.listener, *self._sockets]:
                sock.close()

    def __enter__(self) -> Relay:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self.closed.is_set():
            if not self.running.wait(LOOK_SECONDS) or not _readable(self.listener):
                continue  # frozen: new connections wait in the listen queue
            with self._passing:
                if not self.running.is_set():
                    continue
                client, _ = self.listener.accept()
                server = socket.create_connection(self.target)
            with self._lock:
                self._sockets += [client, server]
                self.connections += 1
            for source, sink in ((client, server), (server, client)):
                thread = threading.Thread(target=self._pump, args=(source, sink), daemon=True)
                self._threads.append(thread)
                thread.start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        while not self.closed.is_set():
            if not self.running.wait(LOOK_SECONDS) or not _readable(source):
                continue  # frozen: bytes stay in the kernel's buffers, unread
            with self._passing:
                if not self.running.is_set():
                    continue
                try:
                    data = source.recv(65536)
                    if not data:
                        sink.shutdown(socket.SHUT_WR)
                        return
                    sink.sendall(data)
                except OSError:
                    return


def _readable(sock: socket.socket) -> bool:
    try:
        ready, _, _ = select.select([sock], [], [], LOOK_SECONDS)
    except (OSError, ValueError):  # closed meanwhile
        return False
    return bool(ready)
