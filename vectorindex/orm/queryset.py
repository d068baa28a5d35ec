"""``VectorQuerySet`` and ``VectorManager``: where distances meet the ORM.

A queryset that mentions a distance is answered by the exact path
(:mod:`vectorindex.orm.exact`); one that does not is plain Django. The manager is
also where writes are checked before they reach the database and, with an index
declared, where the index takes part in them.
"""

from __future__ import annotations

import inspect
import math
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import replace
from typing import Any

import numpy as np
from django.core.exceptions import FieldDoesNotExist
from django.db import NotSupportedError, connections, models, router, transaction
from django.db.models import Avg, F, Sum

from ..conf import vectorindex_settings
from ..fields import SparseVectorField, VectorField
from . import correlated, exact
from .planner import SearchOptions, plan_query

__all__ = ["VectorManager", "VectorQuerySet", "give_vector_querysets"]

VECTOR_AGGREGATES = (Avg, Sum)


# Times a query chooses its rows again when some it chose were deleted before
# they were read (each try sees the deletes committed before it began).
VANISHED_ATTEMPTS = 3


class VectorQuerySet(models.QuerySet):
    """A QuerySet that understands distance expressions and vector aggregates."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._vector_search = SearchOptions()
        # Once evaluated: "index" when an index chose the rows, "exact" when
        # the exact scan did, None when no distance was involved.
        self.answered_by: str | None = None

    def _clone(self) -> VectorQuerySet:
        clone = super()._clone()
        clone._vector_search = replace(self._vector_search)
        return clone

    # Choosing how a query is answered -------------------------------------------

    def approximate(
        self, *, probes: int | None = None, recall: float | None = None, epsilon: float | None = None
    ) -> VectorQuerySet:
        """Trade recall for speed on this query: how many heads the index probes.

        ``recall`` asks for a recall@10 (0.9, say): the index reads as many
        lists as its calibration measured for it, fewer for less. ``probes``
        says how many heads' lists to read, instead: ``probes`` heads are read
        at first (more only if too few rows pass the query's filters).
        ``epsilon`` skips heads farther than ``(1 + epsilon)`` times the
        nearest one, and ``float("inf")`` skips none. ``probes`` of at least
        the number of heads reads every list, whatever ``epsilon``. Defaults
        come from the VectorIndex declaration (its ``recall`` target, or its
        ``probes``). Where no index serves the query, these change nothing.
        """
        if probes is not None and (isinstance(probes, bool) or not isinstance(probes, int) or probes < 1):
            raise ValueError(f"approximate(probes=...) must be a positive integer, got {probes!r}.")
        if recall is not None:
            if isinstance(recall, bool) or not isinstance(recall, (int, float)) or not 0 < recall <= 1:
                raise ValueError(f"approximate(recall=...) must be a number above 0 and at most 1, got {recall!r}.")
            if probes is not None:
                raise ValueError("approximate() takes probes= or recall=, not both: probes says how many lists to read.")
            recall = float(recall)
        if epsilon is not None:
            # epsilon != epsilon finds NaN (which is not < 0); math.isnan would overflow on a huge int.
            if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or epsilon != epsilon or epsilon < 0:
                raise ValueError(f"approximate(epsilon=...) must be a number of at least 0, got {epsilon!r}.")
            # An int too large for a float means no cut-off too.
            epsilon = math.inf if epsilon > sys.float_info.max else float(epsilon)
        clone = self._chain()
        clone._vector_search = replace(
            self._vector_search, probes=probes, recall=recall, epsilon=epsilon, exact=False
        )
        return clone

    def exact(self) -> VectorQuerySet:
        """Answer this query by the exact scan even where an index could serve it."""
        clone = self._chain()
        clone._vector_search = replace(self._vector_search, exact=True)
        return clone

    # Evaluation --------------------------------------------------------------

    def _selected(self, plan: Any) -> Any:
        from ..index import search

        return search.answer(self, plan)

    def _fetch_all(self) -> None:
        if self._result_cache is None and correlated.mentions(self.query):
            self._result_cache = list(correlated.rows(self))
        if self._result_cache is None:
            plan = plan_query(self.query)
            if plan is not None:
                for _attempt in range(VANISHED_ATTEMPTS):
                    selected = self._selected(plan)
                    self.answered_by = "exact" if selected is None else "index"
                    chosen = selected if selected is not None else exact.select(self, plan)
                    self._result_cache = list(exact.fetch(self, plan, selected=chosen))
                    if len(self._result_cache) >= len(chosen[0]) or self.query.distinct:
                        break
                    # Rows chosen were deleted by a transaction that committed
                    # between the choice and the read of the rows (outside a
                    # transaction, or under READ COMMITTED): choose again, so
                    # that a slice of k rows does not come back shorter.
        super()._fetch_all()

    def iterator(self, chunk_size: int | None = None) -> Iterator[Any]:
        if correlated.mentions(self.query):
            return correlated.rows(self)
        plan = plan_query(self.query)
        if plan is None:
            return super().iterator(chunk_size=chunk_size)
        # The scan reads in EXACT_CHUNK_SIZE chunks and the rows are loaded in
        # RESULT_BATCH_SIZE batches; chunk_size has nothing left to tune here.
        return exact.fetch(self, plan, prefetch=True, selected=self._selected(plan))

    def count(self) -> int:
        if self._result_cache is not None:
            return len(self._result_cache)
        if correlated.mentions(self.query):
            return sum(1 for _ in correlated.rows(self))
        plan = plan_query(self.query)
        if plan is None:
            return super().count()
        return exact.count(self, plan)

    def exists(self) -> bool:
        if self._result_cache is not None:
            return bool(self._result_cache)
        if correlated.mentions(self.query):
            return next(correlated.rows(self), None) is not None
        plan = plan_query(self.query)
        if plan is None:
            return super().exists()
        return exact.count(self, plan) > 0

    # Aggregates ----------------------------------------------------------------

    def aggregate(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Django's aggregate(), plus ``Avg`` and ``Sum`` of a vector field.

        ``Item.objects.aggregate(Avg("embedding"))`` is the element-wise mean of
        the non-NULL vectors (a float32 array, or None when there are none),
        computed in numpy over a streamed scan, like pgvector's ``avg(vector)``.
        """
        for arg in args:
            try:
                kwargs[arg.default_alias] = arg
            except (AttributeError, TypeError):
                raise TypeError("Complex aggregates require an alias") from None
        vector_aggregates = {
            alias: aggregate
            for alias, aggregate in kwargs.items()
            if self._vector_aggregate_path(aggregate) is not None
        }
        others = {alias: a for alias, a in kwargs.items() if alias not in vector_aggregates}
        plan = plan_query(self.query)
        result: dict[str, Any] = {}
        if others:
            if plan is not None:
                raise NotSupportedError(
                    "aggregate() over ordinary fields cannot be combined with "
                    "distances in the queryset; only Avg() and Sum() of vector fields can."
                )
            result.update(super().aggregate(**others))
        if vector_aggregates:
            result.update(self._aggregate_vectors(vector_aggregates, plan))
        return {alias: result[alias] for alias in kwargs}

    def _vector_aggregate_path(self, aggregate: Any) -> str | None:
        if not isinstance(aggregate, VECTOR_AGGREGATES):
            return None
        sources = aggregate.source_expressions  # without filter= and order_by=
        if len(sources) != 1 or not isinstance(sources[0], F):
            return None
        path = sources[0].name
        try:
            field = exact._field(self.model, path)
        except (FieldDoesNotExist, AttributeError):  # not a field path: not ours
            return None
        if not isinstance(field, VectorField):
            return None
        if not field.summable:  # pgvector has no avg(bit) nor avg(sparsevec) either
            what = "sparse vectors" if isinstance(field, SparseVectorField) else "bit strings"
            raise NotSupportedError(f"{type(aggregate).__name__}('{path}'): {what} have no average or sum.")
        if aggregate.filter is not None or aggregate.distinct:
            raise NotSupportedError(
                f"{type(aggregate).__name__}('{path}'): filter= and distinct= are not "
                "supported on vector aggregates; filter the queryset instead."
            )
        return path

    def _aggregate_vectors(self, aggregates: dict[str, Any], plan: Any) -> dict[str, Any]:
        from .planner import DistancePlan

        paths = tuple(sorted({self._vector_aggregate_path(a) for a in aggregates.values()}))
        sums = {path: None for path in paths}
        counts = dict.fromkeys(paths, 0)
        plan = plan or DistancePlan(where_sql=self.query.where)
        for chunk in exact.scan(self, plan, terms=False, vectors=paths):
            for path in paths:
                _, matrix = chunk.vectors[path]
                if matrix.shape[0]:
                    total = matrix.sum(axis=0, dtype=np.float64)
                    sums[path] = total if sums[path] is None else sums[path] + total
                    counts[path] += matrix.shape[0]
        result = {}
        for alias, aggregate in aggregates.items():
            path = self._vector_aggregate_path(aggregate)
            total = sums[path]
            field = exact._field(self.model, path)
            if total is None:
                result[alias] = None
            elif isinstance(aggregate, Avg):
                result[alias] = field.returned((total / counts[path]).astype(np.float32))
            else:
                result[alias] = field.returned(total.astype(np.float32))
        return result

    # Writes ----------------------------------------------------------------------

    def _vector_fields(self) -> list[VectorField]:
        return [f for f in self.model._meta.concrete_fields if isinstance(f, VectorField)]

    def _check_vectors(self, objs: Iterable[models.Model], fields: Iterable[VectorField]) -> None:
        """Refuse every bad vector before the first row is written."""
        for obj in objs:
            for field in fields:
                field.get_prep_value(getattr(obj, field.attname))

    def _indexes(self, names: Iterable[str] | None = None) -> list[Any]:
        """The VectorIndexes over this model, or those over the named fields."""
        from ..index.registry import indexes_of

        found = indexes_of(self.model)
        if names is None:
            return found
        names = set(names)
        return [d for d in found if d.field.name in names or d.field.attname in names]

    @property
    def _write_db(self) -> str:
        """The database a write through this queryset goes to: Django's ``QuerySet.db`` once the write sets ``_for_write``.

        Read before Django's own method runs, ``self.db`` would name the
        database the routers send reads to (a replica), and the index work
        would go there rather than beside the rows.
        """
        return self._db or router.db_for_write(self.model, **self._hints)

    def bulk_create(self, objs: Iterable[models.Model], *args: Any, **kwargs: Any) -> list:
        objs = list(objs)
        self._check_vectors(objs, self._vector_fields())
        indexes = self._indexes()
        if not indexes:
            return super().bulk_create(objs, *args, **kwargs)
        options = inspect.signature(models.QuerySet.bulk_create).bind(self, objs, *args, **kwargs).arguments
        if options.get("ignore_conflicts") or options.get("update_conflicts"):
            raise NotSupportedError(
                "bulk_create() with ignore_conflicts or update_conflicts cannot keep a "
                "VectorIndex current (the rows written are not known); save the rows "
                "another way or rebuild the index afterwards."
            )
        from ..index import instances, writes

        with transaction.atomic(using=self._write_db, savepoint=False):
            # Routing needs no primary keys: it runs while the rows go in.
            values = [[getattr(obj, declared.field.attname) for obj in objs] for declared in indexes]
            routed = [writes.route_ahead(d, self._write_db, v) for d, v in zip(indexes, values, strict=True)]
            created = super().bulk_create(objs, *args, **kwargs)
            for declared, column, ahead in zip(indexes, values, routed, strict=True):
                rows = [(obj.pk, value) for obj, value in zip(created, column, strict=True)]
                writes.index_vectors(declared, self._write_db, rows, routed=ahead, new=True)
        for obj in created:
            instances.remember_loaded(obj)
        return created

    def bulk_update(self, objs: Iterable[models.Model], fields: Iterable[str], *args: Any, **kwargs: Any) -> int:
        objs = list(objs)
        fields = list(fields)
        names = set(fields)
        self._check_vectors(objs, [f for f in self._vector_fields() if f.name in names])
        indexes = self._indexes(names)
        if not indexes:
            return super().bulk_update(objs, fields, *args, **kwargs)
        from ..index import instances, writes

        with transaction.atomic(using=self._write_db, savepoint=False):
            with instances.handled_by_caller():
                updated = super().bulk_update(objs, fields, *args, **kwargs)
            # Objects whose rows were deleted meanwhile updated nothing, and get
            # no version: the rows updated are locked now, so those present
            # stay present until this commits.
            present = self._present([obj.pk for obj in objs])
            for declared in indexes:
                rows = []
                for obj in objs:
                    if obj.pk in present:
                        rows.extend(instances.changed_rows(obj, declared, False, names))
                writes.index_vectors(declared, self._write_db, rows)
        for obj in objs:
            instances.remember_loaded(obj, names)
        return updated

    def _present(self, pks: list[Any]) -> set[Any]:
        """Which of these primary keys have a row now.

        A locking read: under REPEATABLE READ a plain one would answer from
        the transaction's snapshot, which may still hold a row that another
        transaction deleted before the update found nothing to update.
        """
        found: set[Any] = set()
        rows = self.model._base_manager.using(self._write_db).select_for_update()
        for start in range(0, len(pks), 1_000):
            batch = pks[start : start + 1_000]
            found.update(rows.filter(pk__in=batch).values_list("pk", flat=True))
        return found

    def _by_primary_keys(self) -> Iterator[VectorQuerySet]:
        """The rows of a distance-filtered queryset, as plain pk__in querysets."""
        plan = plan_query(self.query)
        pks, _ = exact.select(self.using(self._write_db), plan)  # the rows as the database written to has them
        size = vectorindex_settings.RESULT_BATCH_SIZE
        for start in range(0, len(pks), size):
            yield type(self)(self.model, using=self._write_db).filter(pk__in=pks[start : start + size])

    def delete(self) -> tuple[int, dict[str, int]]:
        if plan_query(self.query) is None:
            if not self._indexes():
                return super().delete()
            from ..index import instances

            # One transaction for the rows and the index; the deleted rows'
            # version flips are gathered and written together.
            with transaction.atomic(using=self._write_db, savepoint=False), instances.bulk_deleting():
                return super().delete()
        if self.query.is_sliced:
            raise TypeError("Cannot use 'limit' or 'offset' with delete().")
        total, per_model = 0, Counter()
        with transaction.atomic(using=self._write_db, savepoint=False):
            for batch in list(self._by_primary_keys()):
                deleted, counts = batch.delete()
                total += deleted
                per_model.update(counts)
        self._result_cache = None
        return total, dict(per_model)

    delete.alters_data = True
    delete.queryset_only = True

    def update(self, **kwargs: Any) -> int:
        if plan_query(self.query) is not None:
            if self.query.is_sliced:
                raise TypeError("Cannot update a query once a slice has been taken.")
            with transaction.atomic(using=self._write_db, savepoint=False):
                updated = sum(batch.update(**kwargs) for batch in list(self._by_primary_keys()))
            self._result_cache = None
            return updated
        from ..index import instances, writes

        indexes = self._indexes(kwargs)
        if not indexes or instances.caller_indexes():
            return super().update(**kwargs)

        with transaction.atomic(using=self._write_db, savepoint=False):
            rows = self.select_for_update() if connections[self._write_db].features.has_select_for_update else self
            pks = list(rows.values_list("pk", flat=True))
            updated = super().update(**kwargs)
            for declared in indexes:
                for start in range(0, len(pks), 1_000):
                    batch = pks[start : start + 1_000]
                    changed = self.model._base_manager.using(self._write_db).filter(pk__in=batch)
                    writes.index_vectors(declared, self._write_db, list(changed.values_list("pk", declared.field.attname)))
        return updated

    update.alters_data = True


class VectorManager(models.Manager.from_queryset(VectorQuerySet)):
    """The manager for models with vector fields: ``objects = VectorManager()``."""


# A manager class -> the same class returning querysets that also understand distances.
_vector_manager_classes: dict[type, type] = {}


def give_vector_querysets(model: type[models.Model]) -> None:
    """Make every manager of *model* return querysets that understand distances, whatever manager it declares.

    For a model with a ``VectorField``, run when its class is prepared. Each
    manager whose queryset class is not a :class:`VectorQuerySet` gets, in
    place, a subclass of its own class whose querysets are of a subclass of
    its own queryset class with ``VectorQuerySet`` first: its own methods
    stay, and ``approximate()``/``exact()`` are added. The subclasses keep the
    names and modules of the classes they extend, so that a migration writes
    the project's own manager (``use_in_migrations``) and ``isinstance`` still
    holds. The managers a model's class declares and those it inherits are
    given their subclass: Django copies managers from them again whenever
    the app registry's caches are cleared. A manager whose ``get_queryset()``
    builds some other queryset itself is left as it is (check vectorindex.W001).
    """
    for klass in model.__mro__:
        meta = klass.__dict__.get("_meta")
        if meta is None:
            continue
        for manager in meta.local_managers:
            _give(manager)
    for manager in model._meta.__dict__.get("managers", ()):  # the copies made already
        _give(manager)


def _give(manager: models.Manager) -> None:
    cls = type(manager)
    if issubclass(getattr(cls, "_queryset_class", VectorQuerySet), VectorQuerySet):
        return
    made = _vector_manager_classes.get(cls)
    if made is None:
        queryset_class = cls._queryset_class
        named = {"__module__": queryset_class.__module__, "__qualname__": queryset_class.__qualname__}
        vector_queryset_class = type(queryset_class.__name__, (VectorQuerySet, queryset_class), named)
        made = cls.from_queryset(vector_queryset_class, cls.__name__)
        made.__module__, made.__qualname__ = cls.__module__, cls.__qualname__
        # Equal to the class it extends, as migrations compare managers.
        made.__eq__ = lambda self, other: isinstance(other, cls) and self._constructor_args == other._constructor_args
        made.__hash__ = cls.__hash__
        _vector_manager_classes[cls] = made
    manager.__class__ = made
