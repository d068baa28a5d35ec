"""The processes of tests/test_replicas.py: ``python -m tests.replication SCENARIO`` with tests.replica_settings.

Each runs against the private primary and replica that the test started
(their sockets in the environment), asserts as it goes, and prints one JSON
line of what it saw; an assertion that fails exits non-zero with its message.

* ``web`` — a process with both databases and the primary/replica router, as a
  web server has them: writes of every kind go to the primary, queries are
  answered on the replica through the index, with the replica lagging
  (replication paused) while the primary writes, splits, snapshots and
  builds again, and after it caught up.
* ``seed COUNT`` — COUNT rows on the primary, and the index built.
* ``write SECONDS`` — the primary alone takes a stream of saves, bulk
  writes, deletes and maintenance runs for SECONDS, then prints what it wrote.
* ``read SECONDS`` — a process that has only the replica (``VECTORINDEX_READER_ONLY``,
  as a user that may only SELECT from a server set read_only) queries it
  for SECONDS, in and out of transactions, and prints how many queries it
  answered, through the index or not, and every error.
"""

from __future__ import annotations

import io
import json
import sys
import time
import traceback
from typing import Any

import django
import numpy as np

INDEX = "point_embedding"


def expect(condition: Any, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def exact_neighbours(queryset: Any, query: np.ndarray, k: int = 10) -> list[int]:
    from vectorindex import L2Distance

    return list(queryset.exact().order_by(L2Distance("embedding", query)).values_list("pk", flat=True)[:k])


def neighbours(queryset: Any, query: np.ndarray, k: int = 10) -> list[int]:
    return ask(queryset, query, k)[0]


def ask(queryset: Any, query: np.ndarray, k: int = 10) -> tuple[list[int], str | None]:
    """The *k* nearest rows' keys, and what answered: the index or the exact scan."""
    from vectorindex import L2Distance

    asked = queryset.order_by(L2Distance("embedding", query)).values_list("pk", flat=True)[:k]
    return list(asked), asked.answered_by


def posting_reads(captured: Any) -> int:
    from vectorindex.models import Posting

    return sum(Posting._meta.db_table in query["sql"] for query in captured.captured_queries)


def writes_in(captured: Any) -> list[str]:
    verbs = ("INSERT", "UPDATE", "DELETE", "REPLACE", "CREATE", "DROP", "ALTER", "TRUNCATE")
    return [q["sql"][:120] for q in captured.captured_queries if q["sql"].lstrip().upper().startswith(verbs)]


def command(*args: str) -> str:
    from django.core.management import CommandError, call_command

    out = io.StringIO()
    try:
        call_command("vectorindex", *args, stdout=out, stderr=out)
    except CommandError as error:
        raise CommandError(f"{error}\n{out.getvalue()}") from None
    return out.getvalue()


def web() -> dict[str, Any]:
    from django.core.management import CommandError
    from django.db import connections, transaction
    from django.test.utils import CaptureQueriesContext

    from tests.indexing import clustered, recall
    from tests.servers import ReplicaPair
    from tests.testapp.models import Point
    from vectorindex.index.registry import get_declared
    from vectorindex.index.runtime import runtime

    pair = ReplicaPair.from_environment()
    primary, replica = connections["default"], connections["replica"]
    seen: dict[str, Any] = {}

    # Writes through the router go to the primary, index work and all.
    vectors = clustered(3000, seed=1)
    with CaptureQueriesContext(replica) as on_replica:
        Point.objects.bulk_create([Point(group=i % 5, embedding=v) for i, v in enumerate(vectors)])
    expect(not writes_in(on_replica), f"bulk_create wrote through the replica: {writes_in(on_replica)[:3]}")
    expect(pair.primary.execute("SELECT COUNT(*) FROM vectorindex_replicas.testapp_point")[0][0] == 3000, "rows on the primary")
    seen["built"] = command("build", INDEX, "--seed", "1").strip().splitlines()[-1]
    pair.caught_up()

    # Queries: on the replica, through the index; the primary is not read.
    queries = clustered(40, seed=2)
    with CaptureQueriesContext(replica) as on_replica, CaptureQueriesContext(primary) as on_primary:
        found = [neighbours(Point.objects.all(), q) for q in queries]
    expect(not on_primary.captured_queries, f"a query read the primary: {on_primary.captured_queries[:2]}")
    expect(posting_reads(on_replica) >= len(queries) // 2, "the replica's posting lists were not read")
    expect(not writes_in(on_replica), f"a query wrote to the replica: {writes_in(on_replica)[:3]}")
    truth = [exact_neighbours(Point.objects.all(), q) for q in queries]
    seen["recall_caught_up"] = recall(found, truth)
    expect(seen["recall_caught_up"] >= 0.9, f"recall {seen['recall_caught_up']:.3f} on the replica")
    declared = get_declared(INDEX)
    head_before = runtime(declared, "replica").head
    lsn_before = head_before.lsn

    # Lag: the replica applies nothing while the primary takes writes of every
    # kind and its maintenance (splits write head changes to the WAL).
    pair.pause()
    added = Point.objects.bulk_create([Point(group=9, embedding=v) for v in clustered(1500, seed=3)])
    one = Point(group=9, embedding=clustered(1, seed=4)[0])
    one.save()
    changed = list(Point.objects.filter(group=1)[:50])
    for point in changed:
        point.embedding = point.embedding + 0.5
    Point.objects.bulk_update(changed, ["embedding"])
    moved = list(Point.objects.filter(group=2).values_list("pk", flat=True)[:5])
    Point.objects.filter(pk__in=moved).update(embedding=clustered(1, seed=5)[0])
    deleted = list(Point.objects.filter(group=3).values_list("pk", flat=True)[:100])
    Point.objects.filter(pk__in=deleted).delete()
    Point.objects.filter(pk=changed[0].pk).get().delete()
    seen["maintained"] = command("maintain", INDEX).strip().splitlines()[-1]
    seen["check_primary"] = command("check", INDEX).strip().splitlines()[-1]
    primary_lsn = pair.primary.execute(
        "SELECT wal_lsn FROM vectorindex_replicas.vectorindex_indexstate WHERE name = %s", [INDEX]
    )[0][0]
    expect(primary_lsn > lsn_before, f"the primary's maintenance changed no heads (LSN {primary_lsn})")

    # On the lagging replica: no error, and only rows the replica has.
    on_replica_pks = {row[0] for row in pair.replica.execute("SELECT id FROM vectorindex_replicas.testapp_point")}
    expect(not {p.pk for p in added} & on_replica_pks, "the replica had the new rows while paused")
    lagging = [neighbours(Point.objects.all(), q) for q in queries]
    lagging += [neighbours(Point.objects.all(), p.embedding) for p in added[:20]]
    with transaction.atomic(using="replica"):
        lagging.append(neighbours(Point.objects.all(), one.embedding))
    returned = {pk for pks in lagging for pk in pks}
    expect(returned <= on_replica_pks, f"rows the replica does not have: {sorted(returned - on_replica_pks)[:5]}")
    expect(runtime(declared, "replica").head.lsn == lsn_before, "the replica's head index moved past the replica's WAL")
    seen["recall_lagging"] = recall(lagging[: len(queries)], [exact_neighbours(Point.objects.all(), q) for q in queries])
    expect(seen["recall_lagging"] >= 0.9, f"recall {seen['recall_lagging']:.3f} on the lagging replica")
    seen["check_lagging_replica"] = command("check", INDEX, "--database", "replica").strip().splitlines()[-1]

    # Caught up: the head index replays the replica's WAL (not a reload) and finds the new rows.
    pair.resume()
    pair.caught_up()
    own = [neighbours(Point.objects.all(), p.embedding, 1) for p in added[:50]]
    seen["new_rows_found_first"] = float(np.mean([o == [p.pk] for o, p in zip(own, added, strict=False)]))
    expect(seen["new_rows_found_first"] >= 0.95, f"new rows found first: {seen['new_rows_found_first']}")
    expect(neighbours(Point.objects.all(), one.embedding, 1) == [one.pk], "the saved row is not found on the replica")
    head_after = runtime(declared, "replica").head
    expect(head_after is head_before, "the replica's head index was loaded again rather than caught up from its WAL")
    expect(head_after.lsn == primary_lsn, f"replica head LSN {head_after.lsn}, primary {primary_lsn}")
    seen["replayed_lsns"] = head_after.lsn - lsn_before
    gone = {pk for pks in (neighbours(Point.objects.all(), q, 50) for q in queries) for pk in pks}
    expect(not gone & set(deleted), "a deleted row came back from the replica")
    seen["check_replica"] = command("check", INDEX, "--database", "replica").strip().splitlines()[-1]

    # A snapshot on the primary folds the WAL away: a replica process that
    # had not replayed it reloads from the replicated snapshot instead.
    pair.pause()
    Point.objects.bulk_create([Point(group=7, embedding=v) for v in clustered(400, seed=6)])
    seen["snapshot"] = command("snapshot", INDEX).strip().splitlines()[-1]
    pair.resume()
    pair.caught_up()
    expect(neighbours(Point.objects.all(), clustered(400, seed=6)[0], 1) != [], "no answer after the snapshot")
    head_after = runtime(declared, "replica").head

    # A build on the primary while the replica lags: the replica answers from its own build until it has the new one.
    pair.pause()
    command("build", INDEX, "--seed", "2")
    still = [neighbours(Point.objects.all(), q) for q in queries[:10]]
    expect(runtime(declared, "replica").head is head_after, "the replica loaded a build it does not have yet")
    pair.resume()
    pair.caught_up()
    rebuilt = [neighbours(Point.objects.all(), q) for q in queries[:10]]
    expect(runtime(declared, "replica").head.generation != head_after.generation, "the new build was not loaded")
    truth = [exact_neighbours(Point.objects.all(), q) for q in queries[:10]]
    seen["recall_during_build"] = recall(still, truth)
    seen["recall_after_build"] = recall(rebuilt, truth)
    expect(min(seen["recall_during_build"], seen["recall_after_build"]) >= 0.9, f"recall {seen}")

    # A job a read on the replica asks for runs on the primary.
    from vectorindex.index import jobs

    with CaptureQueriesContext(replica) as on_replica, CaptureQueriesContext(primary) as on_primary:
        jobs.enqueue_for_read("defragment", INDEX, "replica", head_id=int(runtime(declared, "replica").head.ids()[0]), above_rows=0)
    expect(not writes_in(on_replica), f"a job asked for by a read wrote to the replica: {writes_in(on_replica)[:3]}")
    expect(writes_in(on_primary), "the job did not run on the primary")

    # Commands that write refuse the replica, saying where to run them.
    for action in ("maintain", "snapshot", "recover", "build"):
        try:
            command(action, INDEX, "--database", "replica")
        except CommandError as error:
            expect("takes no writes" in str(error), str(error))
        else:
            raise AssertionError(f"`vectorindex {action} --database replica` ran")
    seen["status_replica"] = command("status", INDEX, "--database", "replica").count("\n")
    return seen


def seed(count: int) -> dict[str, Any]:
    """*count* rows on the primary, and the index built."""
    from tests.indexing import clustered
    from tests.testapp.models import Point

    Point.objects.bulk_create([Point(group=i % 5, embedding=v) for i, v in enumerate(clustered(count, seed=1))])
    return {"built": command("build", INDEX, "--seed", "1").strip().splitlines()[-1]}


def write(seconds: float) -> dict[str, Any]:
    """A write stream on the primary, with maintenance between its batches."""
    from tests.indexing import clustered
    from tests.testapp.models import Point

    rng = np.random.default_rng(7)
    base = clustered(3000, seed=1)  # the rows seed() wrote: new ones come from the same clusters
    deadline = time.monotonic() + seconds
    saved = deleted = updated = batches = 0
    while time.monotonic() < deadline:
        batches += 1
        near = base[rng.integers(0, len(base), 200)] + rng.normal(scale=0.5, size=(200, 16)).astype(np.float32)
        new = Point.objects.bulk_create([Point(group=8, embedding=v) for v in near])
        saved += len(new)
        for point in new[:10]:
            point.embedding = point.embedding * 1.01
            point.save()
            updated += 1
        victims = rng.choice(sorted(Point.objects.filter(group=8).values_list("pk", flat=True)), 60, replace=False).tolist()
        deleted += Point.objects.filter(pk__in=victims).delete()[0]
        if batches % 3 == 0:
            command("maintain", INDEX)
    command("maintain", INDEX)
    return {"batches": batches, "saved": saved, "updated": updated, "deleted": deleted, "check": command("check", INDEX).strip().splitlines()[-1]}


def read(seconds: float) -> dict[str, Any]:
    """Queries on the replica alone, for *seconds*: every error is kept."""
    from django.db import transaction

    from tests.indexing import clustered
    from tests.testapp.models import Point
    from vectorindex.storage import read_only

    expect(read_only("default"), "the replica does not say it is read-only")
    queries = clustered(200, seed=11)
    answered = by_index = 0
    errors: list[str] = []
    deadline = time.monotonic() + seconds
    i = 0
    while time.monotonic() < deadline:
        query = queries[i % len(queries)]
        i += 1
        try:
            if i % 5 == 0:
                with transaction.atomic():
                    pks, how = ask(Point.objects.all(), query)
            else:
                qs = Point.objects.filter(group__in=[0, 1, 2, 8, 9]) if i % 3 == 0 else Point.objects.all()
                pks, how = ask(qs, query)
            expect(len(pks) == 10, f"{len(pks)} rows")
            answered += 1
            by_index += how == "index"
        except Exception:  # noqa: BLE001 - every error is the test's failure
            errors.append(traceback.format_exc(limit=6))
            if len(errors) > 5:
                break
    return {"answered": answered, "by_index": by_index, "errors": errors}


def main() -> None:
    django.setup()
    scenario, *args = sys.argv[1:]
    try:
        if scenario == "web":
            seen = web()
        elif scenario == "seed":
            seen = seed(int(args[0]))
        elif scenario == "write":
            seen = write(float(args[0]))
        elif scenario == "read":
            seen = read(float(args[0]))
        else:
            raise SystemExit(f"unknown scenario {scenario!r}")
    except AssertionError as failed:
        print(json.dumps({"failed": str(failed), "traceback": traceback.format_exc(limit=4)}), flush=True)
        raise SystemExit(1) from None
    print(json.dumps(seen), flush=True)


if __name__ == "__main__":
    main()
