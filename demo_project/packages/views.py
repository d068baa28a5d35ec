"""The demo site: type a package's name, see the packages whose summaries are nearest to its own."""

from __future__ import annotations

import time

from django.db.models.functions import Length
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from vectorindex import CosineDistance

from .models import Package

NEIGHBOURS = 10
SUGGESTIONS = 8


def _suggestions(text: str) -> list[str]:
    """Names that start with *text*, then names that contain it, shortest first."""
    if not text:
        return []
    starting = list(
        Package.objects.filter(name__istartswith=text).order_by(Length("name"), "name").values_list("name", flat=True)[
            :SUGGESTIONS
        ]
    )
    if len(starting) < SUGGESTIONS:
        containing = (
            Package.objects.filter(name__icontains=text)
            .exclude(name__in=starting)
            .order_by(Length("name"), "name")
            .values_list("name", flat=True)[: SUGGESTIONS - len(starting)]
        )
        starting.extend(containing)
    return starting


def search(request: HttpRequest) -> HttpResponse:
    """The search page: a package's nearest packages, the time the query took and what answered it."""
    name = request.GET.get("q", "").strip()
    context: dict = {"q": name, "count": f"{Package.objects.count():,}"}
    package = Package.objects.filter(name=name).first() if name else None
    if package is not None:
        nearest = (
            Package.objects.exclude(pk=package.pk)
            .annotate(distance=CosineDistance("embedding", package.embedding))
            .order_by("distance")[:NEIGHBOURS]
        )
        started = time.perf_counter()
        neighbours = list(nearest)
        context.update(
            package=package,
            neighbours=neighbours,
            milliseconds=(time.perf_counter() - started) * 1000,
            answered_by=nearest.answered_by,
        )
    elif name:
        context["suggestions"] = _suggestions(name)
    return render(request, "packages/search.html", context)


def suggest(request: HttpRequest) -> JsonResponse:
    """Package names for the search box as the visitor types: ``{"names": [...]}``."""
    return JsonResponse({"names": _suggestions(request.GET.get("q", "").strip())})
