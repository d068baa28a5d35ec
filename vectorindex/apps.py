"""App configuration: ``ready()`` only wires things up."""

from django.apps import AppConfig


class VectorIndexConfig(AppConfig):
    name = "vectorindex"
    verbose_name = "Vector index"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate, pre_migrate

        from . import checks  # noqa: F401  (registers the system checks)
        from .operations import rename_vector_indexes

        pre_migrate.connect(rename_vector_indexes, sender=self)
        post_migrate.connect(_register_indexes, sender=self)


def _register_indexes(using: str = "default", **kwargs: object) -> None:
    """After migrate (and flush), every declared VectorIndex has its state row."""
    from django.db import router

    from .models import IndexState
    from .registry import reset_runtimes, sync_states

    if router.allow_migrate_model(using, IndexState):
        sync_states(using)
    reset_runtimes()
