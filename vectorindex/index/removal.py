"""What indexes left behind, and ``vectorindex drop``, which deletes it.

Dropping the model's table (``DeleteModel``, or its app migrated back) or
uninstalling its app touches no index, so what such an index stored stays
behind: ``status`` lists these leftovers once no model declares the name,
and ``drop`` deletes them. An index in the database again under that name
does not take them over: the end of ``migrate`` deletes them
(:func:`vectorindex.index.registry.sync_states`). What a migration's
``RemoveIndex`` and ``AddIndex`` do with an index's contents is
:mod:`vectorindex.index.schema`'s.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import connections, transaction
from django.db.models import Count, Sum

from ..models import Head, IndexState, Posting, Snapshot, Version, WalEntry
from ..wording import counted
from .schema import drop_statements

__all__ = ["Stored", "drop", "find", "leftovers"]


@dataclass(frozen=True)
class Stored:
    """What one index keeps in vectorindex's tables."""

    name: str
    model: str
    field: str
    status: str
    heads: int
    posting_rows: int
    posting_entries: int
    versions: int
    wal_entries: int
    snapshots: int
    snapshot_bytes: int

    def describe(self) -> str:
        return ", ".join(
            [
                counted(self.heads, "head"),
                f"{counted(self.posting_entries, 'posting entry', 'posting entries')} "
                f"in {counted(self.posting_rows, 'row')}",
                counted(self.versions, "version"),
                counted(self.wal_entries, "WAL entry", "WAL entries"),
                f"{counted(self.snapshots, 'snapshot')} ({self.snapshot_bytes:,} bytes)",
            ]
        )


def _measure(state: IndexState, using: str) -> Stored:
    postings = Posting.objects.using(using).filter(index_id=state.pk).aggregate(rows=Count("*"), entries=Sum("count"))
    snapshots = Snapshot.objects.using(using).filter(index_id=state.pk).aggregate(count=Count("*"), size=Sum("size"))
    return Stored(
        name=state.name,
        model=state.model_label,
        field=state.field_name,
        status=state.status,
        heads=Head.objects.using(using).filter(index_id=state.pk).count(),
        posting_rows=postings["rows"],
        posting_entries=postings["entries"] or 0,
        versions=Version.objects.using(using).filter(index_id=state.pk).count(),
        wal_entries=WalEntry.objects.using(using).filter(index_id=state.pk).count(),
        snapshots=snapshots["count"],
        snapshot_bytes=snapshots["size"] or 0,
    )


def find(name: str, using: str = "default") -> Stored | None:
    """What index *name* stores, declared or not; None when nothing is stored under that name."""
    state = IndexState.objects.using(using).filter(name=name).first()
    return None if state is None else _measure(state, using)


def leftovers(using: str = "default") -> list[Stored]:
    """What indexes that no model declares any more left behind, by name."""
    from .registry import declared_names

    states = IndexState.objects.using(using).exclude(name__in=list(declared_names())).order_by("name")
    return [_measure(state, using) for state in states]


def drop(name: str, using: str = "default") -> Stored | None:
    """Delete index *name*'s stored contents and its state row in one transaction; what they were."""
    from .runtime import reset_runtimes

    connection = connections[using]
    with transaction.atomic(using=using):
        # Locked first, so that a job still running on the index finishes before.
        state = IndexState.objects.using(using).select_for_update().filter(name=name).first()
        if state is None:
            return None
        found = _measure(state, using)
        with connection.cursor() as cursor:
            for sql, params in drop_statements(connection, name):
                cursor.execute(sql, params)
    reset_runtimes()  # this process's head index of the dropped contents
    return found
