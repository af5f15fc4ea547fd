"""Who holds a lease: an owner name that says which process took it, and whether it died.

A worker's leases carry an owner name, ``host:pid:start:thread:nonce``.
``start`` tells this process apart from an earlier one that had the same pid
(on Linux: the boot, the pid namespace and the process's start time; on
Windows: the process's creation time; empty where the system does not say).
When a worker cannot hand its rows back (the catalog was gone as it stopped)
or is killed, its rows stay claimed; the next run on the same host hands them
back at once if their owner is provably dead (``provably_dead``) instead of
waiting for the leases to run out. An owner on another host, in another
container, or that cannot be judged keeps its rows until the lease expires.

What is decided from the system's answers is in plain functions
(``linux_process_gone``, ``windows_process_gone``), tested on every system;
the answers come from ``/proc`` and ``os.kill`` (POSIX) or ``modelvault.winapi``.
The private copies of legacy files are named for their process the same way
(``modelvault.legacy.private_copies``).
"""

from __future__ import annotations

import functools
import os
import re
import socket
import sys
import threading
import uuid

from modelvault import winapi

__all__ = [
    "host_name",
    "linux_process_gone",
    "new_owner",
    "owner_prefix",
    "process_gone",
    "provably_dead",
    "running",
    "start_token",
    "stopped",
    "windows_process_gone",
    "windows_token",
]

# Owners of workers of this process whose thread is still running: an owner of
# this process that is not here belongs to a worker that has ended.
_live: set[str] = set()
_live_lock = threading.Lock()


@functools.cache
def host_name() -> str:
    """This host's name as owner names carry it (no ``:``, at most 90 characters)."""
    return socket.gethostname()[:90].replace(":", "_")


@functools.cache
def _machine() -> str:
    """This boot and pid namespace ('' if unknown): pids are only comparable within one."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip().replace("-", "")[:12]
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return ""
    return f"{boot}.{namespace}"


def _start_time(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux), None if unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # The command name in parentheses may hold spaces: count fields after the last ')'.
    fields = data[data.rfind(b")") + 2 :].split()
    return fields[19].decode() if len(fields) > 19 else None


def start_token(pid: int) -> str:
    """What tells process ``pid`` apart from any other that has or had its pid ('' if
    the system does not say): on Linux the boot, the pid namespace and its start
    time; on Windows its creation time."""
    if sys.platform == "win32":
        return windows_token(winapi.process_facts(pid))
    machine = _machine()
    start = _start_time(pid) if machine else None
    return f"{machine}.{start}" if start else ""


def windows_token(facts: winapi.ProcessFacts) -> str:
    """The start token of a Windows process: ``w`` and its creation time."""
    return f"w{facts.created}" if facts.created is not None else ""


def owner_prefix() -> str:
    """What every owner name made by this host starts with."""
    return f"{host_name()}:"


def new_owner(thread_name: str) -> str:
    """A lease owner name unique to this thread and run (at most 200 characters)."""
    pid = os.getpid()
    name = thread_name[:24].replace(":", "_")
    return f"{host_name()}:{pid}:{start_token(pid)}:{name}:{uuid.uuid4().hex[:12]}"


def running(owner: str) -> None:
    """Mark ``owner`` as a worker of this process that is running."""
    with _live_lock:
        _live.add(owner)


def stopped(owner: str) -> None:
    """Mark ``owner`` as a worker that has ended (its rows handed back, or not)."""
    with _live_lock:
        _live.discard(owner)


def provably_dead(owner: str) -> bool:
    """True only if ``owner`` was a worker on this host whose process (or thread) is gone.

    False whenever that cannot be known for sure: another host, another boot
    or container, a name of an older format, a system that does not tell.
    """
    parts = owner.split(":", 3)
    if len(parts) != 4 or f"{parts[0]}:" != owner_prefix() or not parts[1].isdigit():
        return False
    pid, token = int(parts[1]), parts[2]
    if pid == os.getpid() and token == start_token(pid):
        with _live_lock:
            return owner not in _live  # a worker thread of ours that has ended
    return process_gone(pid, token)


def process_gone(pid: int, token: str) -> bool:
    """True only if the process ``pid`` of this host that had the start token
    ``token`` (from ``start_token``; '' if it had none) has certainly ended."""
    if sys.platform == "win32":
        return windows_process_gone(token, winapi.process_facts(pid))
    if token:
        return linux_process_gone(token, _machine(), start_token(pid))
    return _pid_gone(pid)


def linux_process_gone(token: str, machine: str, token_now: str) -> bool:
    """Whether the process of start ``token`` has ended, given this system's boot and
    pid namespace (``machine``, '' if unknown) and the start token of whoever
    has its pid now (``token_now``, '' if no process has it)."""
    if not machine or not token.startswith(f"{machine}."):
        return False  # another boot or pid namespace: its pid means nothing here
    return token_now != token  # gone ("") or the pid belongs to a newer process


_WINDOWS_TOKEN = re.compile(r"w[0-9]+")


def windows_process_gone(token: str, facts: winapi.ProcessFacts) -> bool:
    """Whether the process of start ``token`` ('' if unknown) has ended, given what
    Windows says of the process that has its pid now (``facts``)."""
    if token and not _WINDOWS_TOKEN.fullmatch(token):
        return False  # not a Windows process's token: its pid means nothing here
    if facts.exists is not True:
        return facts.exists is False  # no process has the pid; None: cannot tell
    if token and facts.created is not None and windows_token(facts) != token:
        return True  # the pid belongs to a newer process
    # The same process (or one that cannot be told apart): ended once it has an
    # exit code. A process holding the pid that has ended means ours has too:
    # while ours ran, the pid was its own.
    return facts.exit_code is not None and facts.exit_code != winapi.STILL_ACTIVE


def _pid_gone(pid: int) -> bool:
    """POSIX: whether no process has ``pid`` (signal 0 probes, it sends nothing)."""
    if pid <= 0:
        return False  # 0 and negative pids name process groups
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # EPERM: it exists, as another user's process
        return False
    return False
