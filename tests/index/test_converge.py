"""Maintenance converges: options that vectorindex.E101 accepts never split and merge the same lists for ever."""

import io

import pytest
from django.core.management import CommandError, call_command
from django.db import models
from django.test.utils import isolate_apps

from tests.indexing import build, check, clustered, recall
from tests.testapp.models import Quarter, Smallest, Streamed
from vectorindex import L2Distance, VectorField, VectorIndex, VectorManager
from vectorindex.checks import check_model_vector_indexes
from vectorindex.index import maintenance
from vectorindex.index.maintenance import scanning
from vectorindex.index.registry import get_declared
from vectorindex.index.runtime import runtime


def refusal(limit: int, allowed: int, got: int) -> str:
    return (
        f"VectorIndex.merge_below must be at most a quarter of posting_limit ({allowed} for posting_limit {limit}), "
        f"got {got}: maintenance would merge a split's parts back and split a merge's result again."
    )


# The system check ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "limit", "allowed"),
    [
        ({"posting_limit": 50, "merge_below": 500}, 50, 12),
        ({"merge_below": 51}, 200, 50),  # against the default posting_limit
        ({"posting_limit": 24, "merge_below": 7}, 24, 6),
        ({"posting_limit": 16, "merge_below": 5}, 16, 4),
    ],
)
def test_a_merge_below_over_a_quarter_of_the_limit_is_refused(options, limit, allowed):
    index = VectorIndex(fields=["embedding"], name="x", **options)
    assert index.problems() == [refusal(limit, allowed, options["merge_below"])]


@pytest.mark.parametrize(
    "options",
    [
        {},  # the defaults: posting_limit 200, merge_below 8
        {"merge_below": 50},
        {"posting_limit": 24, "merge_below": 6},
        {"posting_limit": 16, "merge_below": 4},
        {"posting_limit": 16, "merge_below": 0},
    ],
)
def test_a_merge_below_up_to_a_quarter_of_the_limit_is_accepted(options):
    assert VectorIndex(fields=["embedding"], name="x", **options).problems() == []


@pytest.mark.parametrize("limit", range(16, 40))
def test_every_documented_posting_limit_is_valid_with_the_default_merge_below(limit):
    """Not given, merge_below is 8, or a quarter of posting_limit where that is less."""
    index = VectorIndex(fields=["embedding"], name="x", posting_limit=limit)
    assert index.problems() == []
    assert index.options["merge_below"] == min(8, limit // 4)


def test_a_merge_below_given_is_kept_and_checked_whatever_the_default():
    given = VectorIndex(fields=["embedding"], name="x", posting_limit=16, merge_below=8)
    assert given.options["merge_below"] == 8
    assert given.problems() == [refusal(16, 4, 8)]
    # deconstruct() keeps what differs from the default for this posting_limit, and
    # leaves out what equals it: the same index written either way migrates as one.
    assert given.deconstruct()[2] == {"fields": ["embedding"], "name": "x", "posting_limit": 16, "merge_below": 8}
    same = VectorIndex(fields=["embedding"], name="x", posting_limit=16, merge_below=4)
    assert same.deconstruct() == VectorIndex(fields=["embedding"], name="x", posting_limit=16).deconstruct()
    assert VectorIndex(fields=["embedding"], name="x", merge_below=8).deconstruct()[2] == {"fields": ["embedding"], "name": "x"}


def test_an_invalid_limit_is_reported_alone():
    index = VectorIndex(fields=["embedding"], name="x", posting_limit=8, merge_below=6)
    assert index.problems() == ["VectorIndex.posting_limit must be an integer from 16 to 100000, got 8."]


@isolate_apps("tests.testapp")
def test_the_system_check_reports_options_that_loop():
    class Looping(models.Model):
        embedding = VectorField(dimensions=4)

        objects = VectorManager()

        class Meta:
            app_label = "testapp"
            indexes = [VectorIndex(fields=["embedding"], name="looping", posting_limit=50, merge_below=500)]

    messages = check_model_vector_indexes(Looping)
    assert [(m.id, m.msg) for m in messages] == [
        ("vectorindex.E101", f"testapp.Looping: VectorIndex 'looping': {refusal(50, 12, 500)}")
    ]


# maintain on a steady index ----------------------------------------------------------------


def alive_sizes(index: str) -> list[int]:
    storage, _state = runtime(get_declared(index), "default").open()
    alive = storage.alive_head_ids()
    return [entries for head, (entries, _rows) in storage.posting_sizes().items() if head in alive]


@pytest.mark.parametrize(("model", "index"), [(Quarter, "quarter_embedding"), (Smallest, "smallest_embedding")])
def test_maintain_converges_at_the_edge_of_the_options(db, settings, model, index):
    """posting_limit 24 with merge_below 6, and 16 (the smallest) with 4: the
    largest merge_below E101 allows. On a 64-dimensional blob these split and
    merged the same lists at every run, 50 rounds and hundreds of jobs."""
    settings.VECTORINDEX = {"JOBS": "manual"}  # every job is maintain's, counted below
    vectors = clustered(650, dimensions=64, centers=1, seed=2)
    rows, queries = vectors[:600], vectors[600:]
    model.objects.bulk_create(model(embedding=v) for v in rows[:300])
    build(index)
    model.objects.bulk_create(model(embedding=v) for v in rows[300:])

    first = maintenance.maintain(get_declared(index))
    assert first.finished and first.left == []
    jobs = [outcome.job for outcome in first.outcomes]
    lists = alive_sizes(index)
    assert "split" in jobs
    assert len(jobs) <= 3 * len(lists), (len(jobs), len(lists))
    options = get_declared(index).options
    assert options["merge_below"] <= min(lists) and max(lists) <= options["posting_limit"]

    out = io.StringIO()
    call_command("vectorindex", "maintain", index, stdout=out)
    assert out.getvalue() == f"{index}: nothing to do\n"
    assert f"{index}: ok" in check(index)

    # Recall as a fresh build of the same rows gives.
    truth = [[p.pk for p in model.objects.order_by(L2Distance("embedding", q)).exact()[:10]] for q in queries]
    maintained = recall([[p.pk for p in model.objects.order_by(L2Distance("embedding", q))[:10]] for q in queries], truth)
    build(index)
    fresh = recall([[p.pk for p in model.objects.order_by(L2Distance("embedding", q))[:10]] for q in queries], truth)
    assert maintained >= fresh - 0.02, (maintained, fresh)


# maintain that runs out of rounds ------------------------------------------------------------


@pytest.fixture
def streamed(db):
    Streamed.objects.bulk_create(Streamed(embedding=v) for v in clustered(200, seed=4))
    build("streamed_embedding")


def test_maintain_that_finds_nothing_left_is_finished(streamed):
    maintenance.maintain(get_declared("streamed_embedding"))
    run = maintenance.maintain(get_declared("streamed_embedding"))
    assert run.finished and (run.outcomes, run.rounds, run.left) == ([], 0, [])


def test_maintain_that_stops_at_its_rounds_says_so(streamed, monkeypatch):
    # Every scan finds work, as it did for options that split and merge for ever.
    monkeypatch.setattr(scanning, "scan", lambda declared, using="default", **kwargs: [("compact", {})])
    run = maintenance.maintain(get_declared("streamed_embedding"), rounds=3)
    assert not run.finished
    assert (len(run.outcomes), run.rounds, run.left) == (3, 3, [("compact", {})])

    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError, match="^Maintenance did not finish for: streamed_embedding$"):
        call_command("vectorindex", "maintain", "streamed_embedding", stdout=out, stderr=err)
    assert out.getvalue() == ""
    assert err.getvalue() == (
        "streamed_embedding: 50 jobs (50 compact); NOT FINISHED: stopped after 50 rounds with 1 compact still to do. "
        "Run it again; if it never finishes without writes in between, lists are split and merged for ever.\n"
    )
