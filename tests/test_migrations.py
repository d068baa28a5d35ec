"""The models and the committed migrations agree."""

import io

import pytest
from django.core.management import call_command


@pytest.mark.django_db
def test_no_missing_migrations():
    out = io.StringIO()
    try:
        call_command("makemigrations", "--check", "--dry-run", stdout=out, stderr=out)
    except SystemExit as exit:  # makemigrations --check exits 1 on drift
        pytest.fail(f"Models and migrations differ (exit {exit.code}):\n{out.getvalue()}")


@pytest.mark.django_db(transaction=True)
def test_migrating_vectorindex_back_and_forth():
    """The end of a migrate back leaves tables older than the models alone."""
    out = io.StringIO()
    try:
        call_command("migrate", "vectorindex", "0002", stdout=out, verbosity=1)
    finally:
        call_command("migrate", stdout=out, verbosity=0)
    from vectorindex.models import IndexState

    assert IndexState.objects.filter(name="point_embedding", status="empty").exists()
