"""The write path: index changes inside the caller's transaction (docs/ARCHITECTURE.md §3).

* insert — route the vector to its heads (the head index is only read),
  share-lock those heads' rows and check they are alive, append one entry per
  head, and give the vector a version row;
* update of the vector — a new version and a new entry; the old copies become
  stale and are skipped by searches (an update that leaves the vector alone
  does nothing here);
* delete — the version row's deleted flag; no posting list is touched.

Nothing is queued for later or kept in process memory: when the caller's
transaction rolls back, so does all of this. Lock order, the same as a
build's: state row (only while the index is not ready), heads, versions.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..engine import postings, routing
from ..exceptions import IndexWriteError
from . import jobs
from .registry import Declared
from .runtime import open_index, runtime

# Times a write routes again when a head it chose was retired meanwhile (a
# split or merge committed between its routing and its lock): each attempt
# catches up with the newest heads first, so a second one is nearly always
# the last; more than a few means heads keep changing under it (IndexWriteError).
ROUTE_ATTEMPTS = 5
_local = threading.local()
_router = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vectorindex-router")


def _ready_storage(declared: Declared, using: str):
    """(runtime, storage, state, waited for a build?) when the index takes writes now, else None.

    An index that is not ready has nothing to append to: its build will read
    the row. While a build runs, the shared lock makes this writer wait for it
    (and then find the index ready), so that no row slips between the two.
    """
    opened = open_index(declared, using)
    if opened.ready:
        return (*opened, False)
    rt, storage, _state = opened
    state = storage.lock_state(exclusive=False)
    if not state.ready:
        return None
    # The build this writer waited for chose the entries' layout: the
    # state row as the lock read it, not as the transaction first saw it.
    return rt, rt.storage_at(state), state, True


def _coerced(declared: Declared, values: Sequence[Any]) -> np.ndarray:
    """The (non-NULL) *values* as one float32 matrix of the field's dimensions, as the rows hold them."""
    return np.stack([declared.field.vector_of(value) for value in values])


def _route(rt: Any, head: Any, vectors: np.ndarray, reachable: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(row, head id) pairs: each vector to its heads, by the index's replica options.

    *reachable* also makes sure that a query for each vector that reads
    ``rt.reach_probes()`` lists reads one that holds it (routing.reach: a
    wider search per vector, for repairs rather than every write).
    """
    options = rt.declared.options
    members, owners = routing.assign(head, vectors, replicas=options["replicas"], epsilon=options["replica_epsilon"])
    if reachable:
        members, owners = routing.reach(head, vectors, members, owners, rt.reach_probes(), options["probe_epsilon"])
    return members, owners


@dataclass(frozen=True)
class Routed:
    """Routing worked out ahead of the rows' INSERT, on the head index as it was then."""

    head: Any
    generation: int
    lsn: int
    vectors: np.ndarray  # the non-NULL values, coerced: index_vectors encodes these
    assignment: Future

    def routes(self, value: Any, field: Any) -> bool:
        """Was this routing worked out for *value* (one vector of *field*), as it is now?"""
        return value is not None and np.array_equal(self.vectors[0], field.vector_of(value))

    def result_for(self, head: Any) -> tuple[np.ndarray, np.ndarray] | None:
        """The (rows, heads) pairs, if *head* is still the head index they were routed on."""
        if head is not self.head or head.generation != self.generation or head.lsn != self.lsn:
            return None
        return self.assignment.result()


def route_ahead(declared: Declared, using: str, values: Sequence[Any]) -> Routed | None:
    """Start routing the non-NULL *values* on a thread, while the caller inserts their rows.

    Routing needs no primary key and no database, only the head index this
    process holds (none yet: nothing is routed ahead). Most of it runs in
    hnswlib and numpy, which release the GIL, so it overlaps with the INSERT
    of the model's rows; :func:`index_vectors` uses it when the head index has
    not moved since, and routes again otherwise.
    """
    rt = runtime(declared, using)
    head = rt.head
    present = [value for value in values if value is not None]
    if head is None or not present:
        return None
    vectors = _coerced(declared, present)
    assignment = _router.submit(_route, rt, head, vectors)
    return Routed(head, head.generation, head.lsn, vectors, assignment)


def index_vectors(
    declared: Declared,
    using: str,
    rows: Sequence[tuple[Any, Any]],
    routed: Routed | None = None,
    new: bool = False,
    reachable: bool = False,
) -> None:
    """Index new or changed vectors: ``rows`` of (primary key, vector or None).

    *reachable*: see :func:`_route` (a repair's).

    *routed*, from :func:`route_ahead` over the same values in the same order,
    spares routing them again. *new* says the rows are new to the index (just
    inserted): one such vector is indexed in a single round trip where the
    database allows (:func:`_index_new_one`).
    """
    if not rows:
        return
    jobs.wrote(declared.name, using)
    if new and len(rows) == 1 and rows[0][1] is not None and _index_new_one(declared, using, *rows[0], routed):
        return
    ready = _ready_storage(declared, using)
    if ready is None:
        return
    rt, storage, state, waited = ready
    if declared.keyed:
        rows = vector_ids(declared, storage, rows)
    present = [(pk, value) for pk, value in rows if value is not None]
    absent = [pk for pk, value in rows if value is None]
    if absent:
        storage.delete_versions(absent)  # a vector set to NULL leaves the index
    if not present:
        return
    pks = np.array([pk for pk, _ in present], dtype=np.int64)
    if routed is not None:
        vectors = routed.vectors  # coerced once, ahead
    else:
        vectors = _coerced(declared, [value for _, value in present])
    head = rt.newest(seen=state) if waited else rt.current(storage, state)
    assigned = routed.result_for(head) if routed is not None else None
    _route_and_append(declared, using, rt, storage, head, pks, vectors, assigned, reachable=reachable)


def _index_new_one(declared: Declared, using: str, pk: Any, value: Any, routed: Routed | None) -> bool:
    """Index one new vector in one round trip, on the head index this process holds: done?

    On MySQL/MariaDB (unless the connection's OPTIONS turn off
    ``multi_statements``), routing on the head index as it is in memory, and then
    one batch of statements (:meth:`Storage.append_one`) that checks the state
    row, share-locks the heads, gives the version and appends — instead of a
    round trip for each. When the state row shows the head index has moved
    (or the index is not ready), that batch writes nothing, and the write
    takes the usual path: False. When a head retired in between, or the id
    had been indexed before, what the batch left undone is done as any
    write's retry does it.
    """
    if declared.keyed:  # its id is found (or given) first: a round trip of its own
        return False
    rt = runtime(declared, using)
    head = rt.head
    storage = rt.storage_for(head)
    if storage is None or not storage.batches:
        return False
    generation, lsn = head.generation, head.lsn  # before routing: a replay may move the head index on
    pks = np.array([pk], dtype=np.int64)
    assigned = routed.result_for(head) if routed is not None else None
    vectors = routed.vectors if routed is not None else _coerced(declared, [value])
    if assigned is None:
        assigned = _route(rt, head, vectors)
    owners = set(assigned[1].tolist())
    entries = storage.payload.entries(pks, np.ones(1, dtype=np.uint32), vectors)
    ((count, data),) = storage.payload.pack_entries(entries)
    outcome = storage.append_one(declared.name, generation, lsn, pk, sorted(owners), count, data)
    if outcome is None:
        return False
    version, sizes = outcome
    held = owners & set(sizes) if version == 1 else set()
    _ask_splits(declared, using, sizes, dict.fromkeys(held, count))
    if held != owners:
        head = rt.newest()
        versions = np.array([version], np.uint32)
        _route_and_append(declared, using, rt, storage, head, pks, vectors, None, versions, frozenset(held))
    return True


def _route_and_append(
    declared: Declared,
    using: str,
    rt: Any,
    storage: Any,
    head: Any,
    pks: np.ndarray,
    vectors: np.ndarray,
    assigned: tuple[np.ndarray, np.ndarray] | None,
    versions: np.ndarray | None = None,
    held: frozenset[int] = frozenset(),
    reachable: bool = False,
) -> None:
    """Route *vectors* (unless *assigned*), share-lock their heads, give versions (unless given), append.

    *held*: heads that already hold the entry of the one vector written
    (:func:`_index_new_one`), left out.
    """
    for _attempt in range(ROUTE_ATTEMPTS):
        if assigned is None:
            assigned = _route(rt, head, vectors, reachable)
        members, owners = assigned
        if held:
            keep = ~np.isin(owners, list(held))
            members, owners = members[keep], owners[keep]
        alive = storage.lock_heads_shared(owners)
        if len(alive) == len(set(owners.tolist())):
            break
        # A head was retired since this process last looked: catch up, route again.
        head, assigned = rt.newest(), None
    else:
        raise IndexWriteError(f"{declared.name}: heads kept changing while routing {len(pks)} vectors")
    if versions is None:
        versions = storage.next_versions(pks)
    entries = storage.payload.entries(pks, versions, vectors)  # each vector encoded once, whatever its replicas
    append(declared, storage, postings.rows_by_head(storage.payload, entries, members, owners), using, sizes=alive)


def append(
    declared: Declared, storage: Any, rows: Sequence[tuple[int, int, bytes]], using: str, sizes: dict[int, int] | None = None
) -> None:
    """Append posting rows; a list that crosses its limit gets a split after commit.

    *sizes* are the lists' entries before the append, as the head locks read
    them; without them the lists are counted after the append.
    """
    storage.append(rows)
    added: dict[int, int] = defaultdict(int)
    for head_id, count, _payload in rows:
        added[head_id] += count
    if sizes is None:
        sizes = {head_id: size - added[head_id] for head_id, size in storage.list_sizes(list(added)).items()}
    _ask_splits(declared, using, sizes, added)


def _ask_splits(declared: Declared, using: str, sizes: dict[int, int], added: dict[int, int]) -> None:
    """A split for each list that *added* entries take over the limit from *sizes*.

    Only the crossing asks (not every later append to a list still waiting
    for its split): the queue holds one split per list, not one per write.
    Lists that were over the limit already (after a build, or a lost job) are
    the maintenance scan's to find.
    """
    limit = declared.options["posting_limit"]
    for head_id, count in added.items():
        before = sizes.get(head_id, 0)
        if before + count > limit >= before:
            jobs.enqueue("split", declared.name, using, head_id=head_id)


def unindex(declared: Declared, using: str, pks: Iterable[Any]) -> None:
    pks = list(pks)
    if not pks:
        return
    jobs.wrote(declared.name, using)
    ready = _ready_storage(declared, using)
    if ready is not None:
        storage = ready[1]
        if declared.keyed:
            pks = [vector_id for vector_id, _ in vector_ids(declared, storage, [(pk, None) for pk in pks])]
        storage.delete_versions(pks)


def vector_ids(declared: Declared, storage: Any, rows: Sequence[tuple[Any, Any]]) -> list[tuple[int, Any]]:
    """*rows* of (primary key, vector or None) of a keyed index as (vector id, vector or None).

    A row with a vector that the index does not know yet is given an id; one
    without (a vector set to NULL, a deleted row) is left out when the index
    never knew it.
    """
    keys = [declared.key_text(pk) for pk, _ in rows]
    ids = storage.ids_of_keys([key for key, (_, value) in zip(keys, rows) if value is not None], create=True)
    absent = [key for key, (_, value) in zip(keys, rows) if value is None and key not in ids]
    if absent:
        ids.update(storage.ids_of_keys(absent))
    return [(ids[key], value) for key, (_, value) in zip(keys, rows) if key in ids]
