"""URLs of the demo project: the search page (the admin's "View site") and the admin."""

from django.contrib import admin
from django.urls import path

from demo_project.packages import views

urlpatterns = [
    path("", views.search, name="search"),
    path("suggest", views.suggest, name="suggest"),
    path("admin/", admin.site.urls),
]
