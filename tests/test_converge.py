"""Maintenance converges: options that vectorindex.E101 accepts never split and merge the same lists for ever."""

import io

import pytest
from django.core.management import CommandError, call_command
from django.db import models
from django.test.utils import isolate_apps

from tests.indexing import build, clustered
from tests.testapp.models import Streamed
from vectorindex import VectorField, VectorIndex, VectorManager, maintenance
from vectorindex.checks import check_model_vector_indexes
from vectorindex.registry import get_declared


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
    monkeypatch.setattr(maintenance, "scan", lambda declared, using="default": [("compact", {})])
    run = maintenance.maintain(get_declared("streamed_embedding"), rounds=3)
    assert not run.finished
    assert (len(run.outcomes), run.rounds, run.left) == (3, 3, [("compact", {})])

    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError, match="^Maintenance did not finish for: streamed_embedding$"):
        call_command("vectorindex", "maintain", "streamed_embedding", stdout=out, stderr=err)
    assert out.getvalue() == ""
    assert err.getvalue() == (
        "streamed_embedding: 50 compact; NOT FINISHED: stopped after 50 rounds with 1 compact still to do. "
        "Run it again; if it never finishes without writes in between, lists are split and merged for ever.\n"
    )
