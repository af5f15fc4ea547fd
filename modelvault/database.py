"""DatabaseManager: one catalog, a thin facade over its parts.

How the catalog is reached (its engine, schema lifecycle and sessions) is
``modelvault.db.access``; models, tags, lookups and listings are
``modelvault.catalog`` (``crud``, ``browse``, ``staging``, ``curation``). Every
public method opens and closes its own transaction and returns plain records
(``modelvault.catalog.records``), so results stay usable after the session is
gone and can be handed to other threads.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from modelvault.catalog import browse, crud, curation, staging
from modelvault.catalog.browse import ModelFilter
from modelvault.catalog.deleted import DeletedEntry
from modelvault.catalog.records import ModelRecord, PendingRecord, QueueTotals, TagRecord
from modelvault.db.access import CatalogAccess
from modelvault.errors import ConfigError
from modelvault.images import ImageStore, default_store


class DatabaseManager(CatalogAccess):
    """The catalog at a URL, a file path or an existing Engine: its public methods,
    each one transaction (``CatalogAccess``: how it is reached)."""

    def __repr__(self) -> str:
        return f"DatabaseManager({self.display_url!r})"

    @property
    def images_dir(self) -> Path | None:
        """The absolute folder of the catalog's preview image store, or None if it has none.

        ``settings.images_dir`` (``MODELVAULT_IMAGES_DIR``) when set, else the
        folder ``images/`` beside a SQLite catalog file; a PostgreSQL or
        in-memory catalog has a store only when the setting names one. The
        folder is created when the first image is stored.
        """
        return default_store(self.url, self.settings.images_dir)  # not the read-only URI

    def preview_path(self, preview: Mapping[str, Any] | str) -> Path:
        """The absolute path of a stored preview: an entry of a model's
        ``meta["previews"]``, or its ``file``. ``ValidationError`` for anything
        that is not a stored name, ``ConfigError`` if the catalog has no store."""
        folder = self.images_dir
        if folder is None:
            raise ConfigError(
                f"the catalog at {self.display_url} has no image store: "
                "set MODELVAULT_IMAGES_DIR to the folder of its preview images."
            )
        return ImageStore(folder).path_of(preview)

    # -- models: catalog.crud, catalog.browse -------------------------------

    def upsert_model(self, data: Mapping[str, Any]) -> ModelRecord:
        """Add a model, or update the fields given for a sha256 already catalogued.

        ``data`` holds model columns (``sha256`` and ``path`` at least for a new
        model) and optionally ``tags``: names or ``{"name", "color"}`` mappings.
        """
        return crud.save_model(self, data)

    def get_model(self, sha256: str) -> ModelRecord | None:
        return crud.get_model(self, sha256)

    def get_model_by_path(self, path: str) -> ModelRecord | None:
        """The model of the file at ``path``, however the path is spelt (on Windows
        ``c:\\models\\a.ckpt`` and ``C:/Models/A.ckpt`` are one file: ``modelvault.pathkey``)."""
        return crud.get_model_by_path(self, path)

    def find_models(
        self,
        *,
        tags: Iterable[str] = (),
        model_type: str | None = None,
        search: str | None = None,
        missing: bool = False,
        under: Iterable[str | os.PathLike[str]] = (),
        limit: int | None = None,
        offset: int = 0,
        unreachable: bool = False,
        untagged: bool = False,
        sort: str = "name",
        base: str | None = None,
    ) -> list[ModelRecord]:
        """Models in the order ``sort`` says, one page of them (``offset``, ``limit``):
        by ``name`` (any case), ``size`` (biggest first), ``added`` (newest first),
        ``type`` or ``path``; names then paths break ties.

        Only those carrying every tag in ``tags`` (with ``untagged``: no tag at all),
        of ``model_type``, of the base model ``base`` (any case), with ``search`` in
        their name or path (any case), under one
        of the folders ``under`` (in any spelling of it: ``modelvault.pathkey``); with
        ``missing`` only those whose file is gone, with ``unreachable`` only those
        whose file cannot be looked at now (a folder that cannot be read, a share that
        is not there: see ``modelvault.presence``), with both either. Two queries per
        page, however many tags the models have.
        """
        filters = ModelFilter(tags, model_type, search, under, untagged, base, missing, unreachable)
        return browse.find_models(self, filters, limit=limit, offset=offset, sort=sort)

    def count_models(
        self,
        *,
        tags: Iterable[str] = (),
        model_type: str | None = None,
        search: str | None = None,
        missing: bool = False,
        under: Iterable[str | os.PathLike[str]] = (),
        unreachable: bool = False,
        untagged: bool = False,
        base: str | None = None,
    ) -> int:
        """How many models ``find_models`` lists with these filters and no limit."""
        filters = ModelFilter(tags, model_type, search, under, untagged, base, missing, unreachable)
        return browse.count_models(self, filters)

    def find_model(self, key: str) -> ModelRecord:
        """The model named by a SHA-256, a unique prefix of one (4+ hex digits, any
        case: Civitai's AutoV2 is the first 10), its AutoV3 or the start of it (10+
        digits: A1111 writes 12), its path, or its file name when only one model has it.

        ``NotFoundError`` when nothing matches, ``ValidationError`` when a
        prefix or name matches several models.
        """
        return browse.find_model(self, key)

    def get_models_by_tag(self, name: str) -> list[ModelRecord]:
        return crud.get_models_by_tag(self, name)

    def staging_counts(self) -> dict[str, int]:
        """How many staging rows are in each status (every status listed, zeros included)."""
        return staging.staging_counts(self)

    def claimable_totals(self) -> QueueTotals:
        """Files still waiting to be hashed (pending or claimed rows), their known bytes,
        and how many have no known size."""
        return staging.claimable_totals(self)

    def catalog_counts(self) -> dict[str, int]:
        """Models, tags and tag links in the catalog."""
        return crud.catalog_counts(self)

    # -- tags -----------------------------------------------------------------

    def create_tag(self, name: str, color: str | None = None) -> TagRecord:
        """Create a tag (name trimmed and lower-cased, colour as ``#rrggbb``)."""
        return crud.create_tag(self, name, color)

    def get_tag(self, name: str) -> TagRecord | None:
        return crud.get_tag(self, name)

    def list_tags(self) -> list[tuple[TagRecord, int]]:
        """Every tag with the number of models that carry it, by name."""
        return crud.list_tags(self)

    def tag_model(self, sha256: str, tag_id: int) -> None:
        """Link a tag to a model (idempotent; a new link is a change of the model's
        ``updated_at``). Unknown model or tag: ``NotFoundError``."""
        crud.tag_model(self, sha256, tag_id)

    def untag_model(self, sha256: str, tag_id: int) -> bool:
        """Remove a link; returns whether there was one."""
        return crud.untag_model(self, sha256, tag_id)

    def get_tags_for_model(self, sha256: str) -> list[TagRecord]:
        return crud.get_tags_for_model(self, sha256)

    # -- curating: each one transaction (see modelvault.catalog.curation) ------

    def ensure_tag(self, name: str, color: str | None = None) -> TagRecord:
        """The tag, created if there is none; an existing one keeps its colour."""
        return curation.ensure_tag(self, name, color)

    def rename_tag(self, old: str, new: str, *, merge: bool = False) -> curation.TagChange:
        """Rename a tag; into an existing one only with ``merge``."""
        return curation.rename_tag(self, old, new, merge=merge)

    def set_tag_color(self, name: str, color: str | None) -> TagRecord:
        return curation.set_tag_color(self, name, color)

    def delete_tag(self, name: str) -> curation.TagChange:
        return curation.delete_tag(self, name)

    def add_tags(self, key: str, names: Iterable[str], color: str | None = None) -> ModelRecord:
        """Tag the model ``key`` (as ``find_model`` takes it), creating tags as needed."""
        return curation.add_tags(self, self.find_model(key).sha256, names, color)[0]

    def remove_tags(self, key: str, names: Iterable[str]) -> ModelRecord:
        return curation.remove_tags(self, self.find_model(key).sha256, names)[0]

    def update_model(self, key: str, **changes: Any) -> ModelRecord:
        """Change ``name``, ``type``, ``base``, ``note`` or ``meta`` keys of the model ``key``."""
        return curation.update_model(self, self.find_model(key).sha256, **changes)

    def delete_model(self, key: str) -> ModelRecord:
        """Delete the model's entry and links (never its file), kept in ``deleted_records``."""
        return curation.delete_models(self, [self.find_model(key).sha256])[0]

    def forget_pending(
        self, ids: Iterable[int] = (), *, statuses: Iterable[str] = ()
    ) -> list[PendingRecord]:
        return curation.forget_pending(self, ids, statuses=statuses)

    def find_copies(self, sha256: str) -> curation.Copies:
        """The model of a content and every staging row found to hold it."""
        return curation.find_copies(self, sha256)

    def deleted_records(self, *, limit: int | None = None) -> list[DeletedEntry]:
        return curation.deleted_records(self, limit=limit)

    # -- staging rows: catalog.staging ---------------------------------------

    def add_pending_import(self, data: Mapping[str, Any]) -> PendingRecord:
        """Stage a file to be hashed by the workers."""
        return staging.add_pending_import(self, data)

    def get_pending_imports(
        self,
        status: str | Iterable[str] | None = None,
        *,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[PendingRecord]:
        """Staging rows, oldest first, optionally only those in the given status(es)."""
        return staging.get_pending_imports(self, status, limit=limit, offset=offset)

    def remove_pending_import(self, path: str) -> bool:
        """Delete the staging row of ``path``; returns whether there was one."""
        return staging.remove_pending_import(self, path)
