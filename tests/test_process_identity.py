"""Whether the process a lease owner (or a private copy) names has ended: the
decisions, given what Linux or Windows answers, tested on every system; the
system calls where they exist."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from modelvault import winapi
from modelvault.queue import owner
from modelvault.queue.owner import linux_process_gone, windows_process_gone, windows_token
from modelvault.winapi import STILL_ACTIVE, ProcessFacts

MACHINE = "0123456789ab.4026531836"
TOKEN = f"{MACHINE}.81234"


def test_linux_decisions() -> None:
    assert not linux_process_gone(TOKEN, MACHINE, TOKEN)  # the same process has the pid
    assert linux_process_gone(TOKEN, MACHINE, "")  # no process has it
    assert linux_process_gone(TOKEN, MACHINE, f"{MACHINE}.99999")  # a newer process has it
    # Another boot or pid namespace, or a system that does not say: never judged.
    assert not linux_process_gone("fedcba987654.4026531836.81234", MACHINE, "")
    assert not linux_process_gone(TOKEN, "", "")
    assert not linux_process_gone("w132537600000000000", MACHINE, "")  # a Windows process


CREATED = 133_000_000_000_000_000  # 100 ns units since 1601 (a time in 2022)


@pytest.mark.parametrize(
    ("token", "facts", "gone"),
    [
        # No process has the pid (OpenProcess: invalid parameter).
        (f"w{CREATED}", ProcessFacts(False), True),
        ("", ProcessFacts(False), True),
        # Cannot tell (access denied, or not Windows): never judged gone.
        (f"w{CREATED}", ProcessFacts(None), False),
        ("", winapi.UNKNOWN, False),
        # The pid belongs to a newer process.
        (f"w{CREATED}", ProcessFacts(True, STILL_ACTIVE, CREATED + 1), True),
        # The same process, running; or ended, its handle kept open by another.
        (f"w{CREATED}", ProcessFacts(True, STILL_ACTIVE, CREATED), False),
        (f"w{CREATED}", ProcessFacts(True, 0, CREATED), True),
        (f"w{CREATED}", ProcessFacts(True, 3221225786, CREATED), True),  # killed by Ctrl-C
        # Its creation time not known: only an exit code tells.
        (f"w{CREATED}", ProcessFacts(True, STILL_ACTIVE, None), False),
        (f"w{CREATED}", ProcessFacts(True, 1, None), True),
        (f"w{CREATED}", ProcessFacts(True, None, CREATED), False),
        ("", ProcessFacts(True, STILL_ACTIVE, CREATED), False),
        ("", ProcessFacts(True, 0, CREATED), True),
        # Not a Windows process's token: its pid means nothing here.
        (TOKEN, ProcessFacts(False), False),
        ("w12x", ProcessFacts(False), False),
    ],
)
def test_windows_decisions(token: str, facts: ProcessFacts, gone: bool) -> None:
    assert windows_process_gone(token, facts) is gone


def test_a_windows_token_is_the_creation_time() -> None:
    assert windows_token(ProcessFacts(True, STILL_ACTIVE, CREATED)) == f"w{CREATED}"
    assert windows_token(ProcessFacts(True, STILL_ACTIVE, None)) == ""
    assert windows_token(winapi.UNKNOWN) == ""


def _exited_child() -> tuple[int, str]:
    """The pid and start token of a process that has ended (taken while it ran)."""
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    token = owner.start_token(child.pid)
    child.communicate(b"", timeout=60)
    return child.pid, token


def test_this_process_is_alive_and_an_exited_one_is_gone() -> None:
    me = os.getpid()
    assert not owner.process_gone(me, owner.start_token(me))
    pid, token = _exited_child()
    assert owner.process_gone(pid, token)


@pytest.mark.skipif(sys.platform == "win32", reason="asks kernel32 there")
def test_no_windows_answers_elsewhere() -> None:
    assert winapi.process_facts(os.getpid()) == winapi.UNKNOWN


@pytest.mark.skipif(sys.platform != "win32", reason="asks kernel32 (Windows only)")
def test_what_windows_says_of_processes() -> None:
    facts = winapi.process_facts(os.getpid())
    assert facts.exists is True
    assert facts.exit_code == STILL_ACTIVE
    assert facts.created is not None
    assert owner.start_token(os.getpid()) == f"w{facts.created}"
    pid, token = _exited_child()
    assert token.startswith("w")
    assert owner.process_gone(pid, token)
