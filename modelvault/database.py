"""DatabaseManager: one catalog, its schema migrations, sessions and CRUD.

Every public method opens and closes its own transaction and returns plain
records (``modelvault.records``), so results stay usable after the session is
gone and can be handed to other threads.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import re
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import URL, Engine, and_, delete, func, inspect, or_, select, text, update
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.orm import Session, selectinload

from modelvault import catalog, curation
from modelvault.browse import file_states, sort_order, with_file_state
from modelvault.config import (
    Settings,
    default_db_url,
    mask_password,
    parse_url,
    shown_url,
    sqlite_url,
)
from modelvault.db.deadline import NoAnswer
from modelvault.db.engine import (
    SQLITE_BEGIN,
    create_catalog_engine,
    is_sqlite,
    set_journal_mode,
    sqlite_file,
)
from modelvault.db.keyed import keys_under, same_file
from modelvault.db.models import Model, PendingImport, PendingStatus, Tag, model_tags
from modelvault.db.network import journal_mode_for, network_filesystem
from modelvault.db.sqlite_files import (
    APPLICATION_ID,
    SqliteFile,
    create_marked_file,
    describe_application_id,
    look_at,
)
from modelvault.db.types import utcnow
from modelvault.errors import (
    AlreadyExistsError,
    CatalogError,
    CatalogNotAnsweringError,
    ConfigError,
    ModelVaultError,
    NotACatalogError,
    NotFoundError,
    SchemaVersionError,
    ValidationError,
)
from modelvault.identify.catalog import AUTOV3
from modelvault.identify.hashes import AUTOV2_LENGTH
from modelvault.images import ImageStore, default_store
from modelvault.legacy.layout import TABLES as LEGACY_TABLES
from modelvault.legacy.layout import V3_TABLES
from modelvault.normalize import normalize_color, normalize_sha256, normalize_tag_name
from modelvault.pathkey import absolute
from modelvault.records import ModelRecord, PendingRecord, QueueTotals, TagRecord

log = logging.getLogger(__name__)

_HEX_PREFIX = re.compile(r"[0-9a-fA-F]{4,64}")

# Any fixed number: PostgreSQL advisory lock held while one process migrates,
# so several workers starting at once don't race to create the tables.
_MIGRATION_LOCK_KEY = 0x6D76_0003

PENDING_FIELDS = (
    "path",
    "name",
    "type",
    "base",
    "size_bytes",
    "created_at",
    "meta",
    "tags",
    "legacy_id",
    "source",
    "status",
    "attempts",
    "last_error",
    "sha256",
)


def migrations_dir() -> Path:
    """Where the Alembic scripts are: inside an installed wheel, or the source checkout."""
    packaged = Path(__file__).parent / "migrations"
    return packaged if packaged.is_dir() else Path(__file__).parent.parent / "alembic"


def alembic_config() -> Config:
    """An Alembic config without an ini file (so the app's logging stays untouched)."""
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    return config


@functools.cache
def packaged_revisions() -> tuple[str, frozenset[str]]:
    """The head revision and every known one, read from the migration scripts once
    per process (``init_db`` runs for every catalog opened)."""
    script = ScriptDirectory.from_config(alembic_config())
    head = script.get_current_head()
    assert head is not None, "the packaged migrations have no head revision"
    return head, frozenset(s.revision for s in script.walk_revisions())


class DatabaseManager:
    """The catalog at a URL, a file path or an existing Engine."""

    def __init__(
        self,
        target: str | os.PathLike[str] | Engine | None = None,
        *,
        settings: Settings | None = None,
        read_only: bool = False,
    ) -> None:
        """``read_only`` opens the catalog so that nothing can be written to it:
        for looking only, without write access; ``init_db`` then checks the
        catalog instead of migrating it.

        The folder of a SQLite catalog must exist, except the default data
        folder, which is created.
        """
        self.settings = settings or Settings.from_env()
        self.read_only = read_only
        self._owns_engine = not isinstance(target, Engine)
        if isinstance(target, Engine):
            self.engine = target
            self.url = target.url
        else:
            self.url = self.url_for(target, self.settings)
            if not read_only:  # looking needs no folder: init_db says the catalog is missing
                _check_sqlite_folder(self.url)
            self.engine = create_catalog_engine(
                self.url, read_only=read_only, settings=self.settings
            )

    @staticmethod
    def url_for(target: str | os.PathLike[str] | None, settings: Settings) -> URL:
        """The URL a manager for ``target`` (None: the settings' catalog) would open."""
        return parse_url(settings.db_url if target is None else as_url(target))

    def __repr__(self) -> str:
        return f"DatabaseManager({self.display_url!r})"

    @property
    def display_url(self) -> str:
        """The URL with any password hidden, fit for messages and logs."""
        return shown_url(self.url)

    @property
    def is_sqlite(self) -> bool:
        return is_sqlite(self.engine)

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

    def dispose(self) -> None:
        """Close pooled connections (only those of an engine we created)."""
        if self._owns_engine:
            self.engine.dispose()

    # -- schema ---------------------------------------------------------------

    def init_db(self, *, adopt_empty: bool = True) -> str:
        """Migrate the catalog to the newest revision; cheap when it is there already.

        Returns the revision. Anything that is not a modelvault catalog (another
        app's database, a legacy catalog, a catalog written by a newer
        modelvault) is refused before anything is written to it or beside it.
        A new SQLite catalog file is created marked as ours (its application id);
        an empty file, or a SQLite file without tables, is made a catalog only
        with ``adopt_empty`` (the command line: only ``init`` does). A read-only
        manager only checks that the catalog is there at the newest revision.
        """
        head, _known = packaged_revisions()
        if self.read_only:
            self.check()
            return head
        if not self.check(adopt_empty=adopt_empty):
            _create_catalog_file(Path(sqlite_file(self.url) or ""))
        self._migrate(head)
        # After the tables exist: switching an empty file to WAL leaves its header
        # unwritten until a checkpoint, and a new connection meanwhile sees no tables.
        with self.translate_errors():
            set_journal_mode(self.engine, journal_mode_for(self.network_filesystem))
        return head

    def check(self, *, adopt_empty: bool = False) -> bool:
        """Refuse what ``init_db(adopt_empty=...)`` would refuse, writing nothing.

        Returns whether the database is there (False: a SQLite catalog file
        that ``init_db`` creates). A read-only manager refuses what it could
        not read: no catalog there, an empty one, one at another revision.
        """
        head, known = packaged_revisions()
        if self.read_only:
            self._check_read_only(head, known)
            return True
        file = sqlite_file(self.url)
        if file is None:
            self._check_connected(known)
            return True
        seen = look_at(file, busy_timeout_seconds=self.settings.sqlite_busy_timeout_seconds)
        _refuse_unless_ours(seen, known, adopt_empty=adopt_empty)
        return seen.exists

    @functools.cached_property
    def network_filesystem(self) -> str | None:
        """The network file system a SQLite catalog file is on (``"nfs4"``, ``"a
        network share"``, ...), or None. There the catalog is kept in
        rollback-journal mode instead of WAL (see ``modelvault.db.network``)."""
        file = sqlite_file(self.url)
        return None if file is None else network_filesystem(Path(file).parent)

    def _migrate(self, head: str) -> None:
        with self.translate_errors(), self.engine.connect() as conn:
            conn = conn.execution_options(**{SQLITE_BEGIN: "IMMEDIATE"})
            with conn.begin():
                if conn.dialect.name == "postgresql":
                    conn.execute(
                        text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY}
                    )
                else:
                    _mark_as_ours(conn)
                current = MigrationContext.configure(conn).get_current_revision()
                if current == head:
                    return
                log.info("migrating catalog %s from %s to %s", self.display_url, current, head)
                config = alembic_config()
                config.attributes["connection"] = conn
                command.upgrade(config, "head")

    def _check_connected(self, known: frozenset[str]) -> str | None:
        """The catalog's revision (None: an empty database), or a ``NotACatalogError``.

        Looks at the tables only, in a read transaction, so a foreign database is
        refused before anything is written to it.
        """
        with self.translate_errors(), self.engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
            revision = MigrationContext.configure(conn).get_current_revision()
        return _catalog_revision(self.display_url, tables, revision, known)

    def _check_read_only(self, head: str, known: frozenset[str]) -> None:
        file = sqlite_file(self.url)
        if file is None:
            revision = self._check_connected(known)
        else:
            seen = look_at(file, busy_timeout_seconds=self.settings.sqlite_busy_timeout_seconds)
            if not seen.exists:
                raise CatalogError(
                    f"there is no catalog at {file}: check --db, or create one with "
                    "`modelvault init` or `modelvault migrate LEGACY`."
                )
            revision = _catalog_revision(
                file, seen.tables, seen.revision, known, seen.application_id
            )
        where = file or self.display_url
        if revision is None:
            raise CatalogError(
                f"the database at {where} is empty: make it a catalog with "
                f"`modelvault init{'' if file is None else f' --db {file}'}`."
            )
        if revision != head:
            raise SchemaVersionError(
                f"the catalog at {where} is at an older schema "
                f"({revision}): upgrade it with `modelvault init`."
            )

    def current_revision(self) -> str | None:
        with self.translate_errors(), self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    # -- sessions -------------------------------------------------------------

    @contextmanager
    def session_scope(self, *, immediate: bool = False) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on error.

        ``immediate`` takes SQLite's write lock at BEGIN. Use it for every
        transaction that writes: a SQLite transaction that reads first and
        writes later fails at once ("database is locked", no busy wait) if
        another connection committed in between. Other backends ignore it.
        """
        with self.translate_errors(), self.engine.connect() as conn:
            if immediate:
                conn = conn.execution_options(**{SQLITE_BEGIN: "IMMEDIATE"})
            with Session(bind=conn, expire_on_commit=False) as session, session.begin():
                yield session

    @contextmanager
    def translate_errors(self) -> Iterator[None]:
        """Driver errors become ``CatalogError`` (or ``ValidationError`` for a value
        that cannot be stored), chained, with a hint of what to do."""
        try:
            yield
        except ModelVaultError:
            raise
        except DBAPIError as exc:
            if isinstance(exc.orig, NoAnswer):
                raise CatalogNotAnsweringError(self.display_url, exc.orig.seconds) from exc
            raise CatalogError(
                f"the catalog at {self.display_url} failed: {_driver_message(exc)}; "
                "check that the database is reachable and writable."
            ) from exc
        except StatementError as exc:  # a value that could not be turned into SQL
            raise ValidationError(f"a value cannot be stored: {exc.orig}.") from exc

    # -- models ---------------------------------------------------------------

    def upsert_model(self, data: Mapping[str, Any]) -> ModelRecord:
        """Add a model, or update the fields given for a sha256 already catalogued.

        ``data`` holds model columns (``sha256`` and ``path`` at least for a new
        model) and optionally ``tags``: names or ``{"name", "color"}`` mappings.
        """
        with self.session_scope(immediate=True) as session:
            model = catalog.upsert_model(session, data)
            return ModelRecord.of(model)

    def get_model(self, sha256: str) -> ModelRecord | None:
        sha = normalize_sha256(sha256)
        with self.session_scope() as session:
            model = session.scalar(_model_query().where(Model.sha256 == sha))
            return None if model is None else ModelRecord.of(model)

    def get_model_by_path(self, path: str) -> ModelRecord | None:
        """The model of the file at ``path``, however the path is spelt (on Windows
        ``c:\\models\\a.ckpt`` and ``C:/Models/A.ckpt`` are one file: ``modelvault.pathkey``)."""
        with self.session_scope() as session:
            model = session.scalar(_model_query().where(same_file(Model, path)))
            return None if model is None else ModelRecord.of(model)

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
        where = _model_filters(tags, model_type, search, under, untagged, base)
        wanted, order = file_states(missing, unreachable), sort_order(sort)
        with self.session_scope() as session:
            if not wanted:
                query = _model_query().where(*where).order_by(*order)
                return [
                    ModelRecord.of(m) for m in session.scalars(query.offset(offset).limit(limit))
                ]
            found = with_file_state(session, where, wanted, order)
            page = list(itertools.islice(found, offset, None if limit is None else offset + limit))
            if not page:
                return []
            query = _model_query().where(Model.sha256.in_(page)).order_by(*order)
            return [ModelRecord.of(m) for m in session.scalars(query)]

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
        where = _model_filters(tags, model_type, search, under, untagged, base)
        wanted = file_states(missing, unreachable)
        with self.session_scope() as session:
            if not wanted:
                return session.scalar(select(func.count()).select_from(Model).where(*where)) or 0
            return sum(1 for _ in with_file_state(session, where, wanted, [Model.sha256]))

    def find_model(self, key: str) -> ModelRecord:
        """The model named by a SHA-256, a unique prefix of one (4+ hex digits, any
        case: Civitai's AutoV2 is the first 10), its AutoV3 or the start of it (10+
        digits: A1111 writes 12), its path, or its file name when only one model has it.

        ``NotFoundError`` when nothing matches, ``ValidationError`` when a
        prefix or name matches several models.
        """
        text_key = key.strip()
        if _HEX_PREFIX.fullmatch(text_key):
            found = self._find_by_hash(text_key)
            if found is not None:
                return found
        for path in dict.fromkeys([text_key, str(Path(text_key).expanduser().absolute())]):
            model = self.get_model_by_path(path)
            if model is not None:
                return model
        with self.session_scope() as session:
            named = list(session.scalars(_model_query().where(Model.name == text_key).limit(2)))
        if len(named) > 1:
            raise ValidationError(
                f"several models are named {text_key!r}: give a path or a SHA-256 instead."
            )
        if named:
            return ModelRecord.of(named[0])
        raise NotFoundError(
            f"no model in the catalog has the SHA-256, path or name {text_key!r}: "
            "list them with `modelvault models`."
        )

    def _find_by_hash(self, digits: str) -> ModelRecord | None:
        """The model whose SHA-256 (else AutoV3) starts with ``digits``; None if none."""
        prefix = digits.lower()
        # A range on the key, not LIKE: its index serves it under any collation.
        by_sha = and_(Model.sha256 >= prefix, Model.sha256 < prefix + "g")
        with self.session_scope() as session:
            matches = list(session.scalars(_model_query().where(by_sha).limit(2)))
            what = "SHA-256"
            if not matches and len(prefix) >= AUTOV2_LENGTH:
                autov3 = Model.meta[AUTOV3].as_string()
                by_autov3 = and_(autov3 >= prefix, autov3 < prefix + "g")
                matches = list(session.scalars(_model_query().where(by_autov3).limit(2)))
                what = "AutoV3"
        if len(matches) > 1:
            raise ValidationError(
                f"{digits} is the start of several models' {what}: give more digits."
            )
        return ModelRecord.of(matches[0]) if matches else None

    def get_models_by_tag(self, name: str) -> list[ModelRecord]:
        tag_name = normalize_tag_name(name)
        with self.session_scope() as session:
            models = session.scalars(
                _model_query()
                .join(Model.tags)
                .where(Tag.name == tag_name)
                .order_by(Model.name, Model.path)
            )
            return [ModelRecord.of(m) for m in models]

    def staging_counts(self) -> dict[str, int]:
        """How many staging rows are in each status (every status listed, zeros included)."""
        counts = {status.value: 0 for status in PendingStatus}
        with self.session_scope() as session:
            rows = session.execute(
                select(PendingImport.status, func.count()).group_by(PendingImport.status)
            )
            counts.update((str(row[0]), int(row[1])) for row in rows)
        return counts

    def claimable_totals(self) -> QueueTotals:
        """Files still waiting to be hashed (pending or claimed rows), their known bytes,
        and how many have no known size."""
        waiting = (PendingStatus.PENDING.value, PendingStatus.CLAIMED.value)
        size = PendingImport.size_bytes
        with self.session_scope() as session:
            row = session.execute(
                select(
                    func.count(),
                    func.coalesce(func.sum(size), 0),
                    func.count().filter(size.is_(None)),
                ).where(PendingImport.status.in_(waiting))
            ).one()
            return QueueTotals(int(row[0] or 0), int(row[1] or 0), int(row[2] or 0))

    def catalog_counts(self) -> dict[str, int]:
        """Models, tags and tag links in the catalog."""
        with self.session_scope() as session:
            return {
                "models": session.scalar(select(func.count()).select_from(Model)) or 0,
                "tags": session.scalar(select(func.count()).select_from(Tag)) or 0,
                "links": session.scalar(select(func.count()).select_from(model_tags)) or 0,
            }

    # -- tags -----------------------------------------------------------------

    def create_tag(self, name: str, color: str | None = None) -> TagRecord:
        """Create a tag (name trimmed and lower-cased, colour as ``#rrggbb``)."""
        tag_name = normalize_tag_name(name)
        tag_color = normalize_color(color)
        with self.session_scope(immediate=True) as session:
            if session.scalar(select(Tag.id).where(Tag.name == tag_name)) is not None:
                raise AlreadyExistsError(f"the tag {tag_name!r} exists already.")
            tag = Tag(name=tag_name, color=tag_color)
            session.add(tag)
            session.flush()
            return TagRecord.of(tag)

    def get_tag(self, name: str) -> TagRecord | None:
        tag_name = normalize_tag_name(name)
        with self.session_scope() as session:
            tag = session.scalar(select(Tag).where(Tag.name == tag_name))
            return None if tag is None else TagRecord.of(tag)

    def list_tags(self) -> list[tuple[TagRecord, int]]:
        """Every tag with the number of models that carry it, by name."""
        with self.session_scope() as session:
            rows = session.execute(
                select(Tag, func.count(model_tags.c.model_sha256))
                .outerjoin(model_tags, model_tags.c.tag_id == Tag.id)
                .group_by(Tag.id)
                .order_by(Tag.name)
            )
            return [(TagRecord.of(tag), count) for tag, count in rows]

    def tag_model(self, sha256: str, tag_id: int) -> None:
        """Link a tag to a model (idempotent; a new link is a change of the model's
        ``updated_at``). Unknown model or tag: ``NotFoundError``."""
        sha = normalize_sha256(sha256)
        with self.session_scope(immediate=True) as session:
            self._require(session, sha, tag_id)
            model = session.get_one(Model, sha)
            if session.get_one(Tag, tag_id) not in model.tags:
                catalog.link_tags(session, [(sha, tag_id)])
                model.updated_at = utcnow()

    def untag_model(self, sha256: str, tag_id: int) -> bool:
        """Remove a link; returns whether there was one."""
        sha = normalize_sha256(sha256)
        with self.session_scope(immediate=True) as session:
            result = session.execute(
                delete(model_tags).where(
                    model_tags.c.model_sha256 == sha, model_tags.c.tag_id == tag_id
                )
            )
            if result.rowcount:  # type: ignore[attr-defined]
                session.execute(
                    update(Model).where(Model.sha256 == sha).values(updated_at=utcnow())
                )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def get_tags_for_model(self, sha256: str) -> list[TagRecord]:
        sha = normalize_sha256(sha256)
        with self.session_scope() as session:
            if session.get(Model, sha) is None:
                raise NotFoundError(f"no model with sha256 {sha} is catalogued.")
            tags = session.scalars(
                select(Tag)
                .join(model_tags, model_tags.c.tag_id == Tag.id)
                .where(model_tags.c.model_sha256 == sha)
                .order_by(Tag.name)
            )
            return [TagRecord.of(t) for t in tags]

    @staticmethod
    def _require(session: Session, sha: str, tag_id: int) -> None:
        if session.get(Model, sha) is None:
            raise NotFoundError(
                f"no model with sha256 {sha} is catalogued: add it before tagging it."
            )
        if (
            isinstance(tag_id, bool)
            or not isinstance(tag_id, int)
            or session.get(Tag, tag_id) is None
        ):
            raise NotFoundError(
                f"no tag with id {tag_id!r} exists: create it with create_tag first."
            )

    # -- curating: each one transaction (see modelvault.curation) --------------

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

    def deleted_records(self, *, limit: int | None = None) -> list[curation.DeletedEntry]:
        return curation.deleted_records(self, limit=limit)

    # -- staging rows ---------------------------------------------------------

    def add_pending_import(self, data: Mapping[str, Any]) -> PendingRecord:
        """Stage a file to be hashed by the workers."""
        values = _pending_values(data)
        with self.session_scope(immediate=True) as session:
            staged = session.scalar(
                select(PendingImport.path).where(same_file(PendingImport, values["path"]))
            )
            if staged is not None:
                spelt = "" if staged == values["path"] else f" as {staged}"
                raise AlreadyExistsError(f"{values['path']} is staged already{spelt}.")
            row = PendingImport(**values)
            session.add(row)
            session.flush()
            return PendingRecord.of(row)

    def get_pending_imports(
        self,
        status: str | Iterable[str] | None = None,
        *,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[PendingRecord]:
        """Staging rows, oldest first, optionally only those in the given status(es)."""
        statuses = _statuses(status)
        query = select(PendingImport).order_by(PendingImport.id).offset(offset).limit(limit)
        if statuses is not None:
            query = query.where(PendingImport.status.in_(statuses))
        with self.session_scope() as session:
            return [PendingRecord.of(row) for row in session.scalars(query)]

    def remove_pending_import(self, path: str) -> bool:
        """Delete the staging row of ``path``; returns whether there was one."""
        with self.session_scope(immediate=True) as session:
            result = session.execute(delete(PendingImport).where(PendingImport.path == path))
            return bool(result.rowcount)  # type: ignore[attr-defined]


# "user:password@host..." or "host:5432/db": a URL whose scheme was left out.
_URL_WITHOUT_SCHEME = re.compile(r"^[^/\\:@]+(:[^@]*)?@|^[^/\\:@]+:\d+(/|$)")
# "C:\...", "C:/...", "\\server\share\...", "//server/share/...": Windows paths.
_WINDOWS_PATH = re.compile(r"^([A-Za-z]:[\\/]|\\\\|//)")


def as_url(target: str | os.PathLike[str]) -> str:
    """A URL as it is; anything else is the path of a SQLite file.

    Text holding ``://`` is a URL (no Windows path can hold it). A drive or UNC
    path (``D:\\backup@2024\\catalog.sqlite3``) and a path whose folder exists
    are paths, whatever else they hold. Other text that reads like a URL written
    without its scheme (``user:pw@host/db``) is refused rather than taken for a
    file name (which would put the password in a file name).
    """
    text_target = os.fspath(target)
    if "://" in text_target:
        return text_target
    if not _WINDOWS_PATH.match(text_target) and _URL_WITHOUT_SCHEME.match(text_target):
        folder = os.path.dirname(text_target)
        if not (folder and os.path.isdir(folder)):
            shown = mask_password(text_target)
            raise ConfigError(
                f"{shown!r} looks like a database URL without its scheme: write e.g. "
                f"postgresql://{shown}, or ./{shown} for a file of that name."
            )
    return sqlite_url(text_target)


def _check_sqlite_folder(url: URL) -> None:
    """Refuse a SQLite catalog whose folder does not exist; the default data folder
    is the one folder made here, as it is ours."""
    file = sqlite_file(url)
    if file is None:
        return
    folder = Path(file).parent
    if url == parse_url(default_db_url()):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CatalogError(
                f"cannot create the data folder {folder}: {exc.strerror or exc}; "
                "choose another catalog with --db or MODELVAULT_DB_PATH."
            ) from exc
    if not folder.is_dir():
        state = "is not a folder" if folder.exists() else "does not exist"
        raise CatalogError(
            f"the catalog's folder {folder} {state}: create it first, "
            "or choose another catalog with --db or MODELVAULT_DB_PATH."
        )


def _catalog_revision(
    where: str,
    tables: Iterable[str],
    revision: str | None,
    known: frozenset[str],
    application_id: int = 0,
) -> str | None:
    """The revision of a catalog with these tables (None: nothing in it yet), or
    the ``CatalogError`` that says what the database is instead."""
    tables = set(tables)
    if tables <= {"alembic_version"} and revision is None:
        if application_id in (0, APPLICATION_ID):
            return None  # empty, or every revision downgraded: nothing of anyone's
        raise NotACatalogError(
            f"{where} is another program's SQLite database (application id "
            f"{describe_application_id(application_id)}): give the catalog's path with "
            "--db, or a new file name to create one."
        )
    if "alembic_version" in tables and revision in known:
        return revision
    if "alembic_version" in tables and tables >= V3_TABLES:
        raise SchemaVersionError(
            f"the catalog at {where} is at schema revision {revision!r}, "
            "newer than this modelvault knows: upgrade modelvault."
        )
    if "alembic_version" not in tables and tables >= LEGACY_TABLES:
        raise NotACatalogError(
            f"{where} is a legacy catalog: migrate it with `modelvault migrate {where}`."
        )
    raise NotACatalogError(
        f"{where} is not a modelvault catalog (it holds the tables "
        f"{', '.join(sorted(tables)[:5])}{', ...' if len(tables) > 5 else ''}): "
        "give the catalog's path with --db, or a new file name to create one."
    )


def _refuse_unless_ours(seen: SqliteFile, known: frozenset[str], *, adopt_empty: bool) -> None:
    """Refuse a SQLite file that is not ours to make a catalog of (see ``init_db``)."""
    where = str(seen.path)
    if not seen.blank or seen.application_id not in (0, APPLICATION_ID):
        _catalog_revision(where, seen.tables, seen.revision, known, seen.application_id)
    elif seen.exists and seen.application_id != APPLICATION_ID and not adopt_empty:
        what = "an empty file" if seen.size == 0 else "a SQLite database without tables"
        raise NotACatalogError(
            f"{where} is {what}, not a catalog: make it one with "
            f"`modelvault init --db {where}`, or give the catalog's path with --db."
        )


def _create_catalog_file(file: Path) -> None:
    try:
        create_marked_file(file)
    except (OSError, sqlite3.Error) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise CatalogError(
            f"cannot create the catalog {file} ({reason}): choose a folder you can write "
            "to, with --db or MODELVAULT_DB_PATH."
        ) from exc


def _mark_as_ours(conn: Any) -> None:
    """Give a SQLite catalog modelvault's application id, if it has none yet (a
    catalog made before it was set, or an empty file ``init`` was given)."""
    if not conn.exec_driver_sql("PRAGMA application_id").scalar():
        conn.exec_driver_sql(f"PRAGMA application_id = {APPLICATION_ID}")


def _model_query() -> Any:
    return select(Model).options(selectinload(Model.tags))


def _model_filters(
    tags: Iterable[str],
    model_type: str | None,
    search: str | None,
    under: Iterable[str | os.PathLike[str]],
    untagged: bool = False,
    base: str | None = None,
) -> list[Any]:
    """The conditions of ``find_models``."""
    where: list[Any] = []
    if base:
        where.append(func.lower(Model.base) == base.strip().lower())
    if untagged:
        where.append(Model.sha256.not_in(select(model_tags.c.model_sha256)))
    for name in tags:
        tagged = (
            select(model_tags.c.model_sha256)
            .join(Tag, Tag.id == model_tags.c.tag_id)
            .where(Tag.name == normalize_tag_name(name))
        )
        where.append(Model.sha256.in_(tagged))
    if model_type:
        where.append(Model.type == model_type)
    if search:
        pattern = "%" + re.sub(r"([\\%_])", r"\\\1", search.lower()) + "%"
        where.append(
            or_(
                func.lower(Model.name).like(pattern, escape="\\"),
                func.lower(Model.path).like(pattern, escape="\\"),
            )
        )
    folders = [absolute(os.fspath(f)) for f in under]
    if folders:
        where.append(or_(*(keys_under(Model, folder) for folder in folders)))
    return where


def _statuses(status: str | Iterable[str] | None) -> list[str] | None:
    if status is None:
        return None
    names = [status] if isinstance(status, str) else list(status)
    valid = {s.value for s in PendingStatus}
    for name in names:
        if name not in valid:
            raise ValidationError(
                f"{name!r} is not a staging status: use one of {', '.join(sorted(valid))}."
            )
    return names


def _pending_values(data: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(data) - set(PENDING_FIELDS)
    if unknown:
        raise ValidationError(
            f"unknown staging field(s) {', '.join(sorted(unknown))}: "
            f"use {', '.join(PENDING_FIELDS)}."
        )
    values = catalog.file_values(data)
    values["tags"] = [catalog.TagSpec.parse(t).to_json() for t in data.get("tags") or ()]
    values["status"] = _statuses([data.get("status") or PendingStatus.PENDING.value])[0]  # type: ignore[index]
    if data.get("sha256") is not None:
        values["sha256"] = normalize_sha256(data["sha256"])
    created_at = data.get("created_at")
    if created_at is not None:
        if not isinstance(created_at, datetime) or created_at.tzinfo is None:
            raise ValidationError(
                f"created_at {created_at!r} is not valid: give a timezone-aware datetime."
            )
        values["created_at"] = created_at
    for key in ("legacy_id", "attempts"):
        number = data.get(key)
        if number is not None:
            if isinstance(number, bool) or not isinstance(number, int) or number < 0:
                raise ValidationError(f"{key} {number!r} is not valid: give a whole number >= 0.")
            values[key] = number
    for key in ("source", "last_error"):
        text_value = data.get(key)
        if text_value is not None:
            if not isinstance(text_value, str):
                raise ValidationError(f"{key} {text_value!r} is not valid: give a text.")
            values[key] = text_value
    return values


def _driver_message(exc: DBAPIError) -> str:
    message = str(exc.orig).strip().splitlines()
    return mask_password(message[0]) if message else type(exc.orig).__name__
