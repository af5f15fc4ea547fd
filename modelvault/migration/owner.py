"""Who holds a lease: an owner name that says which process took it, and whether it died.

A worker's leases carry an owner name, ``host:pid:start:thread:nonce``.
``start`` tells this process apart from an earlier one that had the same pid
(on Linux: the boot, the pid namespace and the process's start time; empty
where the system does not say). When a worker cannot hand its rows back (the
catalog was gone as it stopped) or is killed, its rows stay claimed; the next
run on the same host hands them back at once if their owner is provably dead
(``provably_dead``) instead of waiting for the leases to run out. An owner on
another host, in another container, or that cannot be judged keeps its rows
until the lease expires, as before.
"""

from __future__ import annotations

import functools
import os
import socket
import sys
import threading
import uuid

__all__ = ["new_owner", "owner_prefix", "provably_dead", "running", "stopped"]

# Owners of workers of this process whose thread is still running: an owner of
# this process that is not here belongs to a worker that has ended.
_live: set[str] = set()
_live_lock = threading.Lock()


@functools.cache
def _host() -> str:
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


def _start_token(pid: int) -> str:
    machine = _machine()
    start = _start_time(pid) if machine else None
    return f"{machine}.{start}" if start else ""


def owner_prefix() -> str:
    """What every owner name made by this host starts with."""
    return f"{_host()}:"


def new_owner(thread_name: str) -> str:
    """A lease owner name unique to this thread and run (at most 200 characters)."""
    pid = os.getpid()
    name = thread_name[:24].replace(":", "_")
    return f"{_host()}:{pid}:{_start_token(pid)}:{name}:{uuid.uuid4().hex[:12]}"


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
    if pid == os.getpid() and token == _start_token(pid):
        with _live_lock:
            return owner not in _live  # a worker thread of ours that has ended
    if token:
        if not token.startswith(f"{_machine()}.") or not _machine():
            return False  # another boot or pid namespace: its pid means nothing here
        now = _start_token(pid)
        return now != token  # gone ("") or the pid belongs to a newer process
    return _pid_gone(pid)


def _pid_gone(pid: int) -> bool:
    if sys.platform == "win32" or pid <= 0:
        return False  # os.kill would end the process there, not probe it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # EPERM: it exists, as another user's process
        return False
    return False
