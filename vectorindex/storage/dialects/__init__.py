"""One dialect per database backend a VectorIndex works on, behind one interface (:class:`Dialect`).

The index's locks and its posting-list sequence are written for these
backends only: any other database is refused (:func:`dialect_for`, system
check ``vectorindex.E105``) instead of taking one of their paths. A
VectorField without an index works on any database (its distances are
computed in numpy from a plain binary column).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import NotSupportedError, connections

from .base import Dialect, IsolationLevel
from .mysql import MySQLDialect
from .sqlite import SQLiteDialect

__all__ = ["DIALECTS", "Dialect", "IsolationLevel", "dialect_for", "read_only", "supported_databases", "vendor"]

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


# A database's read-only answer is read again after this many seconds (a
# replica promoted to primary takes writes after at most this long).
READ_ONLY_KEPT = 60.0

# alias -> (read-only?, when read)
_read_only: dict[str, tuple[bool, float]] = {}
_read_only_lock = threading.Lock()


def read_only(alias: str) -> bool:
    """Whether database *alias* is a copy the index must not write to: a replica.

    So it is where its settings name it a test mirror of another database
    (``"TEST": {"MIRROR": ...}``), or where its server says it takes no
    writes (MySQL/MariaDB's ``read_only``, as replicas are set; SQLite's
    ``PRAGMA query_only``). Read from the server once a minute at most, and
    only by what would write otherwise: a query that would ask for a job, an
    index that has no state row yet, a command that writes.
    """
    settings = connections.settings[alias]
    if (settings.get("TEST") or {}).get("MIRROR"):
        return True
    now = time.monotonic()
    with _read_only_lock:
        known = _read_only.get(alias)
    if known is not None and now - known[1] < READ_ONLY_KEPT:
        return known[0]
    connection = connections[alias]
    try:
        answer = dialect_for(connection).server_read_only(connection)
    except NotSupportedError:
        answer = False
    with _read_only_lock:
        _read_only[alias] = (answer, now)
    return answer
