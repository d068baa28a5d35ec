"""The app's own failures, under one base class.

Bad user data is a ``django.core.exceptions.ValidationError`` and a backend limit a
``django.db.NotSupportedError``, as everywhere in Django; these are for what
goes wrong inside the app itself.
"""


class VectorIndexError(Exception):
    """Base class of every error raised by vectorindex itself."""


class CorruptVector(VectorIndexError):
    """A stored vector blob does not have the length its field declares."""
