"""Splitting a Django query into what SQL answers and what numpy answers.

A query that mentions a distance (in ``annotate``, ``alias``, ``filter`` or
``order_by``) is taken apart into a :class:`DistancePlan` of *terms*:

* the *distances* it needs, each computed once however often it is mentioned;
* the terms derived from them — ``+ - * /`` with numbers, fields and other
  distances, ``Coalesce()`` (:class:`Derived`), ``Case()``/``When()``
  (:class:`Cases`) — and the ordinary expressions among their operands and
  conditions, which SQL computes as extra columns of the scan (:class:`Column`);
* the part of the WHERE clause that SQL can evaluate, and the part — lookups on
  distances, combined with AND/OR/NOT — that numpy evaluates, in SQL's
  three-valued logic;
* the ordering: distance terms first, then any ordinary terms that break ties;
* the slice.

What cannot be split that way (a distance OR'ed with an ordinary condition, an
ordinary ordering term before a distance, a distance inside another kind of
expression) is refused with ``NotSupportedError`` instead of being answered wrongly.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import numpy as np
from django.core.exceptions import FieldError
from django.db import NotSupportedError
from django.db.models import (
    BooleanField,
    CharField,
    DecimalField,
    F,
    FloatField,
    IntegerField,
    OrderBy,
)
from django.db.models.expressions import (
    Case,
    CombinedExpression,
    ExpressionWrapper,
    Ref,
    Value,
    When,
)
from django.db.models.functions import Coalesce
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


# Fields whose values a Column term reads as numbers.
NUMERIC_FIELDS = (IntegerField, FloatField, DecimalField, BooleanField)
COALESCE = "coalesce"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, Decimal)) and not isinstance(value, bool)


# Arithmetic numpy does on distances (``1 - CosineDistance(...)``), by Django's connector.
ARITHMETIC: dict[str, Callable[[Any, Any], Any]] = {
    CombinedExpression.ADD: operator.add,
    CombinedExpression.SUB: operator.sub,
    CombinedExpression.MUL: operator.mul,
    CombinedExpression.DIV: operator.truediv,
}


def _kind(expression: Any) -> str:
    """How a term's values are handed back: "int", "bool" or "float", by the expression's output field."""
    try:
        output = expression.output_field
    except (FieldError, AttributeError):  # mixed types: SQL would give a number
        return "float"
    if isinstance(output, BooleanField):
        return "bool"
    return "int" if isinstance(output, IntegerField) else "float"


def returned(term: Any, value: float) -> Any:
    """A term's value for one row as Django would hand it back: None for NULL, else an int, bool or float."""
    if math.isnan(value):
        return None
    labels = getattr(term, "labels", None)
    if labels is not None:
        return labels[int(value)]
    kind = getattr(term, "kind", "float")
    return int(value) if kind == "int" else bool(value) if kind == "bool" else value


def _output(expression: Any) -> Any:
    try:
        return expression.output_field
    except FieldError:
        return CharField()


def _side(part: tuple[str, Any], values: list[np.ndarray]) -> Any:
    kind, item = part
    return values[item] if kind == "term" else item


@dataclass
class Derived:
    """A term computed from other terms and constants: ``1 - CosineDistance(...)``, ``Coalesce(d, 2.0)``.

    *parts* are (kind, item) pairs — ("term", index of a term before this
    one) or ("constant", number) — combined by *connector*: an arithmetic
    one (NULL in, NULL out, as SQL's arithmetic) or "coalesce" (the first
    that is not NULL).
    """

    connector: str
    parts: tuple[tuple[str, Any], ...]
    kind: str = "float"

    @property
    def key(self) -> tuple:
        return ("derived", self.connector, self.parts)

    def term_parts(self, plan: DistancePlan) -> list[int]:
        return [item for kind, item in self.parts if kind == "term"]

    def combine(self, values: list[np.ndarray], plan: DistancePlan) -> np.ndarray:
        sides = [_side(part, values) for part in self.parts]
        if self.connector == COALESCE:
            result = np.full(len(values[0]), np.nan)
            for side in sides:
                result = np.where(np.isnan(result), side, result)
            return result
        with np.errstate(divide="ignore", invalid="ignore"):
            result = ARITHMETIC[self.connector](*sides)
        return np.where(np.isfinite(result), result, np.nan)  # x / 0: NULL, where SQL would fail


@dataclass(eq=False)
class Cases:
    """``Case(When(condition, then=...), ..., default=...)`` over distances: the first matching branch's value.

    Each of *whens* is (the term SQL computes as 1 where the condition's
    ordinary part holds, or None; the distance part, a where tree numpy
    evaluates, or None; the branch's part). A condition matches where it is
    true, not where it is unknown, as in SQL.
    """

    whens: list[tuple[int | None, Any, tuple[str, Any]]]
    default: tuple[str, Any]
    kind: str = "float"
    # Branches of constants that are not numbers (Value("near")): each
    # branch's value is its position here, handed back as the constant.
    labels: list[Any] | None = None
    field: Any = None  # the Case's output field (the labels' field in SQL)

    @property
    def key(self) -> tuple:
        return ("cases", id(self))

    def term_parts(self, plan: DistancePlan) -> list[int]:
        parts = [self.default, *(part for _, _, part in self.whens)]
        found = [item for kind, item in parts if kind == "term"]
        for sql_term, node, _ in self.whens:
            found.extend([sql_term] if sql_term is not None else [])
            found.extend(plan.lookup_terms[key] for key in _lookups(node))
        return found

    def combine(self, values: list[np.ndarray], plan: DistancePlan) -> np.ndarray:
        size = len(values[0])
        result = np.full(size, np.nan)
        decided = np.zeros(size, bool)
        for sql_term, node, part in self.whens:
            match = ~decided
            if sql_term is not None:
                match &= values[sql_term] == 1
            if node is not None:
                match &= evaluate(node, values, plan)[0]
            result[match] = np.broadcast_to(_side(part, values), size)[match]
            decided |= match
        result[~decided] = np.broadcast_to(_side(self.default, values), size)[~decided]
        return result


@dataclass(eq=False)
class Column:
    """An ordinary expression inside one over distances (``F("weight")`` in ``d * F("weight")``): SQL computes it."""

    expression: Any
    kind: str = "float"

    @property
    def key(self) -> tuple:
        return ("column", id(self))

    def term_parts(self, plan: DistancePlan) -> list[int]:
        return []


def _lookups(node: Any) -> list[int]:
    """id() of each lookup of a numpy-side where tree (the keys of ``plan.lookup_terms``)."""
    if node is None:
        return []
    if isinstance(node, WhereNode):
        return [key for child in node.children for key in _lookups(child)]
    return [id(node)]


def term_values(plan: DistancePlan, distance_values: Callable[[Distance], np.ndarray]) -> list[np.ndarray]:
    """Each term's values: a distance's from *distance_values*, a derived term's from those before it."""
    values: list[np.ndarray] = []
    for term in plan.terms:
        values.append(term.combine(values, plan) if isinstance(term, (Derived, Cases)) else distance_values(term))
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
        return sorted({path for term in self.terms if isinstance(term, Distance) for path in term.field_paths})

    def derived_for(self, expression: Any, query: Query) -> int:
        """The term of an expression over distances (``1 - CosineDistance(...)``, ``Case``, ``Coalesce``).

        NotSupportedError for an expression numpy does not compute.
        """
        if isinstance(expression, ExpressionWrapper):
            expression = expression.expression
        if isinstance(expression, Ref):
            expression = expression.source
        if isinstance(expression, Distance):
            return self.term_for(expression, query)
        if isinstance(expression, CombinedExpression) and expression.connector in ARITHMETIC:
            parts = (self._part(expression.lhs, query), self._part(expression.rhs, query))
            return self._add(Derived(expression.connector, parts, _kind(expression)))
        if isinstance(expression, Coalesce):
            parts = tuple(self._part(side, query) for side in expression.get_source_expressions())
            return self._add(Derived(COALESCE, parts, _kind(expression)))
        if isinstance(expression, Case):
            results = [when.result for when in expression.cases] + [expression.default]
            labels = None
            if all(isinstance(result, Value) for result in results) and any(
                result.value is not None and not _is_number(result.value) for result in results
            ):  # Case(When(d__lt=0.5, then=Value("near")), default=Value("far"))
                labels = [result.value for result in results]
                parts = [("constant", np.nan if label is None else float(i)) for i, label in enumerate(labels)]
            else:
                parts = [self._part(result, query) for result in results]
            whens = [(*self._condition(when.condition, query), part) for when, part in zip(expression.cases, parts)]
            return self._add(Cases(whens, parts[-1], _kind(expression), labels, _output(expression)))
        raise NotSupportedError(
            f"{expression!r} puts a distance where only +, -, * and /, Coalesce() and Case()/When() over "
            "distances, numbers and fields are computed (1 - CosineDistance(...), say); compute the rest in Python."
        )

    def _part(self, side: Any, query: Query) -> tuple[str, Any]:
        """One operand of an expression over distances: ("term", index) or ("constant", number)."""
        if contains_distance(side):
            return ("term", self.derived_for(side, query))
        if isinstance(side, Value) and (side.value is None or _is_number(side.value)):
            return ("constant", np.nan if side.value is None else float(side.value))
        if not isinstance(getattr(side, "output_field", None), NUMERIC_FIELDS):
            raise NotSupportedError(
                f"{side!r}: a distance is combined here only with numbers, numeric fields and other distances, "
                "not with text, dates or other values; compute those in Python."
            )
        return ("term", self._add(Column(side, _kind(side))))

    def _condition(self, condition: Any, query: Query) -> tuple[int | None, Any]:
        """A When() condition as (the term SQL computes for its ordinary part, its part on distances)."""
        sql_part, numpy_part = _split_where(condition, self, query)
        sql_term = None
        if sql_part is not None:
            flag = Case(When(sql_part, then=Value(1)), default=Value(0), output_field=IntegerField())
            sql_term = self._add(Column(flag.resolve_expression(query, allow_joins=True), "int"))
        return sql_term, numpy_part

    def _add(self, term: Any) -> int:
        for index, known in enumerate(self.terms):
            if known.key == term.key:
                return index
        self.terms.append(term)
        return len(self.terms) - 1

    def term_for(self, distance: Distance, query: Query) -> int:
        if distance.outer_path is not None:
            raise NotSupportedError(
                f"{type(distance).__name__}('{distance.field_path}', OuterRef({distance.outer_path!r})) is "
                "a distance to the outer row: use it inside Subquery(...) or Exists(...)."
            )
        if not hasattr(distance, "dimensions"):
            # An order_by() term is resolved only at compile time; resolve a copy
            # here (against a clone, so that no join is added to the query itself)
            # to check its field and dimensions.
            distance = distance.resolve_expression(query.clone(), allow_joins=True)
        return self._add(distance)

    def order_keys_effective(self) -> list[tuple[int, bool, bool]]:
        return [
            (key.term, *key.effective(self.standard_ordering)) for key in self.order_keys
        ]


def _numeric_term(plan: DistancePlan, term: int, used_in: str) -> int:
    """*term*, refused where it is compared or ordered when its values are labels (``Value("near")``)."""
    if getattr(plan.terms[term], "labels", None) is not None:
        raise NotSupportedError(
            f"{used_in}() on a Case() of text values over distances: annotate it, and {used_in} on the "
            "distance itself (the values are computed in numpy, where only numbers are compared)."
        )
    return term


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
            OrderKey(_numeric_term(plan, plan.derived_for(distance, query), "order_by"), descending, bool(nulls_first))
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
    plan.lookup_terms[id(node)] = _numeric_term(plan, plan.derived_for(lhs, query), "filter")


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
