"""The app's own failures, under one base class.

Bad user data is a ``django.core.exceptions.ValidationError`` and a backend limit a
``django.db.NotSupportedError``, as everywhere in Django; these are for what
goes wrong inside the app itself. The engine's ``InvalidVector`` is the one
that carries bad user data: the fields, forms and expressions turn it into a
``ValidationError`` with its code. No Django here: the engine imports this
module.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

# How many wrong rows an error names; it says how many there are in all.
ROWS_NAMED = 5


class VectorIndexError(Exception):
    """Base class of every error raised by vectorindex itself."""


class CorruptVector(VectorIndexError):
    """A stored vector blob does not have the length its field declares."""

    @classmethod
    def in_rows(
        cls, field: str, dimensions: int, rows: Sequence[tuple[Any, int]], count: int | None = None, width: int = 4
    ) -> CorruptVector:
        """The error for *rows* — (primary key, stored bytes) — of *field* ("app.Model.field").

        *count*: how many rows are wrong in all, when more than those named;
        *width*: the bytes of one stored value (4: float32; 2: float16).
        """
        count = max(count or 0, len(rows))
        first, size = rows[0]
        if count == 1:
            found = f"row {first} stores {stored_size(size, width)}, expected {dimensions}"
            fix = f"fix or clear that row (save it with a {dimensions}-dimensional vector, or delete it)"
        else:
            named = [str(pk) for pk, _size in rows[:ROWS_NAMED]]
            more = f" and {count - len(named)} more" if count > len(named) else ""
            found = (
                f"{count} rows store another size than {dimensions} dimensions: rows {', '.join(named)}{more}; "
                f"row {first} stores {stored_size(size, width)}"
            )
            fix = f"fix or clear those rows (save them with {dimensions}-dimensional vectors, or delete them)"
        return cls(f"{field}: {found}; {fix}.")

    @classmethod
    def sparse_rows(cls, field: str, dimensions: int | None, rows: Sequence[tuple[Any, int]]) -> CorruptVector:
        """The error for *rows* — (primary key, stored bytes) — of a sparse vector *field* that do not read as one."""
        of = "" if dimensions is None else f" of {dimensions} dimensions"
        wanted = f"a sparse vector{of}"
        named = ", ".join(f"{pk} ({size} bytes)" for pk, size in rows[:ROWS_NAMED])
        more = f" and {len(rows) - ROWS_NAMED} more" if len(rows) > ROWS_NAMED else ""
        if len(rows) == 1:
            found, fix = f"row {named} stores", f"that row (save it with {wanted}, or delete it)"
        else:
            found, fix = f"rows {named}{more} store", f"those rows (save them with sparse vectors{of}, or delete them)"
        return cls(f"{field}: {found} something other than {wanted}; fix or clear {fix}.")


def stored_size(size: int, width: int = 4) -> str:
    """A stored blob's length in words: ``"8 dimensions (32 bytes)"``; *width* bytes a value (4: float32, 2: float16)."""
    if size % width:
        return f"{size} bytes, not a whole number of float{8 * width} values"
    return f"{size // width} dimension{'' if size == width else 's'} ({size} bytes)"


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


class IndexWriteError(VectorIndexError):
    """The index could not take a write (its heads kept changing under it)."""


class InvariantViolated(VectorIndexError):
    """``check`` found the index's invariants violated (the admin shows it as an error)."""


class InvalidVector(VectorIndexError, ValueError):
    """A value that cannot be read as a vector of the expected dimensions."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class WrongSize(InvalidVector):
    """Stored blobs whose length is not that of the expected dimensions."""

    def __init__(self, positions: np.ndarray, sizes: np.ndarray, dimensions: int, total: int, width: int = 4) -> None:
        super().__init__(
            "corrupt",
            f"expected {total} vectors of {dimensions} dimensions ({dimensions * width} bytes each), "
            f"got {len(positions)} of another size (the first, at position {positions[0]}, "
            f"has {sizes[0]} bytes)",
        )
        self.positions = positions  # in the blobs given
        self.sizes = sizes  # their lengths in bytes


class WrongSizedChunk(VectorIndexError):
    """Blobs of one scanned chunk's vector column with the wrong size: (position in the chunk, bytes).

    Raised and caught inside the exact scan, which reports it as :class:`CorruptVector`.
    """

    def __init__(self, path: str, rows: list[tuple[int, int]]) -> None:
        super().__init__(path)
        self.path = path
        self.rows = rows
