"""Maintenance converges: options that vectorindex.E101 accepts never split and merge the same lists for ever."""

import pytest
from django.db import models
from django.test.utils import isolate_apps

from vectorindex import VectorField, VectorIndex, VectorManager
from vectorindex.checks import check_model_vector_indexes


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
