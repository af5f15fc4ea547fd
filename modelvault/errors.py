"""The exceptions modelvault raises.

Every error the library raises on purpose is a ``ModelVaultError``; callers that
want to show one sentence to a user can catch that single class. Driver errors
are chained (``raise ... from exc``) so the cause is never lost.
"""

from __future__ import annotations


class ModelVaultError(Exception):
    """Root of every error modelvault raises on purpose."""


class ConfigError(ModelVaultError):
    """A setting (argument or ``MODELVAULT_*`` variable) has a value we cannot use."""


class ValidationError(ModelVaultError, ValueError):
    """A value handed to the library is malformed (hash, colour, tag name, path...)."""


class NotFoundError(ModelVaultError, LookupError):
    """The model, tag or row an operation refers to does not exist."""


class AlreadyExistsError(ModelVaultError):
    """The row an operation would create exists already."""


class CatalogError(ModelVaultError):
    """The catalog database cannot be opened, reached or written."""


class CatalogNotAnsweringError(CatalogError):
    """The catalog's server stopped answering: frozen, asleep, or cut off by the network.

    ``catalog`` names it (password masked); ``seconds`` is how long it was waited
    for; ``then`` says what became of the work and what to do.
    """

    def __init__(
        self,
        catalog: str,
        seconds: float,
        then: str = "check that the server runs and can be reached, then run the command again",
    ) -> None:
        self.catalog, self.seconds = catalog, seconds
        super().__init__(f"{self.what}: {then}.")

    @property
    def what(self) -> str:
        return (
            f"the catalog server at {self.catalog} did not answer within {self.seconds:g} s "
            "(it may be stopped, asleep or cut off by the network)"
        )


class NotACatalogError(CatalogError):
    """The database given as the catalog is something else (another app's, a legacy catalog)."""


class SchemaVersionError(CatalogError):
    """The catalog's schema revision is one this version of modelvault does not know."""


class ImageStoreError(ModelVaultError):
    """The catalog's preview image store cannot be written (disk full, no permission, ...)."""


class LegacyDatabaseError(ModelVaultError):
    """The file given as a legacy catalog is not one that modelvault can read."""


class HashingError(ModelVaultError, OSError):
    """A file could not be hashed."""


class NotRegularFileError(HashingError):
    """The path names a directory, FIFO, socket or device: it is never opened or hashed."""


class FileChangedError(HashingError):
    """A file changed (size or modification time) or was replaced while it was being hashed."""


class HashCancelled(ModelVaultError):
    """Hashing stopped because the caller asked it to stop."""


class MigrationError(ModelVaultError):
    """The migration could not start or continue."""


class DemoFolderError(ModelVaultError):
    """The folder given to the demo is not one it may write into."""


class ScanError(ModelVaultError):
    """A folder to scan does not exist, or the list of folders cannot be read."""


class IdentifyError(ModelVaultError):
    """Reading many models' headers could not go on (a process reading them died)."""


class ExchangeError(ModelVaultError):
    """A catalog export cannot be written, or a file given to import is not a whole
    export of ours (truncated, damaged, another program's)."""


class BackupError(ModelVaultError):
    """A backup cannot be written where it was asked (a full disk, a folder not ours)."""
