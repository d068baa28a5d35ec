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
    """Candidates found so far: one entry per vector, at its current version."""

    ids: list[np.ndarray] = field(default_factory=list)
    vectors: list[np.ndarray] = field(default_factory=list)
    # Vectors settled: found at their current version, or known to be deleted
    # or excluded by the query's SQL conditions. A vector met only in a stale
    # copy is not settled: its current copy may be in a head not read yet.
    settled: set[int] = field(default_factory=set)


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
    pool = _Pool()
    read: set[int] = set()
    heads = routing.probe(head, query, min(probes, len(head)), epsilon)
    count = probes
    while True:
        fresh = [int(h) for h in heads if int(h) not in read]
        read.update(fresh)
        if fresh:
            _gather(storage, pool, fresh, sql_filter)
        found = _rank(pool, plan, need)
        if found is not None or len(read) >= len(head):
            break
        count = min(2 * count, len(head))
        heads = routing.ranked_heads(head, query, count)
    if found is None:
        return None  # the index ran out before k rows: the exact path decides
    ids, values = found
    end = plan.high
    return ids[plan.low : end].tolist(), [v[plan.low : end] for v in values]


def _sql_filter(queryset: Any, plan: DistancePlan) -> Any:
    """A queryset of the rows the query's SQL conditions allow, or None for all."""
    if plan.where_sql is None or not plan.where_sql.children:
        return None
    from .exact import sql_queryset

    base = sql_queryset(queryset, plan)
    base.query.clear_ordering(force=True)
    return base


def _gather(storage: Any, pool: _Pool, head_ids: list[int], sql_filter: Any) -> None:
    entries = storage.read_postings(head_ids)
    if pool.settled and len(entries):
        settled = np.fromiter(pool.settled, np.int64, len(pool.settled))
        entries = entries[~np.isin(entries["id"], settled)]
    if not len(entries):
        return
    unique_ids = np.unique(entries["id"])
    current = storage.current_versions(unique_ids.tolist())
    if sql_filter is not None and current:
        allowed = set(sql_filter.filter(pk__in=list(current)).values_list("pk", flat=True))
        current = {vid: version for vid, version in current.items() if vid in allowed}
    pool.settled.update(int(i) for i in unique_ids if int(i) not in current)
    if not current:
        return
    known = np.array(sorted(current.items()), dtype=np.int64)
    position = np.searchsorted(known[:, 0], entries["id"])
    position[position >= len(known)] = 0
    matches = (known[position, 0] == entries["id"]) & (known[position, 1] == entries["version"])
    entries = entries[matches]
    # Replicas of one vector carry the same version and vector: keep one.
    _, first = np.unique(entries["id"], return_index=True)
    entries = entries[first]
    pool.settled.update(int(i) for i in entries["id"])
    pool.ids.append(entries["id"].astype(np.int64))
    pool.vectors.append(np.ascontiguousarray(entries["vector"]))


def _rank(pool: _Pool, plan: DistancePlan, need: int) -> tuple[np.ndarray, list[np.ndarray]] | None:
    """The best *need* candidates with every distance, or None when too few pass."""
    if not pool.ids:
        return None
    ids = np.concatenate(pool.ids)
    vectors = np.concatenate(pool.vectors)
    values = [term.compute(vectors) for term in plan.terms]
    keep = ~np.isnan(values[plan.order_keys[0].term])
    if plan.where_numpy is not None:
        true, _ = evaluate(plan.where_numpy, values, plan)
        keep &= true
    if keep.sum() < need:
        return None
    ids = ids[keep]
    values = [v[keep] for v in values]
    order = np.lexsort((ids, values[plan.order_keys[0].term]))[:need]
    return ids[order], [v[order] for v in values]
