"""A view of a header's tensor names and shapes, for the family rules to ask questions of."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from modelvault.identify.parsing import TensorInfo, shapes_of


class Keys:
    """Tensor names (a common prefix taken off) and their shapes."""

    def __init__(self, shapes: Mapping[str, Sequence[int]]) -> None:
        self.shapes = shapes

    @classmethod
    def of(cls, tensors: Mapping[str, TensorInfo], prefix: str = "") -> Keys:
        """The tensors whose names start with ``prefix``, without it."""
        everything = cls(shapes_of(tensors))
        return everything.under(prefix) if prefix else everything

    def under(self, prefix: str) -> Keys:
        """The tensors whose names start with ``prefix``, without it."""
        cut = len(prefix)
        return Keys({name[cut:]: s for name, s in self.shapes.items() if name.startswith(prefix)})

    def __len__(self) -> int:
        return len(self.shapes)

    def has(self, *names: str) -> bool:
        """True if every one of ``names`` is a tensor."""
        return all(name in self.shapes for name in names)

    def dim(self, name: str, axis: int) -> int | None:
        """The size of ``name`` along ``axis`` (negative counts from the end), if it has one."""
        shape = self.shapes.get(name)
        if shape is None or not -len(shape) <= axis < len(shape):
            return None
        return shape[axis]

    def rank(self, name: str) -> int | None:
        shape = self.shapes.get(name)
        return None if shape is None else len(shape)

    def starts(self, *prefixes: str) -> bool:
        """True if some tensor's name starts with one of ``prefixes``."""
        return any(name.startswith(prefixes) for name in self.shapes)

    def count_prefixed(self, prefix: str) -> int:
        return sum(1 for name in self.shapes if name.startswith(prefix))

    def blocks(self, prefix: str) -> int:
        """How many numbered blocks ``prefix<n>.`` there are: the highest n, plus one."""
        return highest_index(self.shapes, prefix) + 1

    def first_dim(self, names: Iterable[str], axis: int) -> int | None:
        """``dim`` of the first of ``names`` that is a tensor."""
        for name in names:
            if name in self.shapes:
                return self.dim(name, axis)
        return None


def highest_index(names: Iterable[str], prefix: str, separator: str = ".") -> int:
    """The highest n of the names ``prefix<n><separator>...``; -1 where there is none."""
    highest = -1
    cut = len(prefix)
    for name in names:
        if name.startswith(prefix):
            digits = name[cut:].split(separator, 1)[0]
            if digits.isdigit() and len(digits) < 6:
                highest = max(highest, int(digits))
    return highest
