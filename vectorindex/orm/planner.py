"""Splitting a Django query into what SQL answers and what numpy answers.

A query that mentions a distance (in ``annotate``, ``alias``, ``filter`` or
``order_by``) is taken apart into a :class:`DistancePlan`:

* the *distances* it needs, each computed once however often it is mentioned,
  and the terms derived from them with ``+ - * /`` and numbers
  (``1 - CosineDistance(...)``, :class:`Derived`);
* the part of the WHERE clause that SQL can evaluate, and the part — lookups on
  distances, combined with AND/OR/NOT — that numpy evaluates, in SQL's
  three-valued logic;
* the ordering: distance terms first, then any ordinary terms that break ties;
* the slice.

What cannot be split that way (a distance OR'ed with an ordinary condition, an
ordinary ordering term before a distance, a distance inside an expression other
than arithmetic with numbers and distances) is refused with ``NotSupportedError`` instead of being answered wrongly.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.db import NotSupportedError
from django.db.models import F, OrderBy
from django.db.models.expressions import CombinedExpression, ExpressionWrapper, Ref, Value
from django.db.models.sql.query import Query
from django.db.models.sql.where import AND, OR, WhereNode

from ..expressions import Distance, contains_distance

NUMERIC_LOOKUPS = {"exact", "lt", "lte", "gt", "gte", "range", "in", "isnull"}


@dataclass
class SearchOptions:
    """How a queryset wants its distance ordering answered (``approximate()``, ``exact()``)."""

    probes: int | None = None
    recall: float | None = None
    epsilon: float | None = None
    exact: bool = False


@dataclass
class OrderKey:
    """One distance term of the ORDER BY, in the direction the user wrote it."""

    term: int
    descending: bool
    nulls_first: bool

    def effective(self, standard_ordering: bool) -> tuple[bool, bool]:
        """(descending, nulls_first) after ``QuerySet.reverse()``."""
        if standard_ordering:
            return self.descending, self.nulls_first
        return not self.descending, not self.nulls_first


# Arithmetic numpy does on distances (``1 - CosineDistance(...)``), by Django's connector.
ARITHMETIC: dict[str, Callable[[Any, Any], Any]] = {
    CombinedExpression.ADD: operator.add,
    CombinedExpression.SUB: operator.sub,
    CombinedExpression.MUL: operator.mul,
    CombinedExpression.DIV: operator.truediv,
}


@dataclass
class Derived:
    """A term computed from other terms and constants: ``1 - CosineDistance(...)``.

    *parts* are (kind, item) pairs — ("term", index of a term before this
    one) or ("constant", number) — combined by *connector*; NULL (NaN) in,
    NULL out, as SQL's arithmetic.
    """

    connector: str
    parts: tuple[tuple[str, Any], tuple[str, Any]]

    @property
    def key(self) -> tuple:
        return ("derived", self.connector, self.parts)

    def combine(self, values: list[np.ndarray]) -> np.ndarray:
        lhs, rhs = (values[item] if kind == "term" else item for kind, item in self.parts)
        with np.errstate(divide="ignore", invalid="ignore"):
            result = ARITHMETIC[self.connector](lhs, rhs)
        return np.where(np.isfinite(result), result, np.nan)  # x / 0: NULL, where SQL would fail


def term_values(plan: DistancePlan, distance_values: Callable[[Distance], np.ndarray]) -> list[np.ndarray]:
    """Each term's values: a distance's from *distance_values*, a derived term's from those before it."""
    values: list[np.ndarray] = []
    for term in plan.terms:
        values.append(term.combine(values) if isinstance(term, Derived) else distance_values(term))
    return values


@dataclass
class DistancePlan:
    terms: list[Distance] = field(default_factory=list)
    annotations: dict[str, int] = field(default_factory=dict)
    where_sql: Any = None
    where_numpy: Any = None
    order_keys: list[OrderKey] = field(default_factory=list)
    order_tail: list[Any] = field(default_factory=list)
    # id() of each numpy-side lookup -> the term it compares.
    lookup_terms: dict[int, int] = field(default_factory=dict)
    standard_ordering: bool = True
    low: int = 0
    high: int | None = None

    @property
    def field_paths(self) -> list[str]:
        return sorted({term.field_path for term in self.terms if isinstance(term, Distance)})

    def derived_for(self, expression: Any, query: Query) -> int:
        """The term of an expression over distances and numbers (``1 - CosineDistance(...)``); NotSupportedError for others."""
        if isinstance(expression, ExpressionWrapper):
            expression = expression.expression
        if isinstance(expression, Ref):
            expression = expression.source
        if isinstance(expression, Distance):
            return self.term_for(expression, query)
        if not isinstance(expression, CombinedExpression) or expression.connector not in ARITHMETIC:
            raise NotSupportedError(
                f"{expression!r} puts a distance where only +, -, * and / with numbers and other distances "
                "are computed (1 - CosineDistance(...), say); compute the rest in Python."
            )
        parts = []
        for side in (expression.lhs, expression.rhs):
            if contains_distance(side):
                parts.append(("term", self.derived_for(side, query)))
            elif isinstance(side, Value) and isinstance(side.value, (int, float)) and not isinstance(side.value, bool):
                parts.append(("constant", float(side.value)))
            else:
                raise NotSupportedError(
                    f"{side!r}: a distance is combined here only with numbers and other distances "
                    "(1 - CosineDistance(...)), not with fields or other expressions."
                )
        derived = Derived(expression.connector, tuple(parts))
        for index, known in enumerate(self.terms):
            if known.key == derived.key:
                return index
        self.terms.append(derived)
        return len(self.terms) - 1

    def term_for(self, distance: Distance, query: Query) -> int:
        if not hasattr(distance, "dimensions"):
            # An order_by() term is resolved only at compile time; resolve a copy
            # here (against a clone, so that no join is added to the query itself)
            # to check its field and dimensions.
            distance = distance.resolve_expression(query.clone(), allow_joins=True)
        for index, known in enumerate(self.terms):
            if known.key == distance.key:
                return index
        self.terms.append(distance)
        return len(self.terms) - 1

    def order_keys_effective(self) -> list[tuple[int, bool, bool]]:
        return [
            (key.term, *key.effective(self.standard_ordering)) for key in self.order_keys
        ]


def plan_query(query: Query) -> DistancePlan | None:
    """The plan for *query*, or None when it mentions no distance."""
    if not _mentions_distance(query):
        return None
    if query.combinator:
        raise NotSupportedError("Distances cannot be used in union(), intersection() or difference().")
    if query.group_by is not None or any(
        getattr(annotation, "contains_aggregate", False)
        for annotation in query.annotations.values()
    ):
        raise NotSupportedError(
            "Distances cannot be combined with aggregation in annotate() "
            "(GROUP BY); aggregate the rows first or compute the distance separately."
        )
    plan = DistancePlan(standard_ordering=query.standard_ordering)
    for name, annotation in query.annotations.items():
        if contains_distance(annotation):
            plan.annotations[name] = plan.derived_for(annotation, query)
    plan.where_sql, plan.where_numpy = _split_where(query.where, plan, query)
    _plan_ordering(query, plan)
    plan.low, plan.high = query.low_mark, query.high_mark
    return plan


def _mentions_distance(query: Query) -> bool:
    return (
        any(contains_distance(annotation) for annotation in query.annotations.values())
        or any(_order_term(item, query) is not None for item in query.order_by)
        or contains_distance(query.where)
    )


def _order_term(item: Any, query: Query) -> tuple[Any, bool, bool | None, bool | None] | None:
    """(distance or expression over distances, descending, nulls_first, nulls_last) when *item* orders by one."""
    descending, nulls_first, nulls_last = False, None, None
    if isinstance(item, str):
        descending = item.startswith("-")
        item = query.annotations.get(item.removeprefix("-"))
    elif isinstance(item, OrderBy):
        descending = item.descending
        nulls_first, nulls_last = item.nulls_first, item.nulls_last
        item = item.expression
    if isinstance(item, F) and not isinstance(item, Distance):
        item = query.annotations.get(item.name)
    if isinstance(item, Ref):
        item = item.source
    if contains_distance(item):
        return item, descending, nulls_first, nulls_last
    return None


def _plan_ordering(query: Query, plan: DistancePlan) -> None:
    for item in query.order_by:
        term = _order_term(item, query)
        if term is None:
            plan.order_tail.append(item)
            continue
        if plan.order_tail:
            raise NotSupportedError(
                "order_by() must list distances before other fields: "
                f"{plan.order_tail[0]!r} comes before a distance. Filter on the "
                "other field instead, or order by the distance first."
            )
        distance, descending, nulls_first, nulls_last = term
        # PostgreSQL's rule, which pgvector users expect: NULL sorts as larger than
        # every distance (last ascending, first descending) unless told otherwise.
        if nulls_first is None and nulls_last is None:
            nulls_first = descending
        plan.order_keys.append(
            OrderKey(plan.derived_for(distance, query), descending, bool(nulls_first))
        )


# WHERE ----------------------------------------------------------------------


def _split_where(node: Any, plan: DistancePlan, query: Query) -> tuple[Any, Any]:
    """(the part SQL evaluates, the part numpy evaluates) of a where tree."""
    if not contains_distance(node):
        return node, None
    if isinstance(node, WhereNode) and node.connector == AND and not node.negated:
        sql_children, numpy_children = [], []
        for child in node.children:
            sql_part, numpy_part = _split_where(child, plan, query)
            if sql_part is not None:
                sql_children.append(sql_part)
            if numpy_part is not None:
                numpy_children.append(numpy_part)
        sql_node = WhereNode(sql_children, AND) if sql_children else None
        return sql_node, WhereNode(numpy_children, AND) if numpy_children else None
    _check_numpy_only(node, plan, query)
    return None, node


def _check_numpy_only(node: Any, plan: DistancePlan, query: Query) -> None:
    if isinstance(node, WhereNode):
        if node.connector not in (AND, OR):
            raise NotSupportedError(f"Distances cannot be combined with {node.connector}.")
        for child in node.children:
            _check_numpy_only(child, plan, query)
        return
    lhs = getattr(node, "lhs", None)
    if isinstance(lhs, Ref):
        lhs = lhs.source
    if not contains_distance(lhs) or getattr(node, "lookup_name", None) not in NUMERIC_LOOKUPS:
        raise NotSupportedError(
            "A condition on a distance can be combined with other conditions on "
            "distances by OR or NOT, but not with ordinary fields; "
            f"this one cannot be split: {node!r}. Use separate filter() calls (AND)."
        )
    if contains_distance(getattr(node, "rhs", None)):
        raise NotSupportedError("A distance cannot be compared with another distance.")
    plan.lookup_terms[id(node)] = plan.derived_for(lhs, query)


def _constant(value: Any) -> Any:
    if isinstance(value, Value):
        return value.value
    if hasattr(value, "resolve_expression"):
        raise NotSupportedError(
            f"A distance can only be compared with a constant, not with {value!r}."
        )
    return value


def evaluate(
    node: Any, values: list[np.ndarray], plan: DistancePlan
) -> tuple[np.ndarray, np.ndarray]:
    """(true, unknown) masks of a numpy-side where tree, in SQL's three-valued logic.

    ``values[i]`` holds term *i*'s distances for the rows at hand, NaN for NULL.
    """
    if isinstance(node, WhereNode):
        results = [evaluate(child, values, plan) for child in node.children]
        size = values[0].shape[0] if values else 0
        if node.connector == AND:
            true = np.logical_and.reduce([t for t, _ in results]) if results else np.ones(size, bool)
            false = np.logical_or.reduce([~t & ~u for t, u in results]) if results else np.zeros(size, bool)
        else:
            true = np.logical_or.reduce([t for t, _ in results]) if results else np.zeros(size, bool)
            false = np.logical_and.reduce([~t & ~u for t, u in results]) if results else np.ones(size, bool)
        unknown = ~true & ~false
        if node.negated:
            true = false
        return true, unknown
    column = values[plan.lookup_terms[id(node)]]
    null = np.isnan(column)
    name = node.lookup_name
    rhs = node.rhs
    if name == "isnull":
        return (null if _constant(rhs) else ~null), np.zeros_like(null)
    with np.errstate(invalid="ignore"):
        if name == "range":
            low, high = (_constant(bound) for bound in rhs)
            if low is None or high is None:
                # As SQL: BETWEEN a NULL bound is unknown, or false by the other bound.
                false = np.zeros_like(null)
                if low is not None:
                    false |= column < low
                if high is not None:
                    false |= column > high
                return np.zeros_like(null), ~false
            true = (column >= low) & (column <= high)
        elif name == "in":
            true = np.isin(column, [_constant(item) for item in rhs])
        else:
            constant = _constant(rhs)
            true = {
                "exact": np.equal,
                "lt": np.less,
                "lte": np.less_equal,
                "gt": np.greater,
                "gte": np.greater_equal,
            }[name](column, constant)
    return true & ~null, null
