"""LIRE: the background jobs that keep posting lists balanced (docs/ARCHITECTURE.md §5).

Each job is one database transaction, takes primitive ids, and is idempotent:
run again after its worker died, it finds the database as the last commit left
it and does the right thing. Jobs that change the set of heads (split, merge)
lock the index's state row exclusively first, which serialises them per index
and makes WAL LSNs commit in order; every job that rewrites a posting list
locks that head's row exclusively, so appends to it wait, and a writer that
routed to a head retired meanwhile routes again (docs/ARCHITECTURE.md §3).

Copies made by a split or a merge keep their version, and a retired head's
rows stay for ``RETIRED_GRACE`` seconds: a process whose head index is a moment
old still routes to the retired head and finds every vector there.

A module a job: :mod:`.splitting`, :mod:`.reassignment`, :mod:`.merging`
(merge, defragment), :mod:`.sweeping`, :mod:`.garbage` (compact, collect), :mod:`.calibrating`
(how many lists a query reads for the recall target);
:mod:`.scanning` finds them (scan) and runs them until none is left
(maintain); :mod:`.lists` and :mod:`.steps` hold what they share. The split's
algorithms are the engine's (:mod:`vectorindex.engine.partition`). Each job
registers itself by name with :mod:`vectorindex.index.jobs`, which runs them
inline or sends them to Celery: importing this package registers them all
(the app's ``ready()`` does).
"""

from ..jobs import Outcome, run
from .calibrating import calibrate
from .garbage import collect, compact
from .merging import defragment, merge
from .reassignment import reassign
from .scanning import MaintenanceRun, maintain, scan
from .splitting import split
from .steps import FAULT_ENV, fault
from .sweeping import sweep

__all__ = [
    "FAULT_ENV",
    "MaintenanceRun",
    "Outcome",
    "calibrate",
    "collect",
    "compact",
    "defragment",
    "fault",
    "maintain",
    "merge",
    "reassign",
    "run",
    "scan",
    "split",
    "sweep",
]
