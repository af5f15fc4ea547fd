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
import stat
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from modelvault.hashing import open_regular_file

__all__ = [
    "FIRST_READ_BYTES",
    "MAX_HEADER_BYTES",
    "Header",
    "HeaderReader",
    "TensorInfo",
    "read_header",
]

# The largest header read: what the safetensors library itself accepts. Real
# headers are a few KB (a LoRA) to a few MB (a GGUF with a tokenizer).
MAX_HEADER_BYTES = 100_000_000

# read_header's first read: most LoRA and VAE headers fit; a checkpoint's
# (~300 KB) takes a second read. Read-ahead makes the first 128 KiB cost one seek.
FIRST_READ_BYTES = 128 * 1024

# Formats (Header.format).
SAFETENSORS = "safetensors"
GGUF = "gguf"
PICKLE = "pickle"
PYTORCH_ZIP = "pytorch-zip"
ZIP = "zip"
EMPTY = "empty"
UNKNOWN = "unknown"

MetaScalar = str | int | float | bool
MetaValue = MetaScalar | list[MetaScalar]


class TensorInfo(NamedTuple):
    """One tensor as the header declares it: its type and its shape (outermost first).

    A named tuple, not a dataclass: a checkpoint has thousands, made in a tight loop."""

    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Header:
    """What a file's header says.

    ``format``: ``"safetensors"``, ``"gguf"``, ``"pickle"`` (a pickled PyTorch
    checkpoint: never unpickled), ``"pytorch-zip"`` (PyTorch's zip format),
    ``"zip"``, ``"empty"`` or ``"unknown"``. ``tensors`` maps each tensor's name
    to its dtype and shape; ``metadata`` is the safetensors ``__metadata__`` (all
    strings) or the GGUF key/values (long GGUF arrays are left out).
    ``data_start`` is the offset of the first byte after the header (where a
    safetensors file's tensor data, AutoV3's input, begins), None where no
    header was read whole. ``problem`` is one sentence saying what is wrong with
    the file, or None; what could be read is kept beside it.
    """

    format: str
    size: int
    tensors: Mapping[str, TensorInfo] = field(default_factory=dict)
    metadata: Mapping[str, MetaValue] = field(default_factory=dict)
    data_start: int | None = None
    problem: str | None = None


class Need:
    """A parser's request: the next ``n`` bytes, sent back as ``bytes``."""

    __slots__ = ("n",)

    def __init__(self, n: int) -> None:
        self.n = n


class Skip:
    """A parser's request: pass over the next ``n`` bytes (nothing is kept or sent)."""

    __slots__ = ("n",)

    def __init__(self, n: int) -> None:
        self.n = n


Request = Need | Skip
Parser = Generator[Request, bytes | None, Header]


class HeaderProblem(Exception):
    """Raised inside a parser: the file is not what its header claims (the message says why)."""

    def __init__(self, message: str, file_format: str = UNKNOWN) -> None:
        super().__init__(message)
        self.file_format = file_format


def read_bytes(n: int) -> Generator[Request, bytes | None, bytes]:
    """``data = yield from read_bytes(n)`` in a parser."""
    data = yield Need(n)
    assert isinstance(data, bytes)
    return data


class _Driver:
    """Answers a parser's requests from the bytes given to ``give``, in file order."""

    def __init__(self, size: int, limit: int) -> None:
        from modelvault.identify.sniff import parse_file  # the parsers import this module

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
        if size < 0:
            raise ValueError(f"size must not be negative, not {size!r}")
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
        assert stat.S_ISREG(st.st_mode)
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
