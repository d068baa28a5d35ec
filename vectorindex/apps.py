"""App configuration: ``ready()`` only wires things up."""

from django.apps import AppConfig


class VectorIndexConfig(AppConfig):
    name = "vectorindex"
    verbose_name = "Vector index"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system checks)
