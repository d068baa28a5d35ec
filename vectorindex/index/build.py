"""Building an index from the rows that exist: ``manage.py vectorindex build``.

1. Heads are a random sample of the vectors (``head_fraction`` of them).
2. An HNSW graph over the heads is the head index.
3. Every vector goes to its nearest head and up to ``replicas`` heads in all
   (SPANN's rules, :mod:`vectorindex.engine.routing`).
4. A list over ``posting_limit`` is split around new heads picked among its
   vectors, and its vectors routed again, until the lists fit (a few rounds).
5. Posting lists are written as packed rows (one per list), a version row per
   vector, and a snapshot of the head index.
6. Once that commits, a calibration finds how many lists a query must read
   to meet the index's recall target (:mod:`.maintenance.calibrating`).

The build is one transaction that holds the index's state row exclusively, so
the rows it reads are all the rows there are: a writer that finds the index
not ready share-locks the state row and waits for the build to commit, and then
finds it ready. A rebuild of a ready index also locks every head, which waits
for appends in flight.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.db import transaction
from django.utils import timezone

from ..engine import postings, routing
from ..engine.calibration import Calibration
from ..engine.head import prepare
from ..engine.partition import REASSIGN_NEIGHBOURS, partition
from ..exceptions import CorruptVector, VectorIndexError
from ..models import IndexState
from ..storage import job_transaction
from ..storage.cache import posting_cache
from . import jobs
from .registry import Declared
from .rows import Progress, stream_vectors
from .runtime import runtime

# A build's generation is a random number of this many bits: positive in the
# state row's signed 64-bit column on every backend, and never met twice.
GENERATION_BITS = 62
# Posting rows handed to one append (one list's rows each, a row at most
# postings.ROW_BYTES), and so how often the progress bar moves while writing.
APPEND_ROWS = 200
# Version rows made and inserted per call: a build of millions of vectors
# never holds a parameter tuple for each at once (the driver cuts each call
# into statements of its own size).
VERSION_ROWS = 10_000


@dataclass
class BuildReport:
    name: str
    vectors: int
    heads: int
    entries: int
    seconds: float
    calibration: Calibration | None = None  # how many lists a query reads for the recall target

    @property
    def vectors_per_second(self) -> float:
        return self.vectors / self.seconds if self.seconds else float("inf")


def _read_vectors(declared: Declared, using: str, progress: Progress | None) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    """(vector ids, vectors, row keys) of every row whose vector is not NULL, streamed in chunks.

    The ids are the rows' integer keys; a keyed index (:attr:`Declared.keyed`),
    whose version rows were just cleared, numbers its rows from 1 and keeps
    their keys as text (None for an integer key).
    """
    total = declared.model._base_manager.using(using).filter(**{f"{declared.field.name}__isnull": False}).count()
    pks, blocks = [], []
    keys: list[str] | None = [] if declared.keyed else None
    done = 0
    try:
        for chunk_pks, matrix, chunk_keys in stream_vectors(declared, using):
            if keys is not None:
                chunk_pks = np.arange(len(keys) + 1, len(keys) + 1 + len(chunk_keys), dtype=np.int64)
                keys.extend(declared.key_text(pk) for pk in chunk_keys)
            pks.append(chunk_pks)
            blocks.append(matrix)
            done += len(chunk_pks)
            if progress:
                progress("read", done, total)
    except CorruptVector as error:
        # Raised before anything is written; the transaction rolls back the clearing.
        again = f"run `manage.py vectorindex build {declared.name}` again once they are fixed"
        raise CorruptVector(f"{error} The build changed nothing; {again}.") from None
    if not pks:
        return np.empty(0, np.int64), np.empty((0, declared.field.dimensions), np.float32), keys
    return np.concatenate(pks), np.concatenate(blocks), keys


def build_after_migrate(states: list[Any], using: str, *, report: Callable[[str], None], progress: bool) -> None:
    """Build each index that migrate left not built on *using* (its state row among *states*).

    Those in the migrated database (``declared``), whose options the checks
    accept and whose model is migrated on *using*; told to *report*, with
    progress bars when *progress*. Nothing with ``BUILD_ON_MIGRATE`` off.
    """
    from django.db import router

    from ..conf import vectorindex_settings
    from ..management.progress import progress_bars
    from ..storage.dialects import DIALECTS, vendor
    from ..wording import built_lines
    from .registry import declared_indexes

    if not vectorindex_settings.BUILD_ON_MIGRATE or vendor(using) not in DIALECTS:
        return
    declared = declared_indexes()
    for state in states:
        item = declared.get(state.name)
        if (
            item is None
            or not state.declared
            or state.status != IndexState.Status.EMPTY
            or item.index.problems()
            or not router.allow_migrate_model(using, item.model)
        ):
            continue
        report(f"Building {item.name} ({item.model._meta.label}.{item.field.name}):")
        try:
            with progress_bars(item.name, progress, unit="vec") as bars:
                done = build(item, using, progress=bars)
        except VectorIndexError as error:  # rows that cannot be indexed: migrate has done its part
            report(f"  {item.name} is not built (queries take the exact path): {error}")
            continue
        for line in built_lines(item.name, done):
            report(f"  {line}")


def build(declared: Declared, using: str = "default", *, progress: Progress | None = None, seed: int | None = None) -> BuildReport:
    started = time.perf_counter()
    options = declared.options
    rt = runtime(declared, using)
    # An index built for another declaration is opened too: this replaces it.
    storage, (previous_status, _generation, _lsn) = rt.open(outdated_ok=True)
    with transaction.atomic(using=using):
        # Committed at once: writers that see "building" wait on the state row.
        storage.set_state(status=IndexState.Status.BUILDING)
    try:
        report = _build(declared, using, rt, storage, options, progress, seed)
    except BaseException:
        with transaction.atomic(using=using):
            storage.set_state(status=previous_status)
        raise
    report.seconds = time.perf_counter() - started
    # The old build's rows can no longer be found (the generation is new):
    # their memory back at once, in this process at least.
    posting_cache.forget(using, storage.index_id)
    # Counted as `status` counts them, after the commit: lists the balancing
    # left over the limit were split then, by inline jobs, with new heads.
    alive = storage.alive_head_ids()
    sizes = storage.posting_sizes()
    report.heads = len(alive)
    report.entries = sum(sizes.get(head_id, (0, 0))[0] for head_id in alive)
    # On what was committed, with real queries: queries then read as many
    # lists as the recall target needs (not timed as part of the build).
    from .maintenance.calibrating import calibration

    report.calibration = calibration(declared, using, progress)
    return report


def _build(declared, using, rt, storage, options, progress, seed) -> BuildReport:
    with job_transaction(using):
        storage.lock_state(exclusive=True)
        storage.lock_all_heads()
        storage.clear()
        pks, vectors, keys = _read_vectors(declared, using, progress)
        rng = np.random.default_rng(seed)
        generation = secrets.randbits(GENERATION_BITS)
        count = len(pks)
        head_count = min(count, max(1, int(round(count * options["head_fraction"]))))
        chosen = np.sort(rng.choice(count, size=head_count, replace=False)) if count else np.empty(0, int)
        payload = postings.Payload.fit(options["payload"], vectors)
        storage.payload = payload
        rows, owners, head_vectors = _assign_balanced(rt, vectors[chosen], vectors, options, progress)
        if not count:
            # No rows (a table just created): one head for the first writes to
            # go to, split as any list once they outgrow it; the split's heads
            # are theirs. Any vector does: it is the only one.
            head_vectors = np.eye(1, declared.field.dimensions, dtype=np.float32)
        head_ids = storage.insert_heads(head_vectors, lsn=0)
        owners = head_ids[owners]
        head = rt.new_head(head_ids, head_vectors, generation=generation, lsn=0)
        if progress:
            progress("heads", len(head_ids), len(head_ids))

        entries = 0
        if count:
            versions = np.ones(count, dtype=np.uint32)
            batch: list[tuple[int, int, bytes]] = []
            written = 0
            for head_id, members in postings.by_head(rows, owners):
                for entry_count, data in payload.pack(pks[members], versions[members], vectors[members]):
                    batch.append((head_id, entry_count, data))
                written += len(members)
                if len(batch) >= APPEND_ROWS:
                    storage.append(batch)
                    batch = []
                    if progress:
                        progress("postings", written, len(rows))
            storage.append(batch)
            if progress:
                progress("postings", len(rows), len(rows))
            entries = len(rows)
            for start in range(0, count, VERSION_ROWS):
                storage.insert_versions(
                    pks[start : start + VERSION_ROWS], None if keys is None else keys[start : start + VERSION_ROWS]
                )
        storage.write_snapshot(generation, 0, head.to_bytes(), len(head))
        storage.set_state(
            status=IndexState.Status.READY,
            generation=generation,
            wal_lsn=0,
            swept_deleted=0,
            built_at=timezone.now(),
            options=json.dumps(options),
            payload=json.dumps(payload.to_state()),
            dimensions=declared.field.dimensions,
            distance=declared.metric,
            built_dimensions=declared.field.dimensions,
            built_distance=declared.metric,
        )
        # This process may use the new head index at once; others load the
        # snapshot. A rollback leaves a generation no state row will name.
        with rt.lock:
            rt.head = head
            rt.payload = (generation, payload)
        # A list that balancing left over the limit is split once this commits;
        # nothing else is due: no safety-net scan for a while (from the commit).
        jobs.scanned(declared.name, using)
        limit = options["posting_limit"]
        for head_id, (size, _rows) in storage.posting_sizes().items():
            if size > limit:
                jobs.enqueue("split", declared.name, using, head_id=head_id)
    return BuildReport(declared.name, count, len(head_ids), entries, 0.0)


# Rounds of splitting over-limit lists and routing again: each round splits
# what the last one left over the limit; what is still over after these few
# (crowds of one vector, say) is left to split jobs after the commit.
BALANCE_ROUNDS = 3


def _assign_balanced(rt, head_vectors, vectors, options, progress) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, head label per row, head vectors): every vector routed, lists within the limit.

    Sampled heads are not balanced: some lists come out far over
    ``posting_limit``. Each such list is split here as a split job would
    (:func:`~vectorindex.engine.partition.partition`: member vectors as new heads)
    and its vectors — and those of the lists around it — routed again among
    the new head set, before anything is written. Left to split jobs after the build, the same work would append
    to neighbouring lists and leave them fragmented and full of stale copies.
    Labels are positions in the returned head vectors; a list still over the
    limit after a few rounds is left to a split job.
    """
    metric = rt.declared.metric
    limit = options["posting_limit"]
    route = dict(replicas=options["replicas"], epsilon=options["replica_epsilon"])
    head = rt.new_head(np.arange(len(head_vectors)), head_vectors)
    if not len(vectors):
        return np.empty(0, np.int64), np.empty(0, np.int64), head_vectors
    prepared = prepare(head_vectors, metric)  # as the head index holds them, by label
    rows, owners = routing.assign(head, vectors, **route, head_vectors=prepared)
    if progress:
        progress("route", len(vectors), len(vectors))
    alive = np.ones(len(head_vectors), dtype=bool)
    for _round in range(BALANCE_ROUNDS):
        sizes = np.bincount(owners, minlength=len(head_vectors))
        over = np.flatnonzero(sizes > limit)
        if not len(over):
            break
        by_owner = np.argsort(owners, kind="stable")
        ends = np.cumsum(sizes)
        added = []
        for label in over.tolist():
            members = rows[by_owner[ends[label] - sizes[label] : ends[label]]]
            picked, _parts = partition(
                prepare(vectors[members], metric), limit, metric, seed=label, least=options["merge_below"]
            )
            added.append(vectors[members[picked]])
        added = np.concatenate(added)
        labels = np.arange(len(head_vectors), len(head_vectors) + len(added))
        head_vectors = np.concatenate([head_vectors, added])
        prepared = np.concatenate([prepared, prepare(added, metric)])
        alive = np.concatenate([alive, np.ones(len(added), dtype=bool)])
        alive[over] = False
        # The lists around a split one hold vectors that a new head may now be
        # nearest to (a split job's reassign): they are routed again too.
        around, _distances = head.search(head_vectors[over], REASSIGN_NEIGHBOURS + 1)
        head.add(labels, added)
        head.remove(over)
        moved = np.unique(rows[np.isin(owners, np.union1d(over, around.ravel()))])
        keep = ~np.isin(rows, moved)
        new_rows, new_owners = routing.assign(head, vectors[moved], **route, head_vectors=prepared)
        rows = np.concatenate([rows[keep], moved[new_rows]])
        owners = np.concatenate([owners[keep], new_owners])
        if progress:
            progress("balance", _round + 1, BALANCE_ROUNDS)
    # Labels renumbered over the heads that remain.
    renumber = np.cumsum(alive) - 1
    return rows, renumber[owners], head_vectors[alive]
