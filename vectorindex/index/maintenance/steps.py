"""What the jobs share around their work: opening the index (or saying it is not
ready), the locks of a head change, and the steps where a test may kill a job.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

from ...storage import StateRow, Storage, job_transaction
from ..jobs import Outcome
from ..registry import Declared
from ..runtime import Runtime, open_index

FAULT_ENV = "VECTORINDEX_FAULT"
# What a job on an index that is not built says (it does nothing).
NOT_READY = "index not ready"


def fault(job: str, step: str) -> None:
    """Tests only: die here (SIGKILL) when VECTORINDEX_FAULT names this step."""
    if os.environ.get(FAULT_ENV) == f"{job}:{step}":
        os.kill(os.getpid(), signal.SIGKILL)


def change_head(
    job: str, declared: Declared, using: str, head_id: int, change: Callable[[Runtime, Storage, StateRow], Outcome]
) -> Outcome:
    """*change*(runtime, storage, state) in one job transaction that holds the state row and head *head_id*; or why not.

    A split and a merge start so. Lock order, the same for every job and
    build: state row, then heads. The state is the row as the lock read it.
    """
    with job_transaction(using):
        rt, storage, _state = open_index(declared, using)
        state = storage.lock_state(exclusive=True)
        if not state.ready:
            return Outcome(job, NOT_READY)
        if not storage.lock_head(head_id):
            return Outcome(job, f"head {head_id} is retired already")
        return change(rt, storage, state)
