"""LIRE maintenance as a whole: its triggers, jobs killed at any step, concurrency, and streams (the jobs one by one: test_split, test_reassign, test_merge, test_sweep, test_scan)."""

import io
import threading

import numpy as np
import pytest
from django.core.management import call_command
from django.db import connections, transaction

from tests.index.streamed import INDEX, all_found, crowd_one_head, declared, exact10, found_share, sizes, top10
from tests.indexing import build, check, clustered, recall, run_worker, worker
from tests.testapp.models import Streamed
from vectorindex.index import maintenance
from vectorindex.index.runtime import runtime
from vectorindex.models import Head

# Triggers and inline jobs -------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_write_that_overflows_a_list_triggers_a_split_inline():
    Streamed.objects.bulk_create(Streamed(embedding=v) for v in clustered(600, seed=4))
    build(INDEX)
    before = sizes()  # a build does not split: some lists may start over the limit
    with transaction.atomic():
        target = crowd_one_head()
        assert Head.objects.get(pk=target).alive  # nothing runs before the commit
    assert not Head.objects.get(pk=target).alive
    # No list grew past the limit: every one that crossed it was split.
    assert all(size <= max(64, before.get(head, 0)) for head, size in sizes().items())
    assert "streamed_embedding: ok" in check(INDEX)


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_write_triggers_nothing():
    Streamed.objects.bulk_create(Streamed(embedding=v) for v in clustered(600, seed=4))
    build(INDEX)  # lists the build left over the limit are split as it commits
    retired = Head.objects.filter(alive=False).count()
    with pytest.raises(RuntimeError), transaction.atomic():
        crowd_one_head()
        raise RuntimeError
    assert Head.objects.filter(alive=False).count() == retired


@pytest.mark.django_db(transaction=True)
def test_stream_of_inserts_and_deletes_keeps_recall_flat():
    """Build on 10 %, insert the other 90 % in small transactions while deleting
    20 % of all rows, with maintenance running inline; compare with a fresh build."""
    vectors = clustered(4000, seed=12)
    rng = np.random.default_rng(12)
    Streamed.objects.bulk_create(Streamed(embedding=v) for v in vectors[:400])
    build(INDEX)
    alive = list(Streamed.objects.values_list("pk", flat=True))
    for start in range(400, 4000, 40):
        with transaction.atomic():
            alive += [s.pk for s in Streamed.objects.bulk_create(Streamed(embedding=v) for v in vectors[start : start + 40])]
        victims = set(rng.choice(alive, size=9, replace=False).tolist())  # 90 × 9 ≈ 20 % of 4,000
        Streamed.objects.filter(pk__in=victims).delete()
        alive = [pk for pk in alive if pk not in victims]
    call_command("vectorindex", "maintain", INDEX, stdout=io.StringIO())
    assert max(sizes().values()) <= 64
    assert "streamed_embedding: ok" in check(INDEX)
    queries = clustered(100, seed=13)
    truth = exact10(queries)
    streamed = recall(top10(queries), truth)
    build(INDEX)
    fresh = recall(top10(queries), truth)
    assert streamed >= fresh - 0.02, (streamed, fresh)


# Crashes ---------------------------------------------------------------------------------


def misplaced_in_a_neighbour(old_head, new_head):
    """A row at a split's new head whose only entry is in a list beside the old head: its reassign moves it."""
    rt = runtime(declared(), "default")
    storage, state = rt.open()
    head = rt.current(storage, state)
    vector = storage.head_vector(new_head)
    nearby = head.search(storage.head_vector(old_head), 9)[0][0].tolist()
    beside = next(h for h in nearby if h not in (old_head, new_head) and h in head.alive and h != new_head)
    row = Streamed.objects.create(embedding=vector)
    version = storage.next_versions([row.pk])  # the entries its save wrote are stale now
    ((count, data),) = storage.payload.pack(np.array([row.pk]), version, vector[None, :])
    storage.append([(beside, count, data)])

STEPS = [
    "split:locked", "split:heads", "split:postings", "merge:retired", "merge:appended", "defragment:rewritten",
    "reassign:versions", "reassign:appended", "sweep:rewritten", "sweep:batch",
]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("step", STEPS)
def test_a_job_killed_at_any_step_can_run_again(step, settings):
    settings.VECTORINDEX = {"JOBS": "manual"}  # the job under test runs only when the test says
    Streamed.objects.bulk_create(Streamed(embedding=v) for v in clustered(600, seed=4))
    build(INDEX)
    target = crowd_one_head()
    queries = clustered(30, seed=21)
    before = recall(top10(queries), exact10(queries))
    job = step.split(":")[0]
    if job == "merge":  # make a small list to merge
        target = min(sizes(), key=sizes().get)
        storage, _ = runtime(declared(), "default").open()
        Streamed.objects.filter(pk__in=storage.read_postings([target])["id"].tolist()[1:]).delete()
    if job == "defragment":
        centre = runtime(declared(), "default").current(*runtime(declared(), "default").open()).vectors(np.array([target]))[0]
        for i in range(3):
            Streamed.objects.create(embedding=centre + 0.01 * (i + 1))  # not the head row's own vector
    arguments = [str(target)]
    if job == "sweep":  # deleted rows' entries to drop
        Streamed.objects.filter(pk__in=list(Streamed.objects.order_by("pk").values_list("pk", flat=True)[:200])).delete()
        arguments = []
    if job == "reassign":  # a split first, committed; the reassign that follows is killed
        outcome = maintenance.split(declared(), target)
        new_heads = outcome.follow_up[0][1]["new_head_ids"]
        arguments = [str(target), ",".join(str(h) for h in new_heads)]
        misplaced_in_a_neighbour(target, new_heads[0])
    process = worker("job", job, INDEX, *arguments, fault=step)
    process.wait(60)
    assert process.returncode == -9, process.stderr.read()
    if job == "reassign":  # the scan finds the killed reassign's work
        assert ("reassign", {"head_id": target, "new_head_ids": [int(h) for h in arguments[1].split(",")]}) in (
            maintenance.scan(declared(), lost_after=0)
        )
    report = run_worker("job", job, INDEX, *arguments)  # again, to the end
    assert report["detail"]
    assert not Head.objects.filter(split_into__isnull=False).exists() or job != "reassign"
    assert "streamed_embedding: ok" in check(INDEX)
    assert all_found()
    assert recall(top10(queries), exact10(queries)) >= before - 0.02


# Concurrency -------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_inserts_from_threads_while_splits_run():
    Streamed.objects.bulk_create(Streamed(embedding=v) for v in clustered(300, seed=4))
    build(INDEX)
    inserted: list[list[tuple[int, np.ndarray]]] = [[] for _ in range(3)]
    errors: list[BaseException] = []
    stop = threading.Event()

    def insert(slot: int) -> None:
        try:
            for batch in range(15):
                vectors = clustered(20, seed=100 * slot + batch)
                with transaction.atomic():
                    made = [Streamed.objects.create(embedding=v) for v in vectors]
                inserted[slot].extend((m.pk, v) for m, v in zip(made, vectors))
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)
        finally:
            connections.close_all()

    def maintain() -> None:
        try:
            while not stop.is_set():
                maintenance.maintain(declared(), rounds=2)
        except BaseException as error:  # noqa: BLE001
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=insert, args=(i,)) for i in range(3)]
    maintainer = threading.Thread(target=maintain)
    maintainer.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stop.set()
    maintainer.join()
    import traceback

    assert errors == [], "".join(traceback.format_exception(errors[0]))
    assert Head.objects.filter(alive=False).exists()  # splits did run meanwhile
    assert "streamed_embedding: ok" in check(INDEX)
    rows = [row for slot in inserted for row in slot]
    assert len(rows) == 900
    # No row is lost: with every list read, each is the first answer for its
    # own vector. With the default probes nearly all are: a split that ran
    # beside the inserts may leave a row only in a list that the probe's
    # distance cut-off skips for it, until a reassign or a later split moves
    # it (seen twice in many CI runs; recall is approximate, not this).
    assert all_found(rows, probes=10_000, epsilon=1e9)
    assert found_share(rows) >= 0.99
