"""The read path: answering ``order_by(Distance(...))[:k]`` from the index (docs/ARCHITECTURE.md §4).

1. Bring this process's head index up to date (the state row: one key read).
   Inside a transaction that may not see that far (REPEATABLE READ), the
   heads as they stood at the state row's LSN are probed as well.
2. Probe the nearest heads — up to ``probes`` (as given, or as the index's
   calibration says they meet its recall target, or the recall asked for),
   those within ``(1 + ε)`` of the nearest; every head when ``probes``
   reaches their number — and read their posting lists (a range scan each;
   rows this process read before are taken from its cache once their keys
   are read, ``storage/cache.py``).
3. Score every entry exactly; keep entries whose version is the vector's current
   one (the version table: this drops stale copies and deleted rows); keep one
   entry per vector (replicas); apply the queryset's other conditions — the
   distance ones in numpy, the rest in SQL, on these candidates' keys only.
4. Fewer than *k* left? Probe twice as many heads, without the ε cut-off, and go
   on until *k* are found or every head has been read; an index that runs out
   hands the query to the exact path, so a filter that matches *k* rows always
   gets *k*.

All of it runs on the caller's connection, in the caller's transaction: a query
sees its own transaction's writes and nobody else's uncommitted ones.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from django.db import connections

from ..engine import candidates, codec, routing
from ..engine.candidates import Pool
from ..expressions import Distance
from ..orm.planner import Derived, DistancePlan, SearchOptions, evaluate, term_values
from ..storage import LISTS_PER_STATEMENT, dialect_for
from ..storage.cache import posting_cache
from ..storage.state import found_state, state_by_id
from .registry import Declared, index_for
from .rows import decoded_vectors, row_source, rows_by_pk
from .runtime import Opened, open_index, runtime

# Fewer than *k* found: the next round probes this many times as many heads,
# without the ε cut-off (step 4 above), so that an index that has fewer valid
# entries than asked for is read to the end in a few rounds.
PROBE_GROWTH = 2


def usable_index(queryset: Any, plan: DistancePlan) -> Declared | None:
    """The index that can answer this query, if any."""
    options: SearchOptions = queryset._vector_search
    if options.exact or plan.high is None or len(plan.order_keys) != 1:
        return None
    if queryset.query.is_empty():
        # none(), or an empty slice (Django empties a query whose slice is):
        # the exact path answers [] without reading a row.
        return None
    term, descending, nulls_first = plan.order_keys_effective()[0]
    if descending or nulls_first:
        return None
    if plan.order_tail and plan.order_tail != ["pk"]:
        return None
    distance = plan.terms[term]
    if not isinstance(distance, Distance):
        return None  # ordered by an expression over distances: answered exactly
    if "__" in distance.field_path or distance.vector is None or distance.cast is not None:
        return None  # a cast's distance is answered exactly
    if any(isinstance(t, Distance) and t.field_path != distance.field_path for t in plan.terms):
        return None
    if any(not isinstance(t, (Distance, Derived)) for t in plan.terms):
        return None  # Case() or a field's values in a term: SQL computes part of it, on every row
    if any(isinstance(t, Distance) and t.other_path is not None for t in plan.terms):
        return None
    return index_for(queryset.model, distance.field_path, distance.metric)


def answer(queryset: Any, plan: DistancePlan) -> tuple[list, list[np.ndarray]] | None:
    """(primary keys, distances per term) of the result, or None for the exact path."""
    declared = usable_index(queryset, plan)
    if declared is None:
        return None
    using = queryset.db
    options: SearchOptions = queryset._vector_search
    defaults = declared.options
    epsilon = defaults["probe_epsilon"] if options.epsilon is None else options.epsilon
    term_index = plan.order_keys[0].term
    query = plan.terms[term_index].vector
    need = plan.high
    first = _first_read(declared, using, options, query, epsilon)
    opened = open_index(declared, using) if first is None else first.opened
    if not opened.ready:
        return None
    rt, storage, state = opened
    head = rt.current(storage, state)
    view = rt.view(storage, state, head)
    routers = [head] if view is None else [view, head]
    everything = max(len(router) for router in routers)
    if not everything:
        return None
    probes = options.probes or rt.probes(options.recall)

    sql_filter = _sql_filter(queryset, plan)
    exact = _Exact(declared, storage, using, defaults["rerank"])
    pool = Pool.empty(len(plan.terms))
    rows_per_head: dict[int, int] = {}
    read: set[int] = set()
    count = min(probes, everything)
    if first is not None and first.current and routers == [first.head] and count == first.count:
        # The head index had not moved on: the lists probed before the state row was read, and their keys.
        heads, keys = first.heads, first.keys
    else:
        heads = candidates.union(routing.probe(router, query, count, epsilon) for router in routers)
        keys = None
    while True:
        fresh = [h for h in heads if h not in read]
        read.update(fresh)
        if fresh:
            entries = storage.search_postings(fresh, state.generation, rows_per_head, keys)
            keys = None
            if len(entries):
                values = term_values(plan, lambda term: term.estimate(entries, storage.payload))
                errors = plan.terms[term_index].error_bound(entries, storage.payload)
                pool.add(entries, values, _passing(plan, values), errors)
        chosen = candidates.best(
            pool,
            term_index,
            need,
            exact.rerank,
            resolve=lambda vector_ids: exact.current(vector_ids, sql_filter),
            score=lambda positions: _score(pool, plan, positions, exact),
        )
        if chosen is not None or count >= everything:
            break  # found, or every list has been read
        count = min(PROBE_GROWTH * count, everything)
        heads = candidates.union(routing.ranked_heads(router, query, count) for router in routers)
    _trigger_defragment(declared, using, rows_per_head)
    if chosen is None:
        return None  # the index ran out before k rows: the exact path decides
    ids, values = chosen
    ids = ids[plan.low :].tolist()
    if declared.keyed:  # every id chosen was resolved, its row's key read
        ids = [exact.pks[vector_id] for vector_id in ids]
    return ids, [column[plan.low :] for column in values]


class _FirstRead(NamedTuple):
    opened: Opened
    head: Any  # the head index as this process had it
    current: bool  # it was of the state row's generation and LSN: current() keeps it as it is
    count: int  # probes
    heads: list[int]  # the lists probed on it
    keys: list[tuple]  # their rows' keys


def _first_read(declared: Declared, using: str, options: SearchOptions, query: np.ndarray, epsilon: float) -> _FirstRead | None:
    """The state row and the keys of the lists a query will likely read, in one round trip; None where it cannot.

    Where the connection sends several statements at once (MySQL/MariaDB),
    outside a transaction, with the posting cache on and the head index
    loaded: the lists are probed on the head index as this process has it,
    and their keys read by the statement after the state row's. The query
    uses those lists and keys only if the state row says that head index was
    current (the same generation and LSN, and the same probes once the row's
    calibration is read); otherwise it probes again and reads the keys
    again, as without this. Either way the keys are read after the state
    row, on the query's own connection, as they would be in two round trips.
    """
    connection = connections[using]
    dialect = dialect_for(connection)
    rt = runtime(declared, using)
    head = rt.head
    if (
        connection.in_atomic_block
        or not posting_cache.budget
        or not dialect.multi_statements(connection)
        or head is None
        or rt.state_id is None
        or not len(head)
    ):
        return None
    storage = rt.storage_for(head)
    count = min(options.probes or rt.probes(options.recall), len(head))
    if storage is None or count > LISTS_PER_STATEMENT:
        return None
    generation, lsn = head.generation, head.lsn
    heads = candidates.union([routing.probe(head, query, count, epsilon)])
    state_rows, keys = dialect.read_batch(
        connection, [state_by_id(connection, declared.name, rt.state_id), storage.keys_statement(heads)]
    )
    found = found_state(state_rows[0] if state_rows else None)
    if found is None:
        return None  # the state table was emptied and filled again since: found by name as usual
    opened = Opened(rt, *rt.open(found=found))
    current = (opened.state.generation, opened.state.wal_lsn) == (generation, lsn)
    return _FirstRead(opened, head, current, count, heads, keys)


def _sql_filter(queryset: Any, plan: DistancePlan) -> Any:
    """A queryset of the rows the query's SQL conditions allow, or None for all."""
    if plan.where_sql is None or not plan.where_sql.children:
        return None
    from ..orm.exact import sql_queryset

    base = sql_queryset(queryset, plan)
    base.query.clear_ordering(force=True)
    return base


class _Exact:
    """Exact distances for the few candidates that may be the answer.

    With float32 entries the vectors are those read; a smaller payload format
    stores an approximation, so these candidates' vectors are read from the
    model's own rows, by the statement that reads their versions (one round
    trip for both). *rerank* more candidates than asked for are scored, since
    the estimates (float32 arithmetic, and the payload's rounding) may have
    ordered them wrongly.
    """

    def __init__(self, declared: Declared, storage: Any, using: str, rerank: int) -> None:
        self.declared = declared
        self.storage = storage
        self.using = using
        self.rerank = rerank
        # vector id -> its row's stored vector (None: no value), read with its version.
        self.stored: dict[int, bytes | None] = {}
        # A keyed index's (Declared.keyed): vector id -> the row's primary key.
        self.pks: dict[int, Any] = {}

    def current(self, vector_ids: list[int], sql_filter: Any) -> dict[int, int]:
        """The current version of each of these vectors that exists and that the query's SQL conditions allow."""
        if self.declared.keyed:
            return self._current_keyed(vector_ids, sql_filter)
        if self.storage.payload.lossy:
            found = self.storage.current_versions_with_rows(
                vector_ids, *row_source(self.declared, self.storage.connection)
            )
            self.stored.update((vector_id, value) for vector_id, (_version, value) in found.items())
            current = {vector_id: version for vector_id, (version, _value) in found.items()}
        else:
            current = self.storage.current_versions(vector_ids)
        if sql_filter is not None and current:
            allowed = set(sql_filter.filter(pk__in=list(current)).values_list("pk", flat=True))
            current = {vid: version for vid, version in current.items() if vid in allowed}
        return current

    def _current_keyed(self, vector_ids: list[int], sql_filter: Any) -> dict[int, int]:
        """:meth:`current` for a keyed index: the rows found by the keys their version rows keep, read with them."""
        declared = self.declared
        found = self.storage.current_versions_with_keys(vector_ids)
        self.pks.update((vector_id, declared.key_value(key)) for vector_id, (_version, key) in found.items())
        current = {vector_id: version for vector_id, (version, _key) in found.items()}
        if self.storage.payload.lossy and current:
            rows = rows_by_pk(declared, self.using, [self.pks[vector_id] for vector_id in current])
            dtype = declared.field.storage_dtype
            self.stored.update(
                (vector_id, None if self.pks[vector_id] not in rows else codec.to_bytes(rows[self.pks[vector_id]], dtype))
                for vector_id in current
            )
        if sql_filter is not None and current:
            allowed = set(sql_filter.filter(pk__in=[self.pks[vid] for vid in current]).values_list("pk", flat=True))
            current = {vid: version for vid, version in current.items() if self.pks[vid] in allowed}
        return current

    def vectors(self, pool: Pool, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(vectors, which positions have one): a row deleted by a transaction
        that committed since its version was read (READ COMMITTED) has none."""
        if not self.storage.payload.lossy:
            vectors = np.ascontiguousarray(pool.entries(positions)["vector"], dtype=np.float32)
            return vectors, np.ones(len(positions), dtype=bool)
        ids = pool.ids[positions].tolist()
        # Every candidate scored was resolved first (candidates.valid): its row was read with its version.
        rows = [(vector_id, self.stored[vector_id]) for vector_id in ids if self.stored.get(vector_id) is not None]
        stored = decoded_vectors(self.declared, rows)
        present = np.array([vector_id in stored for vector_id in ids], dtype=bool)
        vectors = np.stack([stored[vector_id] for vector_id in ids if vector_id in stored]) if stored else None
        return (np.empty((0, self.declared.field.dimensions), np.float32) if vectors is None else vectors), present


def _passing(plan: DistancePlan, values: list[np.ndarray]) -> np.ndarray:
    """Whether the query's distance conditions hold on these distances (one per term)."""
    passing = ~np.isnan(values[plan.order_keys[0].term])
    if plan.where_numpy is not None:
        passing &= evaluate(plan.where_numpy, values, plan)[0]
    return passing


def _score(pool: Pool, plan: DistancePlan, positions: np.ndarray, exact: _Exact) -> tuple[np.ndarray, list[np.ndarray]]:
    """(the *positions* that pass on their exact distances, those distances per term)."""
    vectors, present = exact.vectors(pool, positions)
    positions = positions[present]
    values = term_values(plan, lambda term: term.compute(vectors))
    passing = _passing(plan, values)
    return positions[passing], [column[passing] for column in values]


def _trigger_defragment(declared: Declared, using: str, rows_per_head: dict[int, int]) -> None:
    """A posting list read as many small rows gets packed (after this transaction)."""
    from . import jobs

    most = declared.options["defragment_rows"]
    for head_id, rows in rows_per_head.items():
        if rows > most:
            jobs.enqueue_for_read("defragment", declared.name, using, head_id=head_id, above_rows=most)
