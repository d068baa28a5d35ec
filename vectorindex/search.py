"""The read path: answering ``order_by(Distance(...))[:k]`` from the index (DESIGN §4).

1. Bring this process's head index up to date (the state row: one key read).
2. Probe the nearest heads — up to ``probes``, those within ``(1 + ε)`` of the
   nearest — and read their posting lists (a range scan each).
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

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .engine import routing
from .models import IndexState
from .planner import DistancePlan, SearchOptions, evaluate
from .registry import Declared, index_for, runtime


@dataclass
class _Pool:
    """Entries read so far, scored; validated lazily, best first."""

    ids: np.ndarray
    versions: np.ndarray
    values: list[np.ndarray]  # per plan term
    passing: np.ndarray  # the distance conditions hold
    # vector id -> its current version, or -1: deleted, or excluded by the
    # query's SQL conditions. Asked only for the best candidates.
    known: dict[int, int] = field(default_factory=dict)

    @classmethod
    def empty(cls, terms: int) -> _Pool:
        return cls(
            np.empty(0, np.int64),
            np.empty(0, np.uint32),
            [np.empty(0) for _ in range(terms)],
            np.empty(0, bool),
        )

    def add(self, entries: np.ndarray, plan: DistancePlan) -> None:
        vectors = np.ascontiguousarray(entries["vector"])
        values = [term.compute(vectors) for term in plan.terms]
        passing = ~np.isnan(values[plan.order_keys[0].term])
        if plan.where_numpy is not None:
            passing &= evaluate(plan.where_numpy, values, plan)[0]
        self.ids = np.concatenate([self.ids, entries["id"].astype(np.int64)])
        self.versions = np.concatenate([self.versions, entries["version"]])
        self.values = [np.concatenate([old, new]) for old, new in zip(self.values, values)]
        self.passing = np.concatenate([self.passing, passing])


def usable_index(queryset: Any, plan: DistancePlan) -> Declared | None:
    """The index that can answer this query, if any."""
    options: SearchOptions = queryset._vector_search
    if options.exact or plan.high is None or len(plan.order_keys) != 1:
        return None
    term, descending, nulls_first = plan.order_keys_effective()[0]
    if descending or nulls_first:
        return None
    if plan.order_tail and plan.order_tail != ["pk"]:
        return None
    distance = plan.terms[term]
    if "__" in distance.field_path or distance.vector is None:
        return None
    if any(t.field_path != distance.field_path for t in plan.terms):
        return None
    return index_for(queryset.model, distance.field_path, distance.metric)


def answer(queryset: Any, plan: DistancePlan) -> tuple[list, list[np.ndarray]] | None:
    """(primary keys, distances per term) of the result, or None for the exact path."""
    declared = usable_index(queryset, plan)
    if declared is None:
        return None
    using = queryset.db
    rt = runtime(declared, using)
    storage, state = rt.open()
    if state[0] != IndexState.Status.READY:
        return None
    head = rt.current(storage, state)
    if not len(head):
        return None
    options: SearchOptions = queryset._vector_search
    defaults = declared.options
    probes = options.probes or defaults["probes"]
    epsilon = defaults["probe_epsilon"] if options.epsilon is None else options.epsilon
    term_index = plan.order_keys[0].term
    query = plan.terms[term_index].vector
    need = plan.high

    sql_filter = _sql_filter(queryset, plan)
    pool = _Pool.empty(len(plan.terms))
    rows_per_head: dict[int, int] = {}
    read: set[int] = set()
    heads = routing.probe(head, query, min(probes, len(head)), epsilon)
    count = probes
    while True:
        fresh = [int(h) for h in heads if int(h) not in read]
        read.update(fresh)
        if fresh:
            entries = storage.read_postings(fresh, rows_per_head)
            if len(entries):
                pool.add(entries, plan)
        chosen = _best(pool, plan, need, storage, sql_filter)
        if chosen is not None or len(read) >= len(head):
            break
        count = min(2 * count, len(head))
        heads = routing.ranked_heads(head, query, count)
    _trigger_defragment(declared, using, rows_per_head)
    if chosen is None:
        return None  # the index ran out before k rows: the exact path decides
    ids = pool.ids[chosen]
    values = [column[chosen] for column in pool.values]
    return ids[plan.low :].tolist(), [column[plan.low :] for column in values]


def _sql_filter(queryset: Any, plan: DistancePlan) -> Any:
    """A queryset of the rows the query's SQL conditions allow, or None for all."""
    if plan.where_sql is None or not plan.where_sql.children:
        return None
    from .exact import sql_queryset

    base = sql_queryset(queryset, plan)
    base.query.clear_ordering(force=True)
    return base


def _best(pool: _Pool, plan: DistancePlan, need: int, storage: Any, sql_filter: Any) -> np.ndarray | None:
    """Pool positions of the best *need* valid entries, best first; None if too few.

    Walks the passing entries in distance order (ties by id) and asks the
    database about their vectors a window at a time: the current version (a
    stale copy or a deleted row drops out) and, with SQL conditions, whether
    the row matches them. One entry per vector (replicas are identical).
    """
    candidates = np.flatnonzero(pool.passing)
    order = candidates[np.lexsort((pool.ids[candidates], pool.values[plan.order_keys[0].term][candidates]))]
    chosen: list[int] = []
    taken: set[int] = set()
    window = max(4 * need, 64)
    for start in range(0, len(order), window):
        positions = order[start : start + window]
        unknown = sorted({int(i) for i in pool.ids[positions]} - pool.known.keys())
        if unknown:
            _resolve(pool, unknown, storage, sql_filter)
        for position in positions.tolist():
            vector_id = int(pool.ids[position])
            if vector_id in taken or pool.known[vector_id] != int(pool.versions[position]):
                continue
            chosen.append(position)
            taken.add(vector_id)
            if len(chosen) == need:
                return np.array(chosen, dtype=np.int64)
    return None


def _resolve(pool: _Pool, vector_ids: list[int], storage: Any, sql_filter: Any) -> None:
    current = storage.current_versions(vector_ids)
    if sql_filter is not None and current:
        allowed = set(sql_filter.filter(pk__in=list(current)).values_list("pk", flat=True))
        current = {vid: version for vid, version in current.items() if vid in allowed}
    for vector_id in vector_ids:
        pool.known[vector_id] = current.get(vector_id, -1)


def _trigger_defragment(declared: Declared, using: str, rows_per_head: dict[int, int]) -> None:
    """A posting list read as many small rows gets packed (after this transaction)."""
    from . import jobs

    most = declared.options["defragment_rows"]
    for head_id, rows in rows_per_head.items():
        if rows > most:
            jobs.enqueue("defragment", declared.name, using, head_id=head_id, dedupe=True)
