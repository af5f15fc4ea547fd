"""modelvault: a catalog of AI model files keyed by content, and the migration
engine that brings a legacy catalog into it."""

from __future__ import annotations

import logging

from modelvault.catalog.records import ModelRecord, PendingRecord, TagRecord
from modelvault.config import Settings
from modelvault.database import DatabaseManager
from modelvault.errors import (
    AlreadyExistsError,
    BackupError,
    CatalogError,
    CatalogNotAnsweringError,
    ConfigError,
    DemoFolderError,
    ExchangeError,
    FileChangedError,
    HashCancelled,
    HashingError,
    IdentifyError,
    ImageStoreError,
    LegacyDatabaseError,
    MigrationError,
    ModelVaultError,
    NotACatalogError,
    NotFoundError,
    NotRegularFileError,
    ScanError,
    SchemaVersionError,
    ValidationError,
)

__version__ = "0.1.0"

# A library never configures logging; the app that embeds it decides.
logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "AlreadyExistsError",
    "BackupError",
    "CatalogError",
    "CatalogNotAnsweringError",
    "ConfigError",
    "DatabaseManager",
    "DemoFolderError",
    "ExchangeError",
    "FileChangedError",
    "HashCancelled",
    "HashingError",
    "IdentifyError",
    "ImageStoreError",
    "LegacyDatabaseError",
    "MigrationError",
    "ModelRecord",
    "ModelVaultError",
    "NotACatalogError",
    "NotFoundError",
    "NotRegularFileError",
    "PendingRecord",
    "ScanError",
    "SchemaVersionError",
    "Settings",
    "TagRecord",
    "ValidationError",
    "__version__",
]
