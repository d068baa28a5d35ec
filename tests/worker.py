"""A separate process for the index tests: ``python -m tests.worker MODE ...``.

Runs against the database in DATABASE_URL (the test database). Modes:

* ``write N SEED commit|hold|wait`` — save N points inside one transaction;
  with ``commit`` print their keys after COMMIT and then wait; with ``hold``
  print "written" before COMMIT and wait; with ``wait`` print "written", read a
  line from stdin, COMMIT and print "committed". Then the test kills it (SIGKILL).
* ``query NAME SEED`` — answer a fixed query set from a freshly loaded index and
  print the keys found, and the warnings the app logged.
* ``use NAME SEED query,write|write,query`` — the query set and a new point,
  in that order; print the keys found, the new point's key, the key its own
  vector finds first, and the warnings the app logged.
* ``change PK update|delete SEED`` — give point PK a new vector (``clustered(1, SEED)``)
  or delete it, commit, and print its key.
* ``job JOB NAME [HEAD [NEW_HEADS]]`` — run one maintenance job and the jobs it
  asks for (VECTORINDEX_FAULT may kill it at a step), and print what they did.
"""

from __future__ import annotations

import json
import sys
import time

import django


def main() -> None:
    django.setup()
    from django.db import transaction

    from tests.indexing import clustered
    from tests.testapp.models import Point
    from vectorindex import L2Distance

    warnings = _logged_warnings()
    mode, *args = sys.argv[1:]
    if mode == "write":
        count, seed, how = int(args[0]), int(args[1]), args[2]
        vectors = clustered(count, seed=seed)
        with transaction.atomic():
            points = [Point.objects.create(group=seed, embedding=v) for v in vectors]
            if how in ("hold", "wait"):
                print(json.dumps({"written": [p.pk for p in points]}), flush=True)
                if how == "hold":
                    time.sleep(600)
                else:
                    sys.stdin.readline()
        print(json.dumps({"committed": [p.pk for p in points]}), flush=True)
        time.sleep(600)
    elif mode == "query":
        seed = int(args[1])
        queries = clustered(30, seed=seed)
        found = [[p.pk for p in Point.objects.order_by(L2Distance("embedding", q))[:10]] for q in queries]
        print(json.dumps({"found": found, "warnings": warnings}), flush=True)
    elif mode == "use":
        seed, report = int(args[1]), {}
        for step in args[2].split(","):
            if step == "query":
                queries = clustered(30, seed=seed)
                report["found"] = [[p.pk for p in Point.objects.order_by(L2Distance("embedding", q))[:10]] for q in queries]
            else:
                vector = clustered(1, seed=seed + 1)[0]
                report["written"] = Point.objects.create(group=seed, embedding=vector).pk
                report["nearest"] = Point.objects.order_by(L2Distance("embedding", vector)).first().pk
        print(json.dumps({**report, "warnings": warnings}), flush=True)
    elif mode == "change":
        point = Point.objects.get(pk=int(args[0]))
        if args[1] == "update":
            point.embedding = clustered(1, seed=int(args[2]))[0]
            point.save()
        else:
            point.delete()
        print(json.dumps({"changed": int(args[0])}), flush=True)
    elif mode == "job":
        from vectorindex.index import maintenance
        from vectorindex.index.registry import get_declared

        job, name = args[0], args[1]
        arguments = {"head_id": int(args[2])} if len(args) > 2 else {}
        if job == "reassign":
            arguments["new_head_ids"] = [int(h) for h in args[3].split(",")]
        details, queue = [], [(job, arguments)]
        while queue:  # the job, then what it asks for next, as a queue would
            job, arguments = queue.pop(0)
            outcome = maintenance.run(job, get_declared(name), **arguments)
            details.append(outcome.detail)
            queue.extend(outcome.follow_up)
        print(json.dumps({"detail": details}), flush=True)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


def _logged_warnings() -> list[str]:
    """The messages of the warnings the app logs from now on (a list that fills)."""
    import logging

    messages: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    logging.getLogger("vectorindex").addHandler(Keep(logging.WARNING))
    return messages


if __name__ == "__main__":
    main()
