"""App configuration: ``ready()`` only wires things up."""

import sys
from typing import Any

from django.apps import AppConfig


class VectorIndexConfig(AppConfig):
    name = "vectorindex"
    verbose_name = "Vector index"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate, pre_migrate

        from . import checks  # noqa: F401  (registers the system checks)
        from .hooks import install
        from .operations import rename_vector_indexes

        install()  # raw saves (loaddata) of indexed models reach their index

        pre_migrate.connect(rename_vector_indexes, sender=self)
        post_migrate.connect(_register_indexes, sender=self)


def _register_indexes(using: str = "default", verbosity: int = 1, stdout: Any = None, **kwargs: object) -> None:
    """After migrate (and flush), every declared VectorIndex has its state row.

    An index whose declaration changed since its build is reset to not built,
    and migrate says so (at verbosity 1 and above) with what to run.
    """
    from django.db import router

    from .models import IndexState
    from .registry import reset_runtimes, sync_states

    if router.allow_migrate_model(using, IndexState):
        out = stdout or sys.stdout

        def report(message: str) -> None:
            if verbosity >= 1:
                out.write(message + "\n")

        sync_states(using, report=report)
    reset_runtimes()
