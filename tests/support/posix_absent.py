"""Python as Windows has it, as far as a POSIX machine can show: the POSIX-only
modules cannot be imported, and the POSIX-only names of ``os``, ``signal`` and
``socket`` are not there, nor the "fork" way of starting processes.

For tests that run Python in a subprocess to see that something does not need
them (the package imports, the suite collects): the code to run starts with
``PRELUDE``. What it cannot show is a different ``os.name`` or ``sys.platform``
(too much of the standard library branches on those).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

MODULES = (
    "fcntl",
    "pty",
    "termios",
    "tty",
    "pwd",
    "grp",
    "resource",
    "syslog",
    "crypt",
    "spwd",
    "nis",
    "posix_ipc",
)
OS_NAMES = (
    "geteuid",
    "getuid",
    "getegid",
    "getgid",
    "getgroups",
    "seteuid",
    "setegid",
    "setuid",
    "setgid",
    "getpgid",
    "getsid",
    "setsid",
    "killpg",
    "fork",
    "forkpty",
    "openpty",
    "mkfifo",
    "mknod",
    "chown",
    "lchown",
    "fchown",
    "statvfs",
    "fstatvfs",
    "sync",
    "uname",
    "getloadavg",
    "sched_getaffinity",
    "posix_fadvise",
    "posix_fallocate",
    "pread",
    "pwrite",
    "wait3",
    "wait4",
    "O_NOFOLLOW",
    "O_NONBLOCK",
    "O_CLOEXEC",
    "O_DIRECTORY",
    "O_NOCTTY",
    "POSIX_FADV_SEQUENTIAL",
)
SIGNAL_NAMES = (
    "SIGKILL",
    "SIGHUP",
    "SIGQUIT",
    "SIGUSR1",
    "SIGUSR2",
    "SIGALRM",
    "SIGPIPE",
    "SIGCHLD",
    "SIGSTOP",
    "SIGCONT",
    "SIGTSTP",
    "SIGXFSZ",
    "SIGWINCH",
    "alarm",
    "setitimer",
    "pthread_kill",
    "pthread_sigmask",
    "siginterrupt",
)


def apply() -> None:
    """Take the POSIX-only parts away from this interpreter."""
    for name in MODULES:
        sys.modules[name] = None  # type: ignore[assignment]  # import raises ImportError
    for module, names in ((os, OS_NAMES), (signal, SIGNAL_NAMES), (socket, ("AF_UNIX",))):
        for name in names:
            if hasattr(module, name):
                delattr(module, name)
    get_context = multiprocessing.get_context

    def windows_contexts(method: str | None = None) -> Any:
        if method in ("fork", "forkserver"):
            raise ValueError(f"cannot find context for {method!r}")
        return get_context(method)

    multiprocessing.get_context = windows_contexts  # type: ignore[assignment]


# Imported from its own folder, not as ``support.posix_absent``: the package's
# __init__ imports modelvault and SQLAlchemy, which must come after apply().
PRELUDE = (
    "import sys\n"
    f"sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})\n"
    "import posix_absent\n"
    "del sys.path[0]\n"
    "posix_absent.apply()\n"
)
