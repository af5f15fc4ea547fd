"""What the header parsers share: the Header they make, the requests they yield, the limits.

A parser is a generator: it yields ``Need(n)`` (send back the next ``n`` bytes)
or ``Skip(n)`` (pass over them), and returns a ``Header``; it raises
``HeaderProblem`` where the file is not what it claims. ``header._Driver``
runs it on the bytes of a file as they come.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

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


class TensorTable(Mapping[str, TensorInfo]):
    """Tensors as a header declares them, each ``TensorInfo`` made only when asked for.

    The family rules look at the shapes of a few tensors by name, so a header of
    thousands is not turned into thousands of objects: ``shapes`` maps every name
    to its shape as parsed (a list, never changed), ``dtypes`` to its dtype."""

    __slots__ = ("dtypes", "shapes")

    def __init__(self, dtypes: Mapping[str, str], shapes: Mapping[str, Sequence[int]]) -> None:
        self.dtypes = dtypes
        self.shapes = shapes

    def __getitem__(self, name: str) -> TensorInfo:
        return TensorInfo(self.dtypes[name], tuple(self.shapes[name]))

    def __contains__(self, name: object) -> bool:
        return name in self.shapes

    def __iter__(self) -> Iterator[str]:
        return iter(self.shapes)

    def __len__(self) -> int:
        return len(self.shapes)

    def __repr__(self) -> str:
        return f"TensorTable({len(self)} tensors)"


def shapes_of(tensors: Mapping[str, TensorInfo]) -> Mapping[str, Sequence[int]]:
    """Every tensor's shape by name (a ``TensorTable``'s own, at no cost)."""
    if isinstance(tensors, TensorTable):
        return tensors.shapes
    return {name: t.shape for name, t in tensors.items()}


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
