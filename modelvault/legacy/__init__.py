"""The legacy catalog (``hikaze_mm.sqlite3``), read-only, and its rows in v3 form.

``reader.open_legacy`` checks and opens a file (``file``, ``layout``); its
``LegacyCatalog`` reads the rows in batches (``order``, ``link_reads``).
``rows`` turns a row into catalog values, ``tags`` the legacy tags,
``placement`` decides where a row goes, and ``images`` copies the preview images
the rows name. Nothing here writes to the legacy file or anywhere beside it; the
writer is ``modelvault.migration.importer``.
"""
