from django.apps import AppConfig


class PackagesConfig(AppConfig):
    name = "demo_project.packages"
    label = "packages"
    verbose_name = "PyPI packages"
    default_auto_field = "django.db.models.BigAutoField"
