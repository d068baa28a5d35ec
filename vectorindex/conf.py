"""The app's settings: one object over the ``VECTORINDEX`` dict in Django settings.

Modelled on Django REST framework's ``api_settings``: defaults live here, a project
overrides any of them in ``settings.VECTORINDEX = {...}``, values are read lazily
and re-read when a test changes the setting. Unknown keys are an error, so that a
typo does not silently leave a default in force.
"""

from __future__ import annotations

import math
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

DEFAULTS: dict[str, Any] = {
    # Rows read per round trip when a query is answered exactly (in numpy).
    # Bounds the memory of an exact scan: about CHUNK_SIZE × dimensions × 16
    # bytes at a time, whatever the size of the table.
    "EXACT_CHUNK_SIZE": 10_000,
    # Rows fetched per query when the rows chosen by an exact scan are loaded
    # as model instances (the scan itself reads only keys and vectors).
    "RESULT_BATCH_SIZE": 1_000,
    # How many leading values the admin shows of a vector before "…".
    "ADMIN_PREVIEW_VALUES": 5,
    # Where maintenance jobs run: "celery" (queued for workers), "inline" (in
    # the process that triggered them, right after its transaction commits),
    # "manual" (only when `manage.py vectorindex maintain` runs), or "auto":
    # celery when CELERY_BROKER_URL is set, inline otherwise.
    "JOBS": "auto",
    # The maintenance scan runs this often, in seconds: Celery beat's schedule
    # with "celery"; with "inline", a process that writes to an index scans it
    # after a commit once this long has passed since it last did.
    "SCAN_INTERVAL": 60,
    # Seconds a commit waits for the broker when it sends a job ("celery"):
    # to connect, and for each reply. A job that cannot be sent is left for
    # the scan.
    "ENQUEUE_TIMEOUT": 2.0,
    # Seconds a maintenance job waits for a row lock that another
    # transaction holds (a user's long transaction) before it gives up and
    # is run again later.
    "JOB_LOCK_TIMEOUT": 5,
    # A snapshot is taken (and the WAL truncated) once the WAL is this long.
    "WAL_SNAPSHOT_ENTRIES": 1_000,
    # Connections a query reads on at once (MySQL/MariaDB, outside a
    # transaction): its posting lists, version rows and re-ranked rows, at
    # least 8 lists or 16 rows a connection. Its own connection reads one
    # share; reader threads, each with a connection of its own kept open,
    # read the others. 1: the query's own connection only. Reads are spread
    # only while they wait on the disk (vectorindex/storage/readers.py).
    "QUERY_READERS": 4,
    # Bytes of decoded posting rows a process keeps for the next queries
    # (least recently used out first; about 400 bytes a row on top of its
    # entries). A cached row is used only when the query, in its own
    # transaction, reads its key: rows never change under a key, and only
    # committed rows read outside a transaction are cached. 0: none, and a
    # query reads its lists in one statement as before.
    # (vectorindex/storage/cache.py)
    "QUERY_CACHE_BYTES": 64 * 1024 * 1024,
    # Seconds a retired head's posting rows stay readable before they are
    # deleted (processes whose head index is older still route to it).
    "RETIRED_GRACE": 300,
    # Sample queries (the index's own vectors) a calibration runs to find how
    # many lists a query must read to meet the index's recall target (after
    # every build, and when maintenance finds the index grown or changed).
    # 0: no calibration; queries read the index's declared probes, or 128.
    "CALIBRATION_QUERIES": 200,
    # Whether ``migrate`` builds the indexes it leaves not built (those its
    # migrations created or changed, on the rows the tables hold), as a
    # database builds an index it creates. False: ``manage.py vectorindex
    # build`` does, when you run it; until then queries are answered exactly.
    "BUILD_ON_MIGRATE": True,
    # Vectors come back from the database (and from Avg/Sum of a vector
    # field) as numpy float32 arrays, as pgvector-python 0.4 returns them;
    # True: as Python lists of floats, as its 1.0 does.
    "VECTORS_AS_LISTS": False,
}

BOOLEANS = ("BUILD_ON_MIGRATE", "VECTORS_AS_LISTS")

POSITIVE_INTEGERS = (
    "EXACT_CHUNK_SIZE",
    "RESULT_BATCH_SIZE",
    "ADMIN_PREVIEW_VALUES",
    "SCAN_INTERVAL",
    "WAL_SNAPSHOT_ENTRIES",
    "QUERY_READERS",
    "JOB_LOCK_TIMEOUT",
)
POSITIVE_NUMBERS = {"ENQUEUE_TIMEOUT": "seconds"}
NON_NEGATIVE_NUMBERS = {"RETIRED_GRACE": "seconds"}
NON_NEGATIVE_INTEGERS = {"CALIBRATION_QUERIES": "queries", "QUERY_CACHE_BYTES": "bytes"}

# Settings that are no more: name -> (the version that removed it, why). A
# project that still sets one is told so, rather than that it is unknown.
REMOVED: dict[str, tuple[str, str]] = {
    "QUERY_READERS_ABOVE_US": (
        "0.9.0",
        "reads are spread over QUERY_READERS connections while they wait on the disk, "
        "a threshold the app keeps itself",
    ),
}


class VectorIndexSettings:
    """Attribute access to the ``VECTORINDEX`` settings with their defaults."""

    def __init__(self, defaults: dict[str, Any] | None = None) -> None:
        self.defaults = defaults or DEFAULTS
        self._cache: dict[str, Any] | None = None

    @property
    def user_settings(self) -> dict[str, Any]:
        value = getattr(settings, "VECTORINDEX", {})
        if not isinstance(value, dict):
            raise ImproperlyConfigured("settings.VECTORINDEX must be a dict.")
        return value

    def _load(self) -> dict[str, Any]:
        user = self.user_settings
        removed = sorted(set(user) & set(REMOVED))
        if removed:
            raise ImproperlyConfigured(
                " ".join(f"VECTORINDEX['{name}'] was removed in {REMOVED[name][0]}: {REMOVED[name][1]}." for name in removed)
                + " Remove it from settings.VECTORINDEX."
            )
        unknown = sorted(set(user) - set(self.defaults))
        if unknown:
            raise ImproperlyConfigured(
                f"Unknown VECTORINDEX setting(s): {', '.join(unknown)}. "
                f"Known settings: {', '.join(sorted(self.defaults))}."
            )
        merged = {**self.defaults, **user}
        if merged["JOBS"] not in ("auto", "inline", "celery", "manual"):
            raise ImproperlyConfigured(
                f"VECTORINDEX['JOBS'] must be 'auto', 'inline', 'celery' or 'manual', got {merged['JOBS']!r}."
            )
        for name, unit in NON_NEGATIVE_NUMBERS.items():
            value = merged[name]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ImproperlyConfigured(f"VECTORINDEX['{name}'] must be a number of {unit} ≥ 0, got {value!r}.")
        for name, unit in NON_NEGATIVE_INTEGERS.items():
            value = merged[name]
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ImproperlyConfigured(f"VECTORINDEX['{name}'] must be a whole number of {unit} ≥ 0, got {value!r}.")
        for name, unit in POSITIVE_NUMBERS.items():
            value = merged[name]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ImproperlyConfigured(f"VECTORINDEX['{name}'] must be a finite number of {unit} > 0, got {value!r}.")
        for name in BOOLEANS:
            if not isinstance(merged[name], bool):
                raise ImproperlyConfigured(f"VECTORINDEX['{name}'] must be True or False, got {merged[name]!r}.")
        for name in POSITIVE_INTEGERS:
            value = merged[name]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ImproperlyConfigured(
                    f"VECTORINDEX['{name}'] must be a positive integer, got {value!r}."
                )
        return merged

    def __getattr__(self, name: str) -> Any:
        if name not in self.defaults:
            raise AttributeError(f"Invalid VECTORINDEX setting: {name!r}")
        if self._cache is None:
            self._cache = self._load()
        return self._cache[name]

    def reload(self) -> None:
        self._cache = None


vectorindex_settings = VectorIndexSettings(DEFAULTS)


def reload_on_change(*, setting: str, **kwargs: Any) -> None:
    """``setting_changed`` receiver (connected by the app's ``ready()``): a changed VECTORINDEX is read again."""
    if setting == "VECTORINDEX":
        vectorindex_settings.reload()
