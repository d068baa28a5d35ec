"""System checks."""

import pytest
from django.core import checks
from django.db import models
from django.test.utils import isolate_apps

from tests.testapp.models import Plain
from vectorindex import VectorField


def ids(messages):
    return [message.id for message in messages]


@pytest.mark.django_db  # Django 6 asks the database during model checks
def test_default_manager_without_vector_queryset_warns():
    messages = checks.run_checks(tags=[checks.Tags.models])
    warning = next(m for m in messages if m.id == "vectorindex.W001")
    assert warning.obj is Plain
    assert "testapp.Plain has a VectorField" in warning.msg
    assert "objects = VectorManager()" in warning.hint


def test_admin_without_the_mixin_warns():
    from django.contrib import admin

    site_registry = dict(admin.site._registry)
    try:
        admin.site.register(Plain)
        messages = checks.run_checks(tags=[checks.Tags.admin])
        assert "vectorindex.W002" in ids(messages)
    finally:
        admin.site._registry = site_registry
    assert "vectorindex.W002" not in ids(checks.run_checks(tags=[checks.Tags.admin]))


@isolate_apps("tests.testapp")
def test_vector_field_cannot_be_unique():
    class Unique(models.Model):
        embedding = VectorField(dimensions=2, unique=True)

        class Meta:
            app_label = "testapp"

    assert "vectorindex.E001" in ids(Unique._meta.get_field("embedding").check())


def test_jobs_without_a_broker_or_a_scan_warn(settings):
    from vectorindex.checks import check_jobs

    settings.VECTORINDEX = {"JOBS": "celery"}
    settings.CELERY_BROKER_URL = None
    assert ids(check_jobs()) == ["vectorindex.W003"]
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:6379/0"
    settings.CELERY_BEAT_SCHEDULE = {}
    assert ids(check_jobs()) == ["vectorindex.W004"]
    settings.CELERY_BEAT_SCHEDULE = {"scan": {"task": "vectorindex.scan", "schedule": 60}}
    assert check_jobs() == []
    settings.VECTORINDEX = {"JOBS": "inline"}
    settings.CELERY_BROKER_URL = None
    assert check_jobs() == []
