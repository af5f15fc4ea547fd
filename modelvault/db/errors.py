"""Driver errors as modelvault's own: one translation for every catalog statement."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.exc import DBAPIError, StatementError

from modelvault.config import mask_password
from modelvault.db.deadline import NoAnswer
from modelvault.errors import (
    CatalogError,
    CatalogNotAnsweringError,
    ModelVaultError,
    ValidationError,
)


@contextmanager
def translate_errors(display_url: str) -> Iterator[None]:
    """Driver errors become ``CatalogError`` (or ``ValidationError`` for a value
    that cannot be stored), chained, with a hint of what to do; ``display_url``
    (password hidden) names the catalog."""
    try:
        yield
    except ModelVaultError:
        raise
    except DBAPIError as exc:
        if isinstance(exc.orig, NoAnswer):
            raise CatalogNotAnsweringError(display_url, exc.orig.seconds) from exc
        raise CatalogError(
            f"the catalog at {display_url} failed: {_driver_message(exc)}; "
            "check that the database is reachable and writable."
        ) from exc
    except StatementError as exc:  # a value that could not be turned into SQL
        raise ValidationError(f"a value cannot be stored: {exc.orig}.") from exc


def _driver_message(exc: DBAPIError) -> str:
    message = str(exc.orig).strip().splitlines()
    return mask_password(message[0]) if message else type(exc.orig).__name__
