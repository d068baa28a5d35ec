"""Calibration: the probes a query reads for the index's recall target (index/maintenance/calibrating.py)."""

import io

import numpy as np
import pytest
from django.core.management import call_command
from django.test import override_settings
from django.urls import reverse

from tests.indexing import build, clustered, recall
from tests.testapp.models import Point
from vectorindex import L2Distance
from vectorindex.engine.calibration import K, pairwise
from vectorindex.index import maintenance
from vectorindex.index.registry import get_declared
from vectorindex.index.runtime import open_index
from vectorindex.models import IndexState

INDEX = "point_embedding"  # l2, 16-d, the default options: recall 0.95, probes calibrated
def calibrating(queries=100):
    """Settings under which builds calibrate (the suite's turn it off)."""
    return override_settings(VECTORINDEX={"CALIBRATION_QUERIES": queries})


def opened():
    """The index's runtime, with its state row (and calibration) just read."""
    return open_index(get_declared(INDEX), "default").runtime


def fill(n=4000, queries=60, seed=3):
    """*n* rows of clustered vectors, and *queries* more from the same clusters that are not rows."""
    vectors = clustered(n + queries, seed=seed)
    Point.objects.bulk_create(Point(embedding=v) for v in vectors[:n])
    return vectors[n:]


def exact_answers(queries):
    rows = list(Point.objects.values_list("pk", "embedding"))
    pks = np.array([pk for pk, _ in rows])
    matrix = np.stack([vector for _, vector in rows])
    distances = pairwise("l2", queries, matrix)
    return [pks[np.argsort(row, kind="stable")[:K]].tolist() for row in distances]


def found(queries, **approximate):
    search = Point.objects.approximate(**approximate) if approximate else Point.objects.all()
    return [list(search.order_by(L2Distance("embedding", q)).values_list("pk", flat=True)[:K]) for q in queries]


@pytest.mark.django_db(transaction=True)
@calibrating()
def test_a_build_calibrates_the_probes_that_meet_the_recall_target():
    queries = fill()
    out = build(INDEX)
    rt, storage, state = open_index(get_declared(INDEX), "default")
    heads = len(rt.current(storage, state))
    calibration = rt.calibration
    assert calibration is not None and calibration.queries == 100
    assert calibration.recall >= 0.95
    assert 1 <= calibration.probes < heads  # not every list: the point of calibrating
    assert rt.probes() == calibration.probes
    assert f"calibrated: probes {calibration.probes} for recall 0.95" in out
    # Queries the calibration never saw, from the same distribution, meet the target within a margin.
    assert recall(found(queries), exact_answers(queries)) >= 0.9


@pytest.fixture
def calibrated(transactional_db):
    """4,000 clustered points, built and calibrated on 100 of them; 60 more vectors from the same clusters."""
    with calibrating():
        queries = fill()
        build(INDEX)
        yield queries


def test_a_query_asks_for_a_recall_instead_of_probes(calibrated):
    rt = opened()
    low, target, high = rt.probes(0.8), rt.probes(), rt.probes(0.99)
    assert low <= target <= high and low < high
    truth = exact_answers(calibrated)
    assert recall(found(calibrated, recall=0.99), truth) >= 0.95
    assert recall(found(calibrated, recall=0.8), truth) >= 0.7
    # The probes it says are the probes read: the same answers as asking for them.
    assert found(calibrated, recall=0.8) == found(calibrated, probes=low)


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"recall": 0}, "above 0 and at most 1"),
        ({"recall": 1.5}, "above 0 and at most 1"),
        ({"recall": float("nan")}, "above 0 and at most 1"),
        ({"recall": True}, "above 0 and at most 1"),
        ({"recall": 0.9, "probes": 8}, "not both"),
    ],
)
def test_a_recall_that_cannot_be_asked_for_is_refused(arguments, message):
    with pytest.raises(ValueError, match=message):
        Point.objects.approximate(**arguments)


def test_declared_probes_are_read_whatever_the_calibration(calibrated):
    declared = get_declared(INDEX)
    rt = opened()
    calibrated_probes = rt.calibration.probes
    declared.index.tuning["probes"] = calibrated_probes + 7
    try:
        assert rt.probes() == calibrated_probes + 7
        # A recall asked for per query still follows the calibration.
        assert rt.probes(rt.calibration.target) == calibrated_probes
    finally:
        del declared.index.tuning["probes"]


def test_status_and_the_admin_show_the_probes_and_the_recall_measured(calibrated, admin_client):
    out = io.StringIO()
    call_command("vectorindex", "status", INDEX, stdout=out)
    rt = opened()
    found_calibration = rt.calibration
    line = next(line for line in out.getvalue().splitlines() if line.strip().startswith("probes"))
    assert f"{found_calibration.probes:,} lists a query for recall 0.95" in line
    assert f"recall@10 {found_calibration.recall:.3f}" in line and "on 100 of its 4,000 vectors" in line

    html = admin_client.get(reverse("admin:vectorindex_indexstate_changelist")).content.decode()
    assert f"{found_calibration.probes} (recall {found_calibration.recall:.3f})" in html
    state = IndexState.objects.get(name=INDEX)
    html = admin_client.get(reverse("admin:vectorindex_indexstate_change", args=[state.pk])).content.decode()
    assert f"probes {found_calibration.probes} for recall 0.95" in html and "neighbours within reach by probes: 1 →" in html


def test_the_scan_calibrates_again_once_the_heads_change_by_a_fifth(calibrated):
    declared = get_declared(INDEX)
    with calibrating():
        assert ("calibrate", {}) not in maintenance.scan(declared)
        heads = opened().calibration.heads
        # Five times the rows, from the same clusters: lists outgrow posting_limit, and splits add heads
        # (about 300 for 160; three times the rows added 34 to 38, too near the fifth to say which side).
        more = np.concatenate([clustered(4000, seed=3) + shift for shift in (0.01, -0.01, 0.02, -0.02)])
        Point.objects.bulk_create(Point(embedding=v) for v in more)
        maintenance.maintain(declared)
        rt = opened()
        assert rt.calibration.heads > 1.2 * heads  # maintain ran the calibration the scan asked for
        assert rt.calibration.vectors == 20000
        assert ("calibrate", {}) not in maintenance.scan(declared)
    # With calibration off, the scan never asks.
    with override_settings(VECTORINDEX={"CALIBRATION_QUERIES": 0}):
        IndexState.objects.filter(name=INDEX).update(calibration={})
        assert ("calibrate", {}) not in maintenance.scan(declared)


def test_a_calibration_of_a_build_since_replaced_is_not_kept(calibrated):
    declared = get_declared(INDEX)
    storage = open_index(declared, "default").storage
    before = IndexState.objects.get(name=INDEX).calibration
    assert storage.set_calibration({"probes": 1}, generation=before["generation"] + 1) is False
    assert IndexState.objects.get(name=INDEX).calibration == before


def test_the_calibrate_command(calibrated):
    out = io.StringIO()
    call_command("vectorindex", "calibrate", INDEX, "--queries", "50", stdout=out)
    found_calibration = opened().calibration
    assert found_calibration.queries == 50
    assert out.getvalue() == f"{INDEX}: {found_calibration.describe()}\n"


def test_without_calibration_a_build_leaves_the_old_default(transactional_db):
    fill(500, queries=0)
    out = build(INDEX)  # the suite's settings: CALIBRATION_QUERIES 0
    rt = opened()
    assert rt.calibration is None and "calibrated" not in out
    assert rt.probes() == 128
