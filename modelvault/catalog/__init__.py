"""The catalog's rules: what a model, a tag and a link may be, and how each is written.

Inside a caller's transaction: ``values`` (a model's fields checked, the meta keys
modelvault writes), ``stamp_meta`` (a file's stamp in meta), ``tags``, ``settle``
(a hashed file into the catalog) and ``combine`` (two records of one content made
one). One transaction each, on a ``CatalogAccess``: ``crud``, ``browse``,
``staging`` and ``curation`` (what a person changes; ``staged_rows`` and
``deleted`` serve it). ``records`` are the frozen rows every public call returns.
"""
