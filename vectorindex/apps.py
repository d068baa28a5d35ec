"""App configuration: ``ready()`` only wires things up."""

import importlib.util
import sys
from typing import Any

from django.apps import AppConfig


class VectorIndexConfig(AppConfig):
    name = "vectorindex"
    verbose_name = "Vector index"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.apps import apps
        from django.core.signals import setting_changed
        from django.db.models.signals import post_migrate, pre_migrate

        from . import checks  # noqa: F401  (registers the system checks)
        from .conf import reload_on_change
        from .hooks import install
        from .index import maintenance  # noqa: F401  (registers the job runners with index.jobs)
        from .operations import rename_vector_indexes

        install(apps.get_models(include_auto_created=True))  # every save, raw or not, reaches the index
        if importlib.util.find_spec("celery") is not None:
            from . import tasks  # noqa: F401  (registers the Celery tasks with index.jobs)

        setting_changed.connect(reload_on_change, dispatch_uid="vectorindex.conf.reload_on_change")
        pre_migrate.connect(rename_vector_indexes, sender=self)
        post_migrate.connect(_register_indexes, sender=self)


def _migrated(state_apps: Any) -> bool:
    """Does the database, as migrate left it, have every column of vectorindex's models?

    Not after ``migrate vectorindex 0002`` (going back): its tables are then
    older than the models, and nothing here may touch them.
    """
    from django.apps import apps

    for model in apps.get_app_config("vectorindex").get_models():
        try:
            migrated = state_apps.get_model(model._meta.label)
        except LookupError:
            return False
        columns = {field.column for field in migrated._meta.concrete_fields}
        if not {field.column for field in model._meta.concrete_fields} <= columns:
            return False
    return True


def _register_indexes(using: str = "default", verbosity: int = 1, stdout: Any = None, **kwargs: object) -> None:
    """After migrate (and flush), every declared VectorIndex has its state row, and is built.

    An index whose declaration changed since its build, or whose row holds
    what another index left behind, is reset to not built, and migrate says
    so (at verbosity 1 and above). What the database has is what migrate's
    state says (*apps*), which may lack models that are installed (``migrate
    app zero``). Then each index there that is not built is built on the
    rows its table holds, as a database builds an index it creates, with the
    build command's progress on a terminal (``BUILD_ON_MIGRATE``).
    """
    from django.db import router

    from .index.registry import sync_states
    from .index.runtime import reset_runtimes
    from .models import IndexState

    state_apps = kwargs.get("apps")
    if router.allow_migrate_model(using, IndexState) and (state_apps is None or _migrated(state_apps)):
        out = stdout or sys.stdout

        def report(message: str) -> None:
            if verbosity >= 1:
                out.write(message + "\n")

        states = sync_states(using, report=report, migrated=state_apps)
        reset_runtimes()  # before the builds: an index the sync reset must not be built from a stale head
        from .index.build import build_after_migrate

        build_after_migrate(states, using, report=report, progress=verbosity >= 1 and out.isatty())
    else:
        reset_runtimes()
