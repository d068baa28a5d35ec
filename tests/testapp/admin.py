from django.contrib import admin

from vectorindex.admin import VectorModelAdmin

from .models import Document, Item, Point


@admin.register(Item)
class ItemAdmin(VectorModelAdmin):
    list_display = ["name", "embedding"]


@admin.register(Document)
class DocumentAdmin(VectorModelAdmin):
    readonly_fields = ["summary_embedding"]


@admin.register(Point)
class PointAdmin(VectorModelAdmin):
    list_display = ["group", "embedding"]
