"""The VECTORINDEX settings object."""

import pytest
from django.core.exceptions import ImproperlyConfigured

from vectorindex.conf import DEFAULTS, vectorindex_settings


def test_defaults():
    assert vectorindex_settings.EXACT_CHUNK_SIZE == DEFAULTS["EXACT_CHUNK_SIZE"]


def test_override_is_read_and_reloaded(settings):
    settings.VECTORINDEX = {"EXACT_CHUNK_SIZE": 5}
    assert vectorindex_settings.EXACT_CHUNK_SIZE == 5
    settings.VECTORINDEX = {}
    assert vectorindex_settings.EXACT_CHUNK_SIZE == DEFAULTS["EXACT_CHUNK_SIZE"]


def test_unknown_and_bad_values_are_refused(settings):
    settings.VECTORINDEX = {"EXACT_CHUNK_SIZ": 5}
    with pytest.raises(ImproperlyConfigured, match="Unknown VECTORINDEX setting\\(s\\): EXACT_CHUNK_SIZ"):
        vectorindex_settings.EXACT_CHUNK_SIZE
    settings.VECTORINDEX = {"RESULT_BATCH_SIZE": 0}
    with pytest.raises(ImproperlyConfigured, match="VECTORINDEX\\['RESULT_BATCH_SIZE'\\] must be a positive integer, got 0."):
        vectorindex_settings.RESULT_BATCH_SIZE
    settings.VECTORINDEX = {"RETIRED_GRACE": -1}
    with pytest.raises(ImproperlyConfigured, match="'RETIRED_GRACE'\\] must be a number of seconds ≥ 0, got -1."):
        vectorindex_settings.RETIRED_GRACE
    settings.VECTORINDEX = {"RETIRED_GRACE": "5"}
    with pytest.raises(ImproperlyConfigured, match="'RETIRED_GRACE'\\] must be a number of seconds ≥ 0, got '5'."):
        vectorindex_settings.RETIRED_GRACE
    for bad in (0, -1.5, float("inf"), float("nan"), "2", True):
        settings.VECTORINDEX = {"ENQUEUE_TIMEOUT": bad}
        expected = f"'ENQUEUE_TIMEOUT'\\] must be a finite number of seconds > 0, got {bad!r}."
        with pytest.raises(ImproperlyConfigured, match=expected):
            vectorindex_settings.ENQUEUE_TIMEOUT
    settings.VECTORINDEX = {"JOB_LOCK_TIMEOUT": 0.5}
    with pytest.raises(ImproperlyConfigured, match="'JOB_LOCK_TIMEOUT'\\] must be a positive integer, got 0.5."):
        vectorindex_settings.JOB_LOCK_TIMEOUT
    for bad in (-1, 1.5, "200", True):
        settings.VECTORINDEX = {"CALIBRATION_QUERIES": bad}
        with pytest.raises(ImproperlyConfigured, match=f"'CALIBRATION_QUERIES'\\] must be a whole number of queries ≥ 0, got {bad!r}."):
            vectorindex_settings.CALIBRATION_QUERIES
    settings.VECTORINDEX = {"CALIBRATION_QUERIES": 0}
    assert vectorindex_settings.CALIBRATION_QUERIES == 0
    with pytest.raises(AttributeError):
        vectorindex_settings.NOT_A_SETTING


def test_a_removed_setting_is_refused_with_when_and_why(settings):
    """QUERY_READERS_ABOVE_US became a constant of storage/readers.py in 0.9.0; QUERY_READERS stays."""
    from vectorindex.storage import readers

    assert "QUERY_READERS_ABOVE_US" not in DEFAULTS
    settings.VECTORINDEX = {"QUERY_READERS": 2, "QUERY_READERS_ABOVE_US": 100}
    with pytest.raises(ImproperlyConfigured) as refused:
        vectorindex_settings.QUERY_READERS
    assert str(refused.value) == (
        "VECTORINDEX['QUERY_READERS_ABOVE_US'] was removed in 0.9.0: reads are spread over QUERY_READERS "
        "connections while they wait on the disk, a threshold the app keeps itself. "
        "Remove it from settings.VECTORINDEX."
    )
    settings.VECTORINDEX = {"QUERY_READERS": 2}
    assert vectorindex_settings.QUERY_READERS == 2
    assert readers.SPREAD_ABOVE_US == 100


def test_jobs_setting(settings):
    from vectorindex.index.jobs import mode

    settings.VECTORINDEX = {"JOBS": "sometimes"}
    with pytest.raises(ImproperlyConfigured, match="VECTORINDEX\\['JOBS'\\] must be 'auto', 'inline', 'celery' or 'manual', got 'sometimes'."):
        mode()
    settings.VECTORINDEX = {}
    settings.CELERY_BROKER_URL = None
    assert mode() == "inline"
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:6379/0"
    assert mode() == "celery"
    settings.VECTORINDEX = {"JOBS": "manual"}
    assert mode() == "manual"
