"""The app's own failures, under one base class.

Bad user data is a ``django.core.exceptions.ValidationError`` and a backend limit a
``django.db.NotSupportedError``, as everywhere in Django; these are for what
goes wrong inside the app itself.
"""


class VectorIndexError(Exception):
    """Base class of every error raised by vectorindex itself."""


class CorruptVector(VectorIndexError):
    """A stored vector blob does not have the length its field declares."""


class HeadIndexError(VectorIndexError):
    """The in-memory head index (hnswlib) refused an operation."""


class IndexNotReady(VectorIndexError):
    """The index has not been built yet; run ``manage.py vectorindex build``."""


class SnapshotError(VectorIndexError):
    """A stored head-index snapshot is missing, incomplete or does not verify."""


class IndexNeedsRebuild(VectorIndexError):
    """The stored index was written in a layout this version no longer reads; rebuild it."""


class JobBusy(VectorIndexError):
    """A maintenance job gave up waiting for a lock another transaction holds; it runs again later."""
