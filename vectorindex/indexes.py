"""``VectorIndex``: the declaration of an approximate nearest-neighbour index.

Declared like any other index, in ``Meta.indexes``::

    class Meta:
        indexes = [VectorIndex(fields=["embedding"], name="item_embedding", distance="cosine")]

The migration that adds it changes nothing in the model's table (its DDL is a
no-op statement naming the index) and, at the end of ``migrate``, registers
the index in the app's index-state table; the migration that removes it
deletes what it stored. Its contents —
heads, posting lists, versions, head WAL and snapshots — live in the app's own
tables (:mod:`vectorindex.models`) and are filled by ``manage.py vectorindex
build`` and then kept current by every write.

Tuning values are checked by system checks (``vectorindex.E1xx``) and again when
the index is used, so that a typo in one option does not stop a project from
loading its models.
"""

from __future__ import annotations

from typing import Any

from django.db.backends.ddl_references import Statement
from django.db.models import Index

from .engine.postings import FORMATS

__all__ = ["DISTANCES", "OPCLASSES", "HnswIndex", "IvfflatIndex", "VectorIndex"]

# distance name -> the Distance expression's metric that the index serves.
DISTANCES = {"l2": "l2", "cosine": "cosine", "ip": "ip"}

# pgvector's operator classes -> the distance an index with one of them serves.
OPCLASSES = {
    "vector_l2_ops": "l2",
    "vector_ip_ops": "ip",
    "vector_cosine_ops": "cosine",
    "halfvec_l2_ops": "l2",
    "halfvec_ip_ops": "ip",
    "halfvec_cosine_ops": "cosine",
}
# pgvector's operator classes for distances this index does not serve, and the
# expression each orders by: queries by those are answered by the exact scan.
UNSERVED_OPCLASSES = {
    "vector_l1_ops": "L1Distance",
    "halfvec_l1_ops": "L1Distance",
    "sparsevec_l2_ops": "L2Distance on a SparseVectorField",
    "sparsevec_ip_ops": "MaxInnerProduct on a SparseVectorField",
    "sparsevec_cosine_ops": "CosineDistance on a SparseVectorField",
    "sparsevec_l1_ops": "L1Distance on a SparseVectorField",
    "bit_hamming_ops": "HammingDistance",
    "bit_jaccard_ops": "JaccardDistance",
}

# name: (default, kind, low, high) — kind "int" or "float"; bounds inclusive,
# except that a float's low bound of 0.0 for head_fraction is exclusive. Kind
# "choice": *low* holds the allowed values.
TUNING: dict[str, tuple[Any, str, Any, Any]] = {
    "head_fraction": (0.04, "float", 0.0, 1.0),
    "replicas": (3, "int", 1, 8),
    "replica_epsilon": (0.25, "float", 0.0, 10.0),
    "posting_limit": (200, "int", 16, 100_000),
    "merge_below": (8, "int", 0, 100_000),
    "defragment_rows": (32, "int", 2, 10_000),
    # None: what the calibration for ``recall`` found (index/maintenance/calibrating.py).
    "probes": (None, "int", 1, 10_000),
    "recall": (0.95, "float", 0.1, 1.0),
    "probe_epsilon": (2.0, "float", 0.0, 1_000.0),
    "m": (16, "int", 2, 128),
    "ef_construction": (200, "int", 10, 4_000),
    "payload": ("int8", "choice", FORMATS, None),
    "rerank": (4, "int", 0, 10_000),
}


class VectorIndex(Index):
    """An approximate nearest-neighbour index over one ``VectorField``.

    ``distance`` is the distance it answers: ``"l2"`` (``L2Distance``),
    ``"cosine"`` (``CosineDistance``) or ``"ip"`` (``MaxInnerProduct``); or,
    as pgvector declares it, ``opclasses=["vector_cosine_ops"]`` (see
    :data:`OPCLASSES`), or the field as an expression,
    ``OpClass(F("embedding"), name="vector_cosine_ops")``, a ``Cast`` of it
    included. The tuning options are described in the README; their defaults
    suit most data.
    """

    suffix = "vec"
    # What migrations write for the class.
    path = "vectorindex.VectorIndex"

    def __init__(
        self,
        *expressions: Any,
        fields: Any = (),
        name: str | None = None,
        distance: str | None = None,
        opclasses: Any = (),
        **tuning: Any,
    ) -> None:
        unknown = sorted(set(tuning) - set(TUNING))
        if unknown:
            raise TypeError(
                f"{type(self).__name__} got unknown option(s) {', '.join(unknown)}; "
                f"the options are distance, opclasses, {', '.join(TUNING)}."
            )
        if not isinstance(opclasses, (list, tuple)):
            raise ValueError(f"{type(self).__name__}.opclasses must be a list or tuple.")
        # As given, for deconstruct(): a migration writes the declaration as the model has it.
        self.given_expressions = expressions
        self.given_opclasses = list(opclasses)
        if expressions:
            if fields:
                raise ValueError(f"{type(self).__name__} takes fields= or an expression, not both.")
            if opclasses:
                raise ValueError(
                    f"{type(self).__name__}.opclasses cannot be used with an expression; "
                    "name the operator class in OpClass(expression, name=...) instead."
                )
            fields, opclasses = zip(*(_field_and_opclass(self, e) for e in expressions), strict=True)
            opclasses = [o for o in opclasses if o is not None]
        if opclasses and len(opclasses) != len(fields):
            raise ValueError(f"{type(self).__name__}.fields and opclasses must have the same number of elements.")
        self.opclass = opclasses[0] if opclasses else None
        served = OPCLASSES.get(self.opclass)
        if distance is None:
            distance = served or "l2"
        elif served is not None and served != distance:
            raise ValueError(
                f"{type(self).__name__}(distance={distance!r}) disagrees with its operator class "
                f"{self.opclass!r}, which orders by the {served} distance; give one of the two."
            )
        self.distance = distance
        self.tuning = {key: tuning[key] for key in TUNING if key in tuning and tuning[key] is not None}
        super().__init__(fields=list(fields), name=name)

    @property
    def options(self) -> dict[str, Any]:
        """Every tuning option, defaults filled in."""
        return {key: self.tuning.get(key, self.default(key)) for key in TUNING}

    def default(self, key: str) -> Any:
        """Option *key*'s value when it is not given.

        merge_below's follows posting_limit: 8, or a quarter of posting_limit
        where that is less, so that every posting_limit is valid on its own
        (see :meth:`_balance_problems`).
        """
        default = TUNING[key][0]
        if key == "merge_below":
            limit = self.tuning.get("posting_limit", TUNING["posting_limit"][0])
            if isinstance(limit, int) and not isinstance(limit, bool) and limit >= 0:
                return min(default, limit // 4)
        return default

    @property
    def field_name(self) -> str:
        return self.fields[0].removeprefix("-") if self.fields else ""

    def problems(self) -> list[str]:
        """What is wrong with this declaration's options, in words."""
        messages = []
        if len(self.fields) != 1 or self.fields[0].startswith("-"):
            messages.append("VectorIndex.fields must name exactly one VectorField, with no ordering.")
        if self.opclass is not None and self.opclass not in OPCLASSES:
            messages.append(_opclass_problem(self.opclass))
        elif self.distance not in DISTANCES:
            messages.append(
                f"VectorIndex.distance must be one of {', '.join(repr(d) for d in DISTANCES)}, "
                f"got {self.distance!r}."
            )
        invalid: set[str] = set()
        for key, value in self.tuning.items():
            _default, kind, low, high = TUNING[key]
            if kind == "choice":
                ok = value in low
                wanted = f"one of {', '.join(repr(v) for v in low)}"
            elif kind == "int":
                ok = isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
                wanted = f"an integer from {low} to {high}"
            else:
                ok = isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high
                if key == "head_fraction":
                    ok = ok and value > 0
                    wanted = f"a number greater than 0 and at most {high}"
                else:
                    wanted = f"a number from {low} to {high}"
            if not ok:
                invalid.add(key)
                messages.append(f"VectorIndex.{key} must be {wanted}, got {value!r}.")
        if not invalid & {"posting_limit", "merge_below"}:
            messages.extend(self._balance_problems())
        return messages

    def _balance_problems(self) -> list[str]:
        """A merge_below that would make maintenance split and merge the same lists for ever.

        A split of n > posting_limit entries makes K = ⌈n / (posting_limit / 2)⌉
        ≥ 3 parts: posting_limit / 3 entries or more on average, at most
        posting_limit / 2. A part below merge_below is merged back, and a merge
        adds fewer than merge_below entries to its neighbours. At most a
        quarter of posting_limit, merge_below is below the average part (a
        split balances its parts to hold from merge_below to posting_limit −
        merge_below entries), and an average part that takes a merge (½ + ¼
        of the limit) stays under the limit. Above it, parts too small to keep
        are the rule, and merging each one splits a neighbour again.
        """
        limit, below = self.options["posting_limit"], self.options["merge_below"]
        if below <= limit // 4:
            return []
        return [
            f"VectorIndex.merge_below must be at most a quarter of posting_limit ({limit // 4} for "
            f"posting_limit {limit}), got {below}: maintenance would merge a split's parts back and "
            "split a merge's result again."
        ]

    def deconstruct(self) -> tuple[str, tuple, dict]:
        kwargs: dict[str, Any] = {"name": self.name}
        if not self.given_expressions:
            kwargs["fields"] = self.fields
        if self.given_opclasses:
            kwargs["opclasses"] = self.given_opclasses
        if self.distance != OPCLASSES.get(self.opclass, "l2"):
            kwargs["distance"] = self.distance
        for key, value in self.tuning.items():
            if value != self.default(key):
                kwargs[key] = value
        return self.path, self.given_expressions, kwargs

    # The DDL: a statement that does nothing, naming the index for readers of
    # sqlmigrate. The index's contents live in vectorindex's own tables. A
    # B-tree index on the primary key was made here once: MariaDB then chose
    # it over the clustered primary key for `pk IN (...)`, two page reads a
    # row instead of one, and every insert paid for one more B-tree.
    #
    # What the index stored goes with it: RemoveIndex deletes it at the end
    # of the migration, unless the migration adds the index back (a change of
    # options, or a rename), which then keeps it (vectorindex.index.schema).

    def create_sql(self, model: Any, schema_editor: Any, using: str = "", **kwargs: Any) -> Any:
        from .index.schema import adopt

        adopt(self, model, schema_editor)
        return self._noop(model, "kept in vectorindex's tables")

    def remove_sql(self, model: Any, schema_editor: Any, **kwargs: Any) -> Any:
        from .index.schema import defer_drop

        defer_drop(self, model, schema_editor)
        return self._noop(model, "removed; what it stored goes at the end of the migration, unless the migration adds it back")

    def _noop(self, model: Any, what: str) -> Statement:
        return Statement(
            "SELECT 1 /* VectorIndex %(name)s on %(table)s: %(what)s */",
            name=self.name, table=model._meta.db_table, what=what,
        )


class HnswIndex(VectorIndex):
    """pgvector's ``HnswIndex``, declaring this app's index: a change of import for pgvector users.

    ``m`` and ``ef_construction`` build the in-memory index over the heads
    (the HNSW graph this index keeps), as they build pgvector's graph over
    every row; ``opclasses`` (or ``OpClass(...)``) says the distance. A
    ``halfvec_*_ops`` class serves the same distance: the posting lists
    keep the ``payload`` format (int8 by default, smaller than half floats).
    """

    suffix = "hnsw"
    path = "vectorindex.HnswIndex"


class IvfflatIndex(VectorIndex):
    """pgvector's ``IvfflatIndex``, declaring this app's index.

    ``lists`` is accepted and kept in migrations, and not used: this index
    sizes its lists from its rows as they come and go (``head_fraction``,
    ``posting_limit``), and the system check ``vectorindex.W007`` says so.
    """

    suffix = "ivfflat"
    path = "vectorindex.IvfflatIndex"

    def __init__(self, *expressions: Any, lists: int | None = None, **kwargs: Any) -> None:
        self.lists = lists
        super().__init__(*expressions, **kwargs)

    def deconstruct(self) -> tuple[str, tuple, dict]:
        path, args, kwargs = super().deconstruct()
        if self.lists is not None:
            kwargs["lists"] = self.lists
        return path, args, kwargs


def _field_and_opclass(index: VectorIndex, expression: Any) -> tuple[str, str | None]:
    """The field an index expression names, and the operator class it gives (None if none).

    The expressions pgvector's documentation declares: ``OpClass(F(field),
    name=...)``, ``OpClass(Cast(field, HalfVectorField(...)), name=...)``, a
    bare field or ``Cast`` of one.
    """
    from django.contrib.postgres.indexes import OpClass
    from django.db.models import F
    from django.db.models.functions import Cast

    opclass = None
    inner = expression
    if isinstance(inner, OpClass):
        opclass = inner.extra.get("name")
        inner = inner.get_source_expressions()[0]
    if isinstance(inner, Cast):
        inner = inner.get_source_expressions()[0]
    if isinstance(inner, str):
        inner = F(inner)
    if type(inner) is not F:
        raise ValueError(
            f"{type(index).__name__} cannot index {expression!r}: it indexes one vector field, given as "
            "fields=[name], a field name, OpClass(F(name), name=operator class), or a Cast of the field."
        )
    return inner.name, opclass


def _opclass_problem(opclass: str) -> str:
    served = ", ".join(OPCLASSES)
    unserved = UNSERVED_OPCLASSES.get(opclass)
    if unserved is not None:
        return (
            f"the operator class {opclass!r} orders by {unserved}, which this index does not serve "
            f"(it serves {served}); remove the index: {unserved} queries are answered by the exact scan."
        )
    return f"the operator class {opclass!r} is not one this index knows; it serves {served}."
