"""One dialect per database backend a VectorIndex works on, behind one interface (:class:`Dialect`).

The index's locks and its posting-list sequence are written for these
backends only: any other database is refused (:func:`dialect_for`, system
check ``vectorindex.E105``) instead of taking one of their paths. A
VectorField without an index works on any database (its distances are
computed in numpy from a plain binary column).
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import NotSupportedError, connections

from .base import Dialect, IsolationLevel
from .mysql import MySQLDialect
from .sqlite import SQLiteDialect

__all__ = ["DIALECTS", "Dialect", "IsolationLevel", "dialect_for", "supported_databases", "vendor"]

# vendor -> its dialect, in the order messages name them.
DIALECTS: dict[str, Dialect] = {dialect.vendor: dialect for dialect in (SQLiteDialect(), MySQLDialect())}


def supported_databases() -> str:
    """The databases a VectorIndex works on, as a message names them: ``"SQLite or MySQL/MariaDB"``."""
    names = [dialect.name for dialect in DIALECTS.values()]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def dialect_for(connection: Any) -> Dialect:
    """*connection*'s dialect; NotSupportedError for a database the index's storage is not written for."""
    try:
        return DIALECTS[connection.vendor]
    except KeyError:
        raise NotSupportedError(
            f"A VectorIndex needs {supported_databases()}; database '{connection.alias}' is "
            f"{connection.vendor}. A VectorField without an index works on any database."
        ) from None


def vendor(alias: str) -> str:
    """The vendor of database *alias* (``"sqlite"``, ``"mysql"``, ``"postgresql"``, …), without connecting."""
    try:
        return connections[alias].vendor
    except (ImportError, ImproperlyConfigured):
        # The backend's driver is not installed here (psycopg, oracledb):
        # Django's own backends are named after their vendor.
        return connections.settings[alias]["ENGINE"].rsplit(".", 1)[-1]
