"""The app's own failures, under one base class.

Bad user data is a ``django.core.exceptions.ValidationError`` and a backend limit a
``django.db.NotSupportedError``, as everywhere in Django; these are for what
goes wrong inside the app itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# How many wrong rows an error names; it says how many there are in all.
ROWS_NAMED = 5


class VectorIndexError(Exception):
    """Base class of every error raised by vectorindex itself."""


class CorruptVector(VectorIndexError):
    """A stored vector blob does not have the length its field declares."""

    @classmethod
    def in_rows(
        cls, field: str, dimensions: int, rows: Sequence[tuple[Any, int]], count: int | None = None
    ) -> CorruptVector:
        """The error for *rows* — (primary key, stored bytes) — of *field* ("app.Model.field").

        *count*: how many rows are wrong in all, when more than those named.
        """
        count = max(count or 0, len(rows))
        first, size = rows[0]
        if count == 1:
            found = f"row {first} stores {stored_size(size)}, expected {dimensions}"
            fix = f"fix or clear that row (save it with a {dimensions}-dimensional vector, or delete it)"
        else:
            named = [str(pk) for pk, _size in rows[:ROWS_NAMED]]
            more = f" and {count - len(named)} more" if count > len(named) else ""
            found = (
                f"{count} rows store another size than {dimensions} dimensions: rows {', '.join(named)}{more}; "
                f"row {first} stores {stored_size(size)}"
            )
            fix = f"fix or clear those rows (save them with {dimensions}-dimensional vectors, or delete them)"
        return cls(f"{field}: {found}; {fix}.")


def stored_size(size: int) -> str:
    """A stored blob's length in words: ``"8 dimensions (32 bytes)"``."""
    if size % 4:
        return f"{size} bytes, not a whole number of float32 values"
    return f"{size // 4} dimension{'' if size == 4 else 's'} ({size} bytes)"


class HeadIndexError(VectorIndexError):
    """The in-memory head index (hnswlib) refused an operation."""


class IndexNotReady(VectorIndexError):
    """The index has not been built yet; run ``manage.py vectorindex build``."""


class SnapshotError(VectorIndexError):
    """A stored head-index snapshot is missing, incomplete or does not verify."""


class IndexNeedsRebuild(VectorIndexError):
    """The stored index was written in a layout this version no longer reads; rebuild it."""


class IndexOutdated(IndexNeedsRebuild):
    """The index was built for other dimensions or another distance than it now declares; rebuild it."""


class JobBusy(VectorIndexError):
    """A maintenance job gave up waiting for a lock another transaction holds; it runs again later."""
