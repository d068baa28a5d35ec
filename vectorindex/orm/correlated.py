"""Subqueries whose distances are to the outer row: ``Subquery(...)`` and ``Exists(...)`` with ``OuterRef``.

Neither database computes a distance, so a subquery with one cannot be part of
the outer query's SQL. It is answered a row at a time instead: the outer rows
are read first (their own distances, if any, as usual); then, for each, the
subquery runs with that row's values in place of its ``OuterRef()``s — through
the inner model's index when one serves it — and its result becomes the row's
annotation, or decides whether the row is kept (``filter(Exists(...))``,
``filter(nearest=...)`` on such an annotation). One query per outer row: meant
for the rows of a page, not for a whole table.

Supported: such subqueries in ``annotate()`` and ``alias()``, and conditions on
them (or ``Exists``/``~Exists`` themselves) ANDed into ``filter()``, on a
queryset of model instances, with ``OuterRef`` to the outer model's own fields.
Anything else with them — ordering by one, ``values()``, a condition ORed with
others, ``OuterRef`` across a relation — is refused with ``NotSupportedError``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.core.exceptions import FieldDoesNotExist
from django.db import NotSupportedError
from django.db.models import Exists, F, Subquery
from django.db.models.expressions import Col, NegatedExpression, Ref, Value
from django.db.models.lookups import Lookup
from django.db.models.query import ModelIterable, ValuesListIterable
from django.db.models.sql.query import Query
from django.db.models.sql.where import AND, WhereNode

from ..expressions import Distance, contains_distance


def _inner_distance(query: Any) -> bool:
    """Whether an inner query mentions a distance (in its annotations, conditions or ordering)."""
    if any(contains_distance(annotation) for annotation in query.annotations.values()):
        return True
    return contains_distance(query.where) or any(
        contains_distance(item) for item in query.order_by if not isinstance(item, str)
    )


def _subquery(expression: Any) -> tuple[Query, bool, bool] | None:
    """(the inner query with a distance, whether it is an Exists, negated) that *expression* is, or None.

    A ``Subquery`` annotation is the ``Subquery`` itself, or (Django 6.1) the
    inner ``Query`` it resolved to.
    """
    negated = False
    if isinstance(expression, NegatedExpression):
        expression, negated = expression.expression, True
    if isinstance(expression, Ref):
        expression = expression.source
    if isinstance(expression, Subquery):
        query, exists = expression.query, isinstance(expression, Exists)
    elif isinstance(expression, Query) and expression.subquery:
        query, exists = expression, False
    else:
        return None
    return (query, exists, negated) if _inner_distance(query) else None


def mentions(query: Any) -> bool:
    """Whether *query* has a subquery with a distance among its annotations or conditions."""
    if any(_subquery(annotation) for annotation in query.annotations.values()):
        return True
    return any(_in_condition(child) for child in _walk_where(query.where))


def _walk_where(node: Any) -> Iterator[Any]:
    if isinstance(node, WhereNode):
        for child in node.children:
            yield from _walk_where(child)
    else:
        yield node


def _in_condition(node: Any) -> bool:
    if _subquery(node):
        return True
    return isinstance(node, Lookup) and _subquery(node.lhs) is not None


def rows(queryset: Any) -> Iterator[Any]:
    """The result of *queryset*, its subqueries with distances answered a row at a time."""
    query = queryset.query
    if queryset._iterable_class is not ModelIterable:
        raise NotSupportedError(
            "A subquery with a distance (Subquery/Exists with OuterRef) is answered a row at a time, for model "
            "instances only: drop values()/values_list(), and read the fields from the instances."
        )
    names = {name for name, annotation in query.annotations.items() if _subquery(annotation)}
    for item in query.order_by:
        name = item.removeprefix("-") if isinstance(item, str) else None
        if name in names or (not isinstance(item, str) and _mentions_subquery(item)):
            raise NotSupportedError(
                f"order_by({item!r}): results cannot be ordered by a subquery with a distance; "
                "sort the instances in Python."
            )
    conditions = _conditions(query.where)
    outer = queryset._chain()
    outer_query = outer.query
    outer_query.annotations = {n: a for n, a in outer_query.annotations.items() if n not in names}
    if outer_query.annotation_select_mask is not None:
        outer_query.set_annotation_mask(set(outer_query.annotation_select_mask) - names)
    low, high = query.low_mark, query.high_mark
    if conditions:  # all at the top level, ANDed (_conditions): the rest stays SQL's
        outer_query.where = WhereNode(
            [child for child in query.where.children if not any(child is c for c in conditions)], AND
        )
        outer_query.clear_limits()  # the conditions decide which rows count towards the slice
    shown = [n for n in names if query.annotation_select_mask is None or n in query.annotation_select_mask]
    base_alias = outer_query.get_initial_alias()
    seen = 0
    for instance in outer:
        values = {name: _answer(query.annotations[name], instance, base_alias, queryset.db) for name in names}
        if not all(_holds(condition, instance, values, base_alias, queryset.db) for condition in conditions):
            continue
        if conditions:
            seen += 1
            if seen <= low:
                continue
        for name in shown:
            setattr(instance, name, values[name])
        yield instance
        if conditions and high is not None and seen >= high:
            return


def _mentions_subquery(expression: Any) -> bool:
    if _subquery(expression):
        return True
    get_sources = getattr(expression, "get_source_expressions", None)
    return bool(get_sources) and any(_mentions_subquery(child) for child in get_sources() if child is not None)


def _conditions(where: WhereNode) -> list[Any]:
    """The top-level conditions of *where* that use a subquery with a distance (they must be ANDed)."""
    found = []
    for child in _walk_where(where):
        if _in_condition(child):
            found.append(child)
    if not found:
        return []
    top = where.children if where.connector == AND and not where.negated else []
    if any(not any(child is c for c in top) for child in found):
        raise NotSupportedError(
            "A condition on a subquery with a distance can only be ANDed with the others (separate "
            "filter() calls, or commas), not ORed or negated as part of a group."
        )
    return found


def _holds(condition: Any, instance: Any, values: dict, base_alias: str, using: str) -> bool:
    found = _subquery(condition)
    if found is not None:  # filter(Exists(...)) or filter(~Exists(...))
        return _answer(condition, instance, base_alias, using)
    value = values.get(condition.lhs.refs) if isinstance(condition.lhs, Ref) else None
    if value is None and not isinstance(condition.lhs, Ref):
        value = _answer(condition.lhs, instance, base_alias, using)
    if condition.lookup_name == "isnull":
        return (value is None) == bool(condition.rhs)
    if value is None:
        return False  # NULL compared with anything is unknown: not kept
    rhs = condition.rhs.value if isinstance(condition.rhs, Value) else condition.rhs
    compare = {
        "exact": lambda a, b: a == b,
        "lt": lambda a, b: a < b,
        "lte": lambda a, b: a <= b,
        "gt": lambda a, b: a > b,
        "gte": lambda a, b: a >= b,
        "in": lambda a, b: a in b,
    }.get(condition.lookup_name)
    if compare is None or hasattr(rhs, "resolve_expression"):
        raise NotSupportedError(
            f"{condition!r}: a subquery with a distance is compared here only with constants "
            "(exact, lt, lte, gt, gte, in, isnull)."
        )
    return compare(value, rhs)


def _answer(expression: Any, instance: Any, base_alias: str, using: str) -> Any:
    """The value of a subquery with a distance for one outer row: its first column, or (Exists) whether it has rows."""
    query, exists, negated = _subquery(expression)
    inner = _bound(query, instance, base_alias)
    queryset = inner.model._default_manager.db_manager(using).all()
    queryset.query = inner
    if exists:
        return queryset.exists() != negated
    queryset._iterable_class = ValuesListIterable
    first = next(iter(queryset), None)
    return None if first is None else first[0]


def _bound(query: Any, instance: Any, base_alias: str) -> Any:
    """A copy of inner *query* with the outer row's values in place of its references to the outer query."""
    bound = query.clone()
    bound.subquery = False
    inner_aliases = set(bound.alias_map)

    def value_of(col: Any) -> Any:
        if isinstance(col, F):  # OuterRef / ResolvedOuterRef: a term of order_by(), resolved only when compiled
            try:
                field = type(instance)._meta.get_field(col.name)
            except FieldDoesNotExist:
                raise NotSupportedError(
                    f"OuterRef({col.name!r}): a subquery with a distance can refer only to the outer model's own "
                    "fields; annotate the related value onto the outer rows first."
                ) from None
            return getattr(instance, field.attname)
        if col.alias != base_alias or col.target.model is not type(instance)._meta.concrete_model:
            raise NotSupportedError(
                f"OuterRef to {col.target.name!r} across a relation: a subquery with a distance can refer only "
                "to the outer model's own fields; annotate the related value onto the outer rows first."
            )
        return getattr(instance, col.target.attname)

    def outer(expression: Any) -> bool:
        return isinstance(expression, Col) and expression.alias not in inner_aliases

    def bind(expression: Any) -> Any:
        if expression is None:
            return None
        if isinstance(expression, WhereNode):
            node = expression.clone()
            node.children = [bind(child) for child in node.children]
            return node
        if outer(expression):
            return Value(value_of(expression), output_field=expression.output_field)
        if isinstance(expression, Distance) and expression.outer_path is not None:
            return expression.bound_to(value_of(expression.get_source_expressions()[1]))
        if isinstance(expression, Lookup):
            lookup = expression.__class__.__new__(expression.__class__)
            lookup.__dict__.update(expression.__dict__)
            lookup.lhs = bind(expression.lhs)
            if outer(expression.rhs):
                lookup.rhs = lookup.lhs.output_field.get_prep_value(value_of(expression.rhs))
            elif hasattr(expression.rhs, "resolve_expression"):
                lookup.rhs = bind(expression.rhs)
            return lookup
        get_sources = getattr(expression, "get_source_expressions", None)
        if get_sources is None:
            return expression
        sources = get_sources()
        if not sources:
            return expression
        copy = expression.copy()
        copy.set_source_expressions([bind(source) for source in sources])
        return copy

    bound.where = bind(bound.where)
    bound.annotations = {name: bind(annotation) for name, annotation in bound.annotations.items()}
    bound.order_by = tuple(item if isinstance(item, str) else bind(item) for item in bound.order_by)
    bound.external_aliases = {}
    return bound
