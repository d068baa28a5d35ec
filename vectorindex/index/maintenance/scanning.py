"""The maintenance scan, which finds the jobs an index needs, and ``maintain``,
which runs them until the scan finds nothing more (docs/ARCHITECTURE.md §5).

The scan is the safety net for triggers that were lost: Celery beat runs it,
or a writing process inline every ``SCAN_INTERVAL`` seconds, or
``manage.py vectorindex maintain`` (through :func:`maintain`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.utils import timezone

from ...conf import vectorindex_settings
from ...exceptions import JobBusy
from ...storage import Storage
from ..jobs import Job, Outcome, follow_through, run, runner
from ..registry import Declared
from ..runtime import damaged_snapshot, open_index
from .calibrating import due as calibration_due
from .sweeping import SWEEP_MIN, SWEEP_SHARE


@runner("scan")
def scan(declared: Declared, using: str = "default", *, lost_after: float | None = None) -> list[Job]:
    """The jobs the index needs now: the safety net for triggers that were lost.

    A reassign whose split retired its head more than *lost_after* seconds
    ago (``RETIRED_GRACE`` unless given) and has not run is taken as lost
    (its worker died, or its message did) and asked for again: before
    then, it may still be waiting in a queue.
    """
    opened = open_index(declared, using)
    if not opened.ready:
        return []
    rt, storage, state = opened
    options = declared.options
    alive = storage.alive_head_ids()
    sizes = storage.posting_sizes()
    jobs: list[Job] = []
    for head_id in sorted(alive):
        entries, rows = sizes.get(head_id, (0, 0))
        if entries > options["posting_limit"]:
            jobs.append(("split", {"head_id": head_id}))
        elif entries < options["merge_below"] and len(alive) > 1:
            jobs.append(("merge", {"head_id": head_id}))
        elif rows > options["defragment_rows"]:
            jobs.append(("defragment", {"head_id": head_id, "above_rows": options["defragment_rows"]}))
    if _sweep_due(storage):
        jobs.append(("sweep", {}))
    grace = vectorindex_settings.RETIRED_GRACE
    lost = timezone.now() - timedelta(seconds=grace if lost_after is None else lost_after)
    for head_id, new_head_ids in storage.pending_reassigns(before=lost):
        jobs.append(("reassign", {"head_id": head_id, "new_head_ids": new_head_ids}))
    damaged = damaged_snapshot(rt, storage, state.generation)
    if damaged is not None:
        jobs.append(("compact", {"damaged": damaged}))
    elif storage.wal_length() >= vectorindex_settings.WAL_SNAPSHOT_ENTRIES:
        jobs.append(("compact", {}))
    before = timezone.now() - timedelta(seconds=grace)
    if storage.expired_heads(before):
        jobs.append(("collect", {}))
    if calibration_due(declared, rt.calibration, state.generation, len(alive)):
        jobs.append(("calibrate", {}))
    return jobs


def _sweep_due(storage: Storage) -> bool:
    """Were ``SWEEP_SHARE`` of the live vectors, and ``SWEEP_MIN`` at least, deleted since the last sweep?

    Without reading every version row (the scan also runs inline, in a
    user's request): the deleted ones are counted, and the live ones only as
    far as the answer needs, up to ten times the new deletes.
    """
    new = storage.deleted_count() - storage.swept_deleted()
    if new < SWEEP_MIN:
        return False
    # One past the most live vectors for which the sweep is due (and one more
    # for the float division).
    enough = math.floor(new / SWEEP_SHARE) + 2
    return SWEEP_SHARE * storage.live_count(at_most=enough) <= new


# Scans maintain runs at most unless told: plenty for an index that settles,
# which needs a few (a split, its reassign, the merges and sweeps they
# leave); a bound for options that split and merge the same lists for ever
# (what E101 refuses), which never settle.
ROUNDS = 50


@dataclass
class MaintenanceRun:
    """What :func:`maintain` did, and what the last scan still found when it stopped."""

    outcomes: list[Outcome]
    rounds: int  # scans that found work
    left: list[Job] = field(default_factory=list)
    # Jobs that gave up on a lock and that the last scan still asks for.
    busy: list[Job] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        """The scan found nothing left to do (not: the rounds ran out, nor a lock stayed held)."""
        return not self.left and not self.busy


def maintain(declared: Declared, using: str = "default", *, rounds: int = ROUNDS, report: Any = None) -> MaintenanceRun:
    """Run jobs until the scan finds nothing to do, or *rounds* scans have run.

    Options that split and merge the same lists for ever (what system check
    vectorindex.E101 refuses) would keep finding work: a run that stops at
    *rounds* says so, with the jobs still found, rather than look finished.
    A job that gave up on a lock (:class:`JobBusy`) is reported and not tried
    again in this call: a transaction that holds its lock may stay open long.
    """
    outcomes: list[Outcome] = []
    busy: set[tuple[str, str]] = set()

    def stop(rounds_run: int, found: list[Job], more: bool) -> MaintenanceRun:
        gave_up = [job for job in found if _key(*job) in busy]
        left = [job for job in found if _key(*job) not in busy] if more else []
        return MaintenanceRun(outcomes, rounds_run, left, gave_up)

    def attempt(name: str, arguments: dict[str, Any]) -> Outcome:
        try:
            return run(name, declared, using, **arguments)
        except JobBusy as error:
            busy.add(_key(name, arguments))
            return Outcome(name, str(error), busy=True)

    for done in range(rounds):
        # Every pending reassign, now: they are idempotent.
        found = scan(declared, using, lost_after=0)
        jobs = [job for job in found if _key(*job) not in busy]
        if not jobs:
            return stop(done, found, more=False)
        for outcome in follow_through(jobs, attempt):
            outcomes.append(outcome)
            if report:
                report(outcome)
    return stop(rounds, scan(declared, using, lost_after=0), more=True)


def _key(name: str, arguments: dict[str, Any]) -> tuple[str, str]:
    return name, repr(sorted(arguments.items()))
