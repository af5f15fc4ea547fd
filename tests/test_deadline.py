"""The client's own deadline on a wait for a server, on a real socket that never
answers: the watchdog cuts the wait, the server counts as silent until it answers
again, and ``interrupt`` cuts one thread's wait at once."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
from support import wait_for

from modelvault.db import deadline
from modelvault.db.deadline import DEADLINE, INTERRUPT, RETRY_SECONDS, Server, Wait


@pytest.fixture
def silent_peer() -> Iterator[socket.socket]:
    """Our end of a connection whose other end never says anything."""
    ours, theirs = socket.socketpair()
    yield ours
    ours.close()
    theirs.close()


def wait_for_answer(server: Server, sock: socket.socket, waits: list[Wait]) -> bytes:
    with Wait(server, sock.fileno()) as wait:
        waits.append(wait)
        return sock.recv(1)  # b"": the socket was shut down under the wait


def test_a_wait_past_its_deadline_is_cut_and_the_server_goes_silent(
    silent_peer: socket.socket,
) -> None:
    server = Server("db.example", answer_seconds=0.2)
    waits: list[Wait] = []
    assert wait_for_answer(server, silent_peer, waits) == b""
    assert (waits[0].ended_by, waits[0].seconds) == (DEADLINE, 0.2)
    assert server.silent
    assert server.bound() == RETRY_SECONDS  # the next wait is a short try
    assert deadline.awaited_servers() == []


def test_an_answer_ends_the_silence() -> None:
    server = Server("db.example", answer_seconds=30)
    server.silent = True
    ours, theirs = socket.socketpair()
    try:
        theirs.sendall(b"!")
        with Wait(server, ours.fileno()) as wait:
            assert ours.recv(1) == b"!"
        assert wait.ended_by is None
        assert not server.silent
        assert server.bound() == 30
    finally:
        ours.close()
        theirs.close()


def test_a_failed_wait_leaves_the_server_as_it_was() -> None:
    server = Server("db.example", answer_seconds=30)
    server.silent = True
    with pytest.raises(OSError, match="on its own"), Wait(server, -1):
        raise OSError("the driver failed on its own")
    assert server.silent


def test_interrupt_cuts_only_that_threads_wait(silent_peer: socket.socket) -> None:
    server = Server("db.example", answer_seconds=600)
    waits: list[Wait] = []
    answers: list[bytes] = []
    thread = threading.Thread(
        target=lambda: answers.append(wait_for_answer(server, silent_peer, waits)), daemon=True
    )
    thread.start()
    wait_for(lambda: deadline.awaited_servers() == ["db.example"], "the thread to wait")
    assert not deadline.interrupt(threading.get_ident())  # this thread waits for nothing
    assert thread.ident is not None
    assert deadline.interrupt(thread.ident)
    thread.join(30)
    assert not thread.is_alive()
    assert answers == [b""]
    assert waits[0].ended_by == INTERRUPT
    assert not server.silent  # cut short on request: nothing is known of the server


def test_every_wait_on_a_server_ends_when_one_misses_its_deadline() -> None:
    slow = Server("db.example", answer_seconds=0.3)
    pairs = [socket.socketpair() for _ in range(2)]
    waits: list[Wait] = []
    try:
        first = Wait(slow, pairs[0][0].fileno())
        second = Wait(slow, pairs[1][0].fileno())
        second.deadline += 600  # it alone would wait ten minutes more
        for wait in (first, second):
            waits.append(wait)
            wait.__enter__()
        wait_for(lambda: all(w.ended_by for w in waits), "both waits to be cut", 30)
        assert [w.ended_by for w in waits] == [DEADLINE, DEADLINE]
        assert pairs[1][0].recv(1) == b""
    finally:
        for wait in waits:
            wait.__exit__(None, None, None)
        for pair in pairs:
            for sock in pair:
                sock.close()
