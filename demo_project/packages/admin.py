from django.contrib import admin

from vectorindex.admin import VectorModelAdmin

from .models import Package


@admin.register(Package)
class PackageAdmin(VectorModelAdmin):
    list_display = ["name", "summary", "embedding"]
    search_fields = ["name"]
    ordering = ["name"]
