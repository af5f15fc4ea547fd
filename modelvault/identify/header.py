"""What a model file's header says, read without ever loading the model.

A ``Header`` is read in one of two ways, which give the same result:

- ``HeaderReader``, fed the bytes another loop already reads (the hasher's
  chunks, in file order, of any size from one byte up), so the header costs no
  second open and no extra read: ``feed(chunk)`` returns False as soon as the
  header is complete, and the caller stops feeding it.
- ``read_header(path)``, for a file catalogued before: one small read, and one
  more only where the header is longer than that first read (a GGUF header,
  whose length is not written up front, may take a few).

The parsers (``safetensors_format``, ``gguf``) are generators that ask for the
bytes they need next (``Need``/``Skip``); ``_Driver`` answers them from
whatever bytes have come so far. Nothing is allocated from a length a file
declares before that length is checked against the file's size and the limits
below, and a damaged or hostile file gives ``Header.problem``, never an
exception.
"""

from __future__ import annotations

import os

from modelvault.errors import ValidationError
from modelvault.hashing import open_regular_file
from modelvault.identify.parsing import (
    FIRST_READ_BYTES,
    MAX_HEADER_BYTES,
    UNKNOWN,
    Header,
    HeaderProblem,
    Request,
    Skip,
)
from modelvault.identify.sniff import parse_file

__all__ = ["HeaderReader", "read_header"]


class _Driver:
    """Answers a parser's requests from the bytes given to ``give``, in file order."""

    def __init__(self, size: int, limit: int) -> None:
        self._size = size
        self._limit = limit
        self._parser = parse_file(size)
        self._pending = bytearray()
        self._pos = 0  # bytes of _pending already taken
        self._consumed = 0  # bytes of the file the parser has taken or skipped
        self._request: Request | None = None
        self.header: Header | None = None
        self._advance(None)

    def needed(self) -> int:
        """How many more bytes the parser is known to want (0 once finished)."""
        if self._request is None:
            return 0
        return max(self._request.n - (len(self._pending) - self._pos), 1)

    def give(self, data: bytes | bytearray | memoryview) -> None:
        if self._request is None:
            return
        if self._pos > len(self._pending) // 2:  # drop what was taken, now and then
            del self._pending[: self._pos]
            self._pos = 0
        self._pending += data  # a copy: the caller may reuse its buffer
        while self._request is not None:
            request = self._request
            available = len(self._pending) - self._pos
            if isinstance(request, Skip):
                taken = min(request.n, available)
                self._pos += taken
                self._consumed += taken
                request.n -= taken
                if request.n:
                    return
                self._advance(None)
            elif available < request.n:
                return
            else:
                chunk = bytes(self._pending[self._pos : self._pos + request.n])
                self._pos += request.n
                self._consumed += request.n
                self._advance(chunk)

    def finish(self) -> Header:
        """The header; where the bytes ended before the parser was done, a problem says so."""
        if self.header is None:
            self._done(_ended(self._size))
        assert self.header is not None
        return self.header

    def _advance(self, answer: bytes | None) -> None:
        try:
            request = self._parser.send(answer)
        except StopIteration as done:
            self._done(done.value)
            return
        except HeaderProblem as bad:
            self._done(Header(format=bad.file_format, size=self._size, problem=str(bad)))
            return
        end = self._consumed + request.n
        if end > self._size:
            self._done(_ended(self._size))
        elif end > self._limit:
            self._done(_too_long(self._size, self._limit))
        else:
            self._request = request

    def _done(self, header: Header) -> None:
        self.header = header
        self._request = None
        self._pending = bytearray()
        self._pos = 0
        self._parser.close()


def _ended(size: int) -> Header:
    return Header(
        format=UNKNOWN,
        size=size,
        problem=(
            f"The file ends inside its header (it has {size:,} bytes): "
            "it is damaged or incomplete; download it again."
        ),
    )


def _too_long(size: int, limit: int) -> Header:
    return Header(
        format=UNKNOWN,
        size=size,
        problem=(
            f"The file's header runs past {limit:,} bytes, more than any model header: "
            "it is damaged or not a model file."
        ),
    )


class HeaderReader:
    """Reads a file's header from the bytes fed to it, in file order, chunk by chunk.

    ``size`` is the file's size (the hasher has it from ``stat``). Feed each
    chunk read, of any length, while ``feed`` returns True; then ``result()``.
    The reader copies what it keeps (so the caller may reuse its buffer) and
    keeps at most the header and one chunk. ``result()`` before the reader is
    satisfied (the file ended early) gives a Header whose ``problem`` says so.
    """

    def __init__(self, size: int, *, limit: int = MAX_HEADER_BYTES) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValidationError(f"size must be a file's size in bytes, not {size!r}.")
        self._driver = _Driver(size, limit)

    @property
    def wants_more(self) -> bool:
        return self._driver.header is None

    @property
    def data_start(self) -> int | None:
        """Where the data after the header begins, once the header is read (else None)."""
        header = self._driver.header
        return None if header is None else header.data_start

    def feed(self, chunk: bytes | bytearray | memoryview) -> bool:
        """Take the next bytes of the file; True while the reader wants more."""
        self._driver.give(chunk)
        return self._driver.header is None

    def needed(self) -> int:
        """At least how many more bytes the reader wants (0 once it has the header)."""
        return self._driver.needed()

    def result(self) -> Header:
        return self._driver.finish()


def read_header(
    path: str | os.PathLike[str],
    *,
    first_read: int = FIRST_READ_BYTES,
    limit: int = MAX_HEADER_BYTES,
) -> Header:
    """The header of the file at ``path``, with one small read (more only for a longer header).

    Only regular files are opened (a FIFO or device is refused unopened with
    ``NotRegularFileError``); the ``OSError`` of opening or reading comes as it
    is (``FileNotFoundError``, ``PermissionError``, ...). Whatever is wrong with
    the file's content is ``Header.problem``.
    """
    with open_regular_file(path) as handle:
        st = os.fstat(handle.fileno())
        reader = HeaderReader(st.st_size, limit=limit)
        want = min(first_read, st.st_size)
        while reader.wants_more:
            data = os.read(handle.fileno(), want)
            if not data:
                break
            reader.feed(data)
            # The parser knows what it needs next; a GGUF's needs come in steps, so read ahead.
            want = max(reader.needed(), first_read)
        return reader.result()
