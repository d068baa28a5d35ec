"""``manage.py neighbours NAME``: the packages whose summaries are nearest to NAME's.

An exact nearest-neighbour search through the ORM::

    Package.objects.exclude(pk=package.pk)
        .annotate(distance=CosineDistance("embedding", package.embedding))
        .order_by("distance")[:k]
"""

from __future__ import annotations

import random
import shutil
import time
import unicodedata
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS
from django.db.models.functions import Length

from demo_project.packages.models import Package
from vectorindex import CosineDistance, L2Distance, MaxInnerProduct

DISTANCES = {
    "cosine": CosineDistance,  # 1 - cosine similarity
    "l2": L2Distance,  # Euclidean distance
    "ip": MaxInnerProduct,  # negative inner product
}
SUGGESTIONS = 5


def display_width(char: str) -> int:
    """Terminal columns a character takes: 2 for wide (CJK) ones, 0 for combining marks."""
    if unicodedata.combining(char):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def shorten(text: str, width: int) -> str:
    """*text* on one line, cut to *width* terminal columns with "…" if longer."""
    text = " ".join(text.split())
    if sum(display_width(char) for char in text) <= width:
        return text
    kept, used = [], 0
    for char in text:
        used += display_width(char)
        if used > width - 1:  # keep a column for the ellipsis
            break
        kept.append(char)
    return "".join(kept).rstrip() + "…" if width >= 1 else ""


class Command(BaseCommand):
    help = (
        "Show the k packages whose summaries are nearest to a package's (exact search "
        "over the sentence embeddings)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "name",
            nargs="?",
            help="The package's exact name (omit it with --random).",
        )
        parser.add_argument(
            "--random",
            action="store_true",
            help="Pick the package at random instead of by name.",
        )
        parser.add_argument(
            "--seed",
            type=int,
            default=None,
            help="Seed for --random, for a repeatable pick.",
        )
        parser.add_argument(
            "-k",
            type=int,
            default=10,
            help="How many neighbours to show (default: 10).",
        )
        parser.add_argument(
            "--distance",
            choices=sorted(DISTANCES),
            default="cosine",
            help="The distance to rank by (default: cosine).",
        )
        parser.add_argument(
            "--exact",
            action="store_true",
            help="Answer by the exact scan even when the index could (default: the index, when built).",
        )
        parser.add_argument(
            "--width",
            type=int,
            default=None,
            help="Line width for the output (default: the terminal's, or 100).",
        )
        parser.add_argument(
            "--database",
            default=DEFAULT_DB_ALIAS,
            help='The database to query (default: "default").',
        )

    def handle(self, *args: Any, **options: Any) -> None:
        k = options["k"]
        if k < 1:
            raise CommandError("-k must be at least 1.")
        packages = Package.objects.using(options["database"])
        package = self._pick(packages, options)
        width = options["width"] or shutil.get_terminal_size((100, 24)).columns
        width = max(width, 40)
        distance_class = DISTANCES[options["distance"]]

        nearest = (
            packages.exclude(pk=package.pk)
            .annotate(distance=distance_class("embedding", package.embedding))
            .order_by("distance")
        )
        if options["exact"]:
            nearest = nearest.exact()
        started = time.perf_counter()
        neighbours = list(nearest[:k])
        elapsed_ms = (time.perf_counter() - started) * 1000
        indexed = not options["exact"] and self._index_serves(options)
        if indexed:
            started = time.perf_counter()
            exact = list(nearest.exact()[:k])
            exact_ms = (time.perf_counter() - started) * 1000
            same = len({n.pk for n in neighbours} & {n.pk for n in exact})

        self.stdout.write(self.style.MIGRATE_HEADING(package.name))
        self.stdout.write(shorten(package.summary, width))
        self.stdout.write("")
        if not neighbours:
            self.stdout.write("No other packages to compare with.")
        else:
            self.stdout.write(
                f"{len(neighbours)} nearest by {options['distance']} distance:"
            )
            name_width = max(len(n.name) for n in neighbours)
            number_width = len(str(len(neighbours)))
            for rank, neighbour in enumerate(neighbours, start=1):
                distance = (
                    "     n/a" if neighbour.distance is None else f"{neighbour.distance:8.4f}"
                )
                prefix = f"{rank:>{number_width}}. {distance}  {neighbour.name:<{name_width}}  "
                self.stdout.write(prefix + shorten(neighbour.summary, width - len(prefix)))
        self.stdout.write("")
        if indexed:
            self.stdout.write(
                f"From the index in {elapsed_ms:.1f} ms; the exact scan took {exact_ms:.1f} ms "
                f"and found {same} of the same {len(exact)}."
            )
        else:
            self.stdout.write(f"By exact scan in {elapsed_ms:.1f} ms.")

    def _index_serves(self, options: dict[str, Any]) -> bool:
        """Whether the package index is built and answers this distance."""
        from vectorindex.models import IndexState

        return options["distance"] == "cosine" and IndexState.objects.using(options["database"]).filter(
            name="package_embedding", status=IndexState.Status.READY
        ).exists()

    def _pick(self, packages: Any, options: dict[str, Any]) -> Package:
        name = options["name"]
        if options["random"]:
            if name:
                raise CommandError("Give either a package name or --random, not both.")
            total = packages.count()
            if not total:
                raise CommandError("There are no packages; run `manage.py load_sample` first.")
            index = random.Random(options["seed"]).randrange(total)
            return packages.order_by("pk")[index]
        if not name:
            raise CommandError("Give a package name, or --random for a random one.")
        try:
            return packages.get(name=name)
        except Package.DoesNotExist:
            pass
        if not packages.exists():
            raise CommandError("There are no packages; run `manage.py load_sample` first.")
        suggestions = list(
            packages.filter(name__icontains=name)
            .order_by(Length("name"), "name")
            .values_list("name", flat=True)[:SUGGESTIONS]
        )
        if suggestions:
            raise CommandError(
                f"No package named {name!r}. Did you mean: {', '.join(suggestions)}?"
            )
        raise CommandError(f"No package named {name!r}, and no package name contains it.")
