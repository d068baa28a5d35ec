"""Repair: the rows a survey finds (:mod:`vectorindex.index.integrity`) indexed again, orphaned versions marked deleted.

``repair`` indexes the missing, lost, changed and unreachable rows again (a
new version, routed afresh, in the same transaction as a lock on the row) and
marks the orphans deleted: no rebuild, and writes go on meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..storage import job_transaction
from . import writes
from .integrity import KINDS
from .recovery import surveyed
from .registry import Declared
from .runtime import open_index

# Rows a repair mends per transaction, each locked first: a user's save of one
# of them waits for that transaction at most, never for the whole repair.
REPAIR_BATCH = 500


@dataclass
class RepairReport:
    name: str
    found: dict[str, int]
    indexed: int
    orphans_deleted: int  # orphaned version rows marked deleted


def repair(declared: Declared, using: str = "default", *, progress: Callable[[str, int, int], None] | None = None) -> RepairReport:
    """Index again the rows a survey finds missing, lost, changed or unreachable; mark orphans deleted.

    The survey reads one consistent snapshot (as ``check`` does); each batch
    is then mended in a transaction of its own that locks the rows first
    (a user's save of one of them meanwhile has indexed it already, and the
    row's vector as read under the lock is what gets indexed). Writes go on.
    """
    found = surveyed(declared, using)
    todo = found.to_index()
    indexed = 0
    for start in range(0, len(todo), REPAIR_BATCH):
        indexed += _index_again(declared, using, todo[start : start + REPAIR_BATCH])
        if progress:
            progress("index", min(start + REPAIR_BATCH, len(todo)), len(todo))
    deleted = 0
    for start in range(0, len(found.orphaned), REPAIR_BATCH):
        deleted += _mark_orphans_deleted(declared, using, found.orphaned[start : start + REPAIR_BATCH])
        if progress:
            progress("orphans", min(start + REPAIR_BATCH, len(found.orphaned)), len(found.orphaned))
    counts = {kind: len(getattr(found, kind)) for kind in KINDS}
    return RepairReport(declared.name, counts, indexed, deleted)


def _index_again(declared: Declared, using: str, pks: list[int]) -> int:
    model = declared.model
    with job_transaction(using):
        rows = list(
            model._base_manager.using(using)
            .select_for_update()
            .filter(pk__in=pks)
            .values_list("pk", declared.field.attname)
        )
        writes.index_vectors(declared, using, rows, reachable=True)
    return sum(1 for _pk, vector in rows if vector is not None)


def _mark_orphans_deleted(declared: Declared, using: str, pks: list[Any]) -> int:
    model = declared.model
    with job_transaction(using):
        storage = open_index(declared, using).storage
        ids = pks
        if declared.keyed:
            by_key = storage.ids_of_keys([declared.key_text(pk) for pk in pks])
            ids = list(by_key.values())
            pk_of = {vector_id: declared.key_value(key) for key, vector_id in by_key.items()}
        locked = storage.lock_versions(ids)  # live ones; a save of one of them waits
        row_pks = {vector_id: pk_of[vector_id] for vector_id in locked} if declared.keyed else {i: i for i in locked}
        present = set(
            model._base_manager.using(using)
            .filter(pk__in=list(row_pks.values()), **{f"{declared.field.name}__isnull": False})
            .values_list("pk", flat=True)
        )
        orphans = [vector_id for vector_id, pk in row_pks.items() if pk not in present]
        storage.delete_versions(orphans)
    return len(orphans)
