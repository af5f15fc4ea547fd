"""The few Windows system calls modelvault makes, through ``ctypes`` (kernel32).

Importable on every system. Each function calls into kernel32 only where
``sys.platform == "win32"``; elsewhere it answers "unknown" (or does nothing),
so what is decided from the answers lives in plain functions that are tested
on every system (``modelvault.queue.owner``, ``modelvault.cli.signals``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import NamedTuple

__all__ = [
    "CTRL_BREAK_EVENT",
    "CTRL_CLOSE_EVENT",
    "CTRL_C_EVENT",
    "STILL_ACTIVE",
    "UNKNOWN",
    "ProcessFacts",
    "add_console_handler",
    "process_facts",
]

# GetExitCodeProcess's answer for a process that is still running (a process
# that exited with 259 reads the same, so it alone never proves an end).
STILL_ACTIVE = 259
# The console events a handler of SetConsoleCtrlHandler is called with.
CTRL_C_EVENT, CTRL_BREAK_EVENT, CTRL_CLOSE_EVENT = 0, 1, 2


class ProcessFacts(NamedTuple):
    """What Windows says of the process that has a pid now.

    ``exists``: False when no process has the pid (OpenProcess refuses it as an
    invalid parameter), None when it cannot be told (access denied, not Windows).
    ``exit_code``: ``STILL_ACTIVE`` while it runs (GetExitCodeProcess).
    ``created``: its creation time in 100 ns units since 1601 (GetProcessTimes):
    with the pid, it names one process for good (a pid is reused, never both).
    """

    exists: bool | None
    exit_code: int | None = None
    created: int | None = None


UNKNOWN = ProcessFacts(None)

# A console event handler: True when it handled the event (Windows then calls
# no other handler; for a console close it ends the process once this returns).
ConsoleHandler = Callable[[int], bool]


def process_facts(pid: int) -> ProcessFacts:
    """What Windows says of process ``pid``; ``UNKNOWN`` on other systems."""
    if sys.platform == "win32" and pid > 0:
        return _process_facts(pid)
    return UNKNOWN


def add_console_handler(handler: ConsoleHandler) -> Callable[[], None] | None:
    """Have Windows call ``handler(event)`` on console events (SetConsoleCtrlHandler),
    before the handlers added earlier (Python's own, which turns Ctrl-C into
    SIGINT and Ctrl-Break into SIGBREAK). Windows calls it in a thread of its own.

    Returns the function that removes it again (keep it until then: it holds
    what Windows calls); None where there is no Windows console.
    """
    if sys.platform == "win32":
        return _add_console_handler(handler)
    return None


if sys.platform == "win32":
    import ctypes
    import functools
    from ctypes import wintypes

    _PROCESS_QUERY_LIMITED_INFORMATION = 0x1000  # enough for times and exit code
    _ERROR_INVALID_PARAMETER = 87  # OpenProcess on a pid no process has
    _HANDLER_ROUTINE = ctypes.WINFUNCTYPE(wintypes.BOOL, wintypes.DWORD)

    @functools.cache
    def _kernel32() -> ctypes.WinDLL:
        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
        kernel32.OpenProcess.argtypes = (wintypes.DWORD, wintypes.BOOL, wintypes.DWORD)
        kernel32.OpenProcess.restype = wintypes.HANDLE
        kernel32.GetExitCodeProcess.argtypes = (wintypes.HANDLE, ctypes.POINTER(wintypes.DWORD))
        kernel32.GetExitCodeProcess.restype = wintypes.BOOL
        kernel32.GetProcessTimes.argtypes = (
            wintypes.HANDLE,
            *(ctypes.POINTER(wintypes.FILETIME),) * 4,
        )
        kernel32.GetProcessTimes.restype = wintypes.BOOL
        kernel32.CloseHandle.argtypes = (wintypes.HANDLE,)
        kernel32.CloseHandle.restype = wintypes.BOOL
        kernel32.SetConsoleCtrlHandler.argtypes = (_HANDLER_ROUTINE, wintypes.BOOL)
        kernel32.SetConsoleCtrlHandler.restype = wintypes.BOOL
        return kernel32

    def _process_facts(pid: int) -> ProcessFacts:
        kernel32 = _kernel32()
        handle = kernel32.OpenProcess(_PROCESS_QUERY_LIMITED_INFORMATION, False, pid)
        if not handle:
            gone = ctypes.get_last_error() == _ERROR_INVALID_PARAMETER
            return ProcessFacts(False) if gone else UNKNOWN
        try:
            code = wintypes.DWORD()
            answered = kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
            exit_code = code.value if answered else None
            times = [wintypes.FILETIME() for _ in range(4)]  # creation, exit, kernel, user
            created = None
            if kernel32.GetProcessTimes(handle, *(ctypes.byref(t) for t in times)):
                created = (times[0].dwHighDateTime << 32) | times[0].dwLowDateTime
            return ProcessFacts(True, exit_code, created)
        finally:
            kernel32.CloseHandle(handle)

    def _add_console_handler(handler: ConsoleHandler) -> Callable[[], None] | None:
        def routine(event: int) -> bool:
            try:
                return bool(handler(event))
            except BaseException:  # nothing may escape into the system's thread
                return False

        callback = _HANDLER_ROUTINE(routine)
        kernel32 = _kernel32()
        if not kernel32.SetConsoleCtrlHandler(callback, True):
            return None

        def remove() -> None:
            kernel32.SetConsoleCtrlHandler(callback, False)  # the closure keeps callback alive

        return remove
