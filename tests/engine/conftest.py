"""The engine's tests need no Django, and when run on their own they prove it.

Run with ``-c tests/engine/pytest.ini`` (no pytest-django), a test fails if it,
or the engine code it ran, imported Django. Run in the whole suite, where
pytest-django imports Django first, nothing is checked here.
"""

import sys

import pytest


@pytest.fixture(autouse=True)
def _no_django(request):
    yield
    if not request.config.pluginmanager.has_plugin("django"):
        assert "django" not in sys.modules, "an engine test, or the engine code it ran, imported Django"
