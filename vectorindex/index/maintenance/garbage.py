"""Compact and collect: what the index no longer needs goes, a long WAL into a
snapshot and retired heads once no process can still route to them (docs/ARCHITECTURE.md §5).
"""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from ...conf import vectorindex_settings
from ...storage import job_transaction
from ...wording import counted
from ..jobs import Outcome, runner
from ..recovery import take_snapshot
from ..registry import Declared
from ..runtime import open_index
from .steps import NOT_READY
from .sweeping import forget_versions


@runner("compact")
def compact(declared: Declared, using: str = "default", damaged: int | None = None) -> Outcome:
    """Snapshot the head index and truncate the WAL, once the WAL is long.

    With *damaged* (the id of a snapshot that does not verify, 0 for none at
    all), snapshot whatever the WAL's length, unless a newer snapshot has
    replaced that one already.
    """
    opened = open_index(declared, using)
    if not opened.ready:
        return Outcome("compact", NOT_READY)
    _rt, storage, state = opened
    length = storage.wal_length()
    if damaged is not None:
        newest = storage.newest_snapshot(state.generation)
        if (newest.pk if newest else 0) != damaged:
            return Outcome("compact", f"damaged snapshot {damaged} already replaced")
    elif length < vectorindex_settings.WAL_SNAPSHOT_ENTRIES:
        return Outcome("compact", f"WAL has {counted(length, 'entry', 'entries')}: not yet")
    snapshot = take_snapshot(declared, using)
    replaced = f" in place of damaged snapshot {damaged}" if damaged else ""
    return Outcome("compact", f"snapshot at LSN {snapshot.lsn}{replaced}; {counted(length, 'WAL entry', 'WAL entries')} dropped")


@runner("collect")
def collect(declared: Declared, using: str = "default") -> Outcome:
    """Delete retired heads and their rows once their grace period is over.

    Version rows of deleted vectors that the last sweep had to leave (a
    retired list still named them) are then removed, if nothing names them now.
    """
    with job_transaction(using):
        storage = open_index(declared, using).storage
        before = timezone.now() - timedelta(seconds=vectorindex_settings.RETIRED_GRACE)
        expired = storage.expired_heads(before)
        storage.delete_heads(expired)
    detail = f"{counted(len(expired), 'retired head')} deleted"
    if expired and storage.swept_deleted():
        forgotten, _named = forget_versions(storage, using)
        detail += f"; {counted(forgotten, 'version row')} of deleted vectors removed"
    return Outcome("collect", detail)
