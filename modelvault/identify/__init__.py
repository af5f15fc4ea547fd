"""Identification of model files from their headers: format, family, kind, training metadata.

The small API the worker and the command line build on (``identify.catalog``
writes what it finds to a model; ``identify.refresh`` is the ``identify`` command's):

- ``HeaderReader(size)``: fed the chunks the hasher reads (``feed(chunk)``
  while it returns True), then ``result()``: a ``Header``.
- ``read_header(path)``: the same from a file, with one small read.
- ``identify(header, file_name=None)``: an ``Identity`` (base, kind, source,
  architecture, trigger words, resolution, title, training keys, problem);
  ``Identity.to_meta()`` is the JSON for ``meta.identify``.
- ``AutoV3(reader)``: Civitai's AutoV3 from the same chunks; ``autov2(sha256)``.
- ``BASES`` and ``KINDS``: the fixed vocabularies (docs/IDENTIFY.md).

Nothing here raises on a damaged or hostile file: what is wrong is
``Header.problem`` and ``Identity.problem``, one sentence each.
"""

from __future__ import annotations

from modelvault.identify.hashes import AUTOV2_LENGTH, AUTOV3_SHORT_LENGTH, AutoV3, autov2
from modelvault.identify.header import HeaderReader, read_header
from modelvault.identify.identify import identify
from modelvault.identify.identity import BASES, KINDS, Base, Identity
from modelvault.identify.parsing import FIRST_READ_BYTES, MAX_HEADER_BYTES, Header, TensorInfo

__all__ = [
    "AUTOV2_LENGTH",
    "AUTOV3_SHORT_LENGTH",
    "BASES",
    "FIRST_READ_BYTES",
    "KINDS",
    "MAX_HEADER_BYTES",
    "AutoV3",
    "Base",
    "Header",
    "HeaderReader",
    "Identity",
    "TensorInfo",
    "autov2",
    "identify",
    "read_header",
]
