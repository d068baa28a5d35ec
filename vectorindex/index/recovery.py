"""Snapshots, recovery, invariant checks and status (docs/ARCHITECTURE.md §5–§6).

After a crash there is nothing to repair: the database's own recovery already
made postings, heads, versions and WAL agree, and any process rebuilds its head
index from the newest snapshot and the WAL. ``recover`` does that explicitly,
verifies the result against the heads table, and rebuilds the head index from
the heads table when a snapshot is missing or does not verify.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from django.db import connections, transaction
from django.utils import timezone

from ..engine.calibration import EVERY_LIST
from ..engine.codec import STORAGE_DTYPE
from ..engine.head import HeadIndex, prepare
from ..exceptions import HeadIndexError, IndexNotReady, SnapshotError
from ..models import Head, IndexState, Snapshot
from ..storage import (
    PostingMemory,
    StateRow,
    Storage,
    dialect_for,
    job_transaction,
    posting_memory,
)
from ..wording import buffer_pool_warning, counted
from .integrity import Survey, survey
from .registry import Declared
from .runtime import Opened, load, open_index, rebuild_from_heads

# A snapshot is of a head index rebuilt from the alive heads when its graph
# holds more than this many elements per alive head.
COMPACT_ABOVE = 1.1
# Ids a finding names as examples (the check's output is read by people).
EXAMPLES = 5
# A head vector in the head index and in the heads table are the same when
# they agree this closely: float32, and cosine's vectors normalised anew.
SAME_VECTOR = {"rtol": 1e-5, "atol": 1e-6}


def _ready(declared: Declared, using: str) -> Opened:
    opened = open_index(declared, using)
    if not opened.ready:
        changes = opened.runtime.changes_since_build()
        why = f" (its contents were deleted when its declaration changed: {', '.join(changes)})" if changes else ""
        raise IndexNotReady(f"{declared.name} is not built{why}; run `manage.py vectorindex build {declared.name}`.")
    return opened


def take_snapshot(declared: Declared, using: str = "default") -> Snapshot:
    """Write the head index at the current LSN, then drop older snapshots and the WAL up to it.

    Holds the state row exclusively, which pauses head-changing jobs; user
    reads and writes go on.
    """
    rt, storage, _state = _ready(declared, using)
    with job_transaction(using):
        state = storage.lock_state(exclusive=True)
        head = rt.current(storage, state)
        if head.elements > COMPACT_ABOVE * len(head):
            # Retired heads still in the graph: the snapshot (and every process
            # that loads it) gets a graph of the alive heads alone. This
            # process's copy keeps what the old one remembered, so a
            # transaction older than this LSN still views the heads without
            # loading a head index of its own.
            rebuilt = rebuild_from_heads(rt, storage, state.generation, state.wal_lsn)
            rebuilt.take_history(head)
            head = rebuilt
            with rt.lock:
                rt.head = head
        snapshot = _replace_snapshots(storage, state, head)
    return snapshot


def _replace_snapshots(storage: Storage, state: StateRow, head: HeadIndex) -> Snapshot:
    """Write *head* as the snapshot at the state row's LSN; drop the older snapshots and the WAL up to it.

    The caller holds the state row exclusively (*state* is as that lock read
    it): no head change commits in between.
    """
    snapshot = storage.write_snapshot(state.generation, state.wal_lsn, head.to_bytes(), len(head))
    storage.delete_snapshots(keep=snapshot.pk)
    storage.truncate_wal(state.wal_lsn)
    return snapshot


def verify(head: HeadIndex, storage: Any) -> list[str]:
    """Differences between a head index and the heads table."""
    problems = []
    ids, vectors = storage.alive_heads()
    alive = {int(i) for i in ids}
    missing = alive - head.alive
    extra = head.alive - alive
    if missing:
        problems.append(
            f"{counted(len(missing), 'alive head')} {'is' if len(missing) == 1 else 'are'} "
            f"not in the head index (e.g. {sorted(missing)[:EXAMPLES]})"
        )
    if extra:
        problems.append(
            f"{counted(len(extra), 'head')} in the head index {'is' if len(extra) == 1 else 'are'} "
            f"retired or unknown (e.g. {sorted(extra)[:EXAMPLES]})"
        )
    common = np.array(sorted(alive & head.alive), dtype=np.int64)
    if len(common):
        stored = prepare(vectors[np.searchsorted(ids, common)], head.metric)
        held = head.vectors(common)
        if not np.allclose(stored, held, **SAME_VECTOR):
            problems.append("head vectors in the head index differ from the heads table")
    return problems


@dataclass
class RecoveryReport:
    name: str
    source: str  # "snapshot" or "heads table"
    heads: int
    lsn: int
    problems: list[str] = field(default_factory=list)


def recover(declared: Declared, using: str = "default") -> RecoveryReport:
    rt, storage, state = _ready(declared, using)
    _status, generation, lsn = state
    problems: list[str] = []
    try:
        head = load(rt, storage, generation, strict=True)
        problems = verify(head, storage)
    except (SnapshotError, HeadIndexError) as error:
        problems = [str(error)]
        head = None
    if head is not None and not problems:
        with rt.lock:
            rt.head = head
        return RecoveryReport(declared.name, "snapshot", len(head), head.lsn)
    with job_transaction(using):
        state = storage.lock_state(exclusive=True)
        head = rebuild_from_heads(rt, storage, state.generation, state.wal_lsn)
        _replace_snapshots(storage, state, head)
    with rt.lock:
        rt.head = head
    return RecoveryReport(declared.name, "heads table", len(head), head.lsn, problems)


def check(declared: Declared, using: str = "default") -> tuple[list[str], list[str]]:
    """(violations, warnings) of the index's invariants, on one consistent snapshot."""
    return _on_one_snapshot(declared, using, lambda rt, storage, state: _check(declared, using, rt, storage, state))


def surveyed(declared: Declared, using: str = "default") -> Survey:
    """Every row against its entries (:mod:`vectorindex.index.integrity`), on one consistent snapshot."""
    return _on_one_snapshot(declared, using, lambda rt, storage, state: survey(declared, using, storage, _head(rt, storage, state)[0]))


def _on_one_snapshot(declared: Declared, using: str, work: Callable[[Any, Any, StateRow], Any]) -> Any:
    """*work*(runtime, storage, state) while writes and jobs go on, on one consistent snapshot.

    It share-locks the state row (a head-changing job or a build finishes
    first, and the next waits) and reads everything in one repeatable-read
    transaction, so that rows, versions, postings, heads and WAL are seen as
    of one moment. The lock is the transaction's first statement: InnoDB
    takes a repeatable-read snapshot at the first plain read, and one taken
    before the wait would show everything as it was before the job it waited
    for (the state row of a new build, say, and not the build's snapshot).
    """
    _rt, outer, _state = _ready(declared, using)  # not ready: said before any wait
    connection = connections[using]
    dialect_for(connection).isolate_next_transaction(connection, "REPEATABLE READ")
    with transaction.atomic(using=using):
        outer.lock_state(exclusive=False)
        rt, storage, state = _ready(declared, using)
        return work(rt, storage, state)


def _head(rt: Any, storage: Any, state: StateRow) -> tuple[HeadIndex | None, list[str]]:
    """The head index loaded afresh from snapshot and WAL, as a new process would, and how it differs from the heads table."""
    try:
        head = load(rt, storage, state.generation, strict=True)
    except (SnapshotError, HeadIndexError) as error:
        return None, [f"the head index cannot be loaded: {error}"]
    return head, verify(head, storage)


# What a survey's findings mean (for one row, for several).
FINDINGS = {
    "missing": ("row has a vector but no live version row", "rows have a vector but no live version row"),
    "lost": (
        "row is in no posting list of an alive head at its current version",
        "rows are in no posting list of an alive head at their current version",
    ),
    "changed": (
        "row holds another vector than its index entry (changed outside Django)",
        "rows hold another vector than their index entry (changed outside Django)",
    ),
    "unreachable": (
        "row is only in posting lists that a query for its own vector does not read with 128 probes (or those declared) and probe_epsilon",
        "rows are only in posting lists that a query for their own vector does not read with 128 probes (or those declared) and probe_epsilon",
    ),
    "orphaned": ("live version row belongs to no row with a vector", "live version rows belong to no row with a vector"),
}


def _check(declared: Declared, using: str, rt: Any, storage: Any, state: StateRow) -> tuple[list[str], list[str]]:
    warnings: list[str] = []
    options = declared.options

    # Every alive head is in the head index; no retired head is.
    head, violations = _head(rt, storage, state)
    found = survey(declared, using, storage, head)
    for kind, meaning in FINDINGS.items():
        keys = getattr(found, kind)
        if keys:
            violations.append(f"{len(keys):,} {meaning[len(keys) != 1]} (e.g. {sorted(keys)[:EXAMPLES]})")
    alive_heads = storage.alive_head_ids()

    limit = options["posting_limit"]
    sizes = storage.posting_sizes()
    oversized = [h for h, (entries, _rows) in sizes.items() if h in alive_heads and entries > limit]
    if oversized:
        warnings.append(
            f"{counted(len(oversized), 'posting list')} {'is' if len(oversized) == 1 else 'are'} "
            f"over the limit of {counted(limit, 'entry', 'entries')} "
            f"(largest {max(sizes[h][0] for h in oversized):,}); splitting is maintenance's job"
        )
    built, declared_format = storage.payload.format, options["payload"]
    if built != declared_format:
        warnings.append(
            f"the index stores {built} entries but declares payload={declared_format!r}; "
            f"it keeps {built} until `manage.py vectorindex build {declared.name}` rebuilds it"
        )
    return violations, warnings


def status(declared: Declared, using: str = "default") -> dict[str, Any]:
    opened = open_index(declared, using, outdated_ok=True)
    rt, storage, state = opened
    report: dict[str, Any] = {
        "name": declared.name,
        "model": declared.model._meta.label,
        "field": declared.field.name,
        "distance": declared.metric,
        "dimensions": declared.field.dimensions,
        "status": state.status,
        "wal_lsn": state.wal_lsn,
    }
    changes = rt.changes_since_build()
    if changes:
        # Not built (migrate reset it), or built but refused by every reader.
        report["changed_since_build"] = changes
    if state.status == IndexState.Status.EMPTY:
        # What a build would index: a "not built" index may have rows waiting.
        rows = declared.model._base_manager.using(using).filter(**{f"{declared.field.name}__isnull": False})
        report["rows_with_vectors"] = rows.count()
    if not opened.ready or changes:
        return report
    head = rt.current(storage, state)
    heads = Head.objects.using(using).filter(index_id=storage.index_id)
    alive = heads.filter(alive=True).count()
    sizes = storage.posting_sizes()
    entries = np.array([sizes.get(h, (0, 0))[0] for h in heads.filter(alive=True).values_list("pk", flat=True)])
    rows_per_list = np.array([v[1] for v in sizes.values()]) if sizes else np.zeros(1)
    versions = storage.all_versions()
    live = sum(1 for _v, deleted in versions.values() if not deleted)
    snapshot = Snapshot.objects.using(using).filter(index_id=storage.index_id).order_by("-lsn", "-pk").first()
    raw_bytes = live * declared.field.dimensions * STORAGE_DTYPE.itemsize
    memory = posting_memory(storage)
    report.update(
        {
            "heads": alive,
            "retired_heads": heads.count() - alive,
            "posting_lists": len(sizes),
            "posting_entries": int(entries.sum()) if len(entries) else 0,
            "posting_sizes": _distribution(entries),
            "posting_rows_per_list": _distribution(rows_per_list),
            "vectors": live,
            "deleted_versions": len(versions) - live,
            "wal_entries": storage.wal_length(),
            "snapshot_lsn": snapshot.lsn if snapshot else None,
            "snapshot_age_s": round((timezone.now() - snapshot.created_at).total_seconds(), 1) if snapshot else None,
            "snapshot_bytes": snapshot.size if snapshot else None,
            "head_index_bytes": head.nbytes(),
            "raw_vector_bytes": raw_bytes,
            "head_index_share": round(head.nbytes() / raw_bytes, 4) if raw_bytes else None,
            "payload": storage.payload.format,
            "declared_payload": declared.options["payload"],
            "entry_bytes": storage.payload.dtype.itemsize,
            "probes": probes_report(rt),
            "posting_bytes": memory.posting_bytes,
            "buffer_pool": asdict(memory.buffer_pool) if memory.buffer_pool else None,
            "buffer_pool_warning": buffer_pool_warning(memory),
        }
    )
    return report


def probes_report(rt: Any) -> dict[str, Any]:
    """How many lists a query reads by default, and why: declared, calibrated, or not calibrated yet."""
    options = rt.declared.options
    found = rt.calibration
    probes = rt.probes()
    if probes >= EVERY_LIST:  # as many as the index has heads
        probes = len(rt.head) if rt.head is not None else found.probes
    report: dict[str, Any] = {"probes": probes, "target": options["recall"]}
    if options["probes"] is not None:
        report["source"] = "declared"
    elif found is None:
        report["source"] = "not calibrated"
    else:
        report["source"] = "calibrated"
    if found is not None:
        report.update(
            calibrated_probes=found.probes, calibrated_target=found.target, measured_recall=round(found.recall, 4),
            queries=found.queries, calibrated_at=found.at, calibrated_vectors=found.vectors,
        )
    return report


def memory(declared: Declared, using: str = "default") -> PostingMemory | None:
    """The index's posting data against its server's buffer pool (as ``status`` shows it); None when it is not built."""
    opened = open_index(declared, using, outdated_ok=True)
    return posting_memory(opened.storage) if opened.ready else None


def _distribution(values: np.ndarray) -> dict[str, float]:
    """Percentiles and mean of per-list counts, to a tenth (interpolation gives 103.90000000000003)."""
    if not len(values):
        return {}
    q = np.percentile(values, [0, 50, 90, 99, 100])
    named = zip(["min", "p50", "p90", "p99", "max", "mean"], [*q, values.mean()])
    return {name: round(float(value), 1) for name, value in named}
