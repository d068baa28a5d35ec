"""The Streamed model's index, which maintenance has work on: helpers its tests share."""

import io
import json

import numpy as np
from django.core.management import call_command

from tests.testapp.models import Streamed
from vectorindex import L2Distance
from vectorindex.index.registry import get_declared
from vectorindex.index.runtime import runtime

INDEX = "streamed_embedding"  # posting_limit=64, merge_below=4, defragment_rows=8


def declared():
    return get_declared(INDEX)


def sizes():
    storage, _ = runtime(declared(), "default").open()
    alive = storage.alive_head_ids()
    return {h: n for h, (n, _rows) in storage.posting_sizes().items() if h in alive}


def found_share(rows=None, **approximate) -> float:
    """The share of rows (or of these) that are the first answer for their own vector."""
    rows = rows if rows is not None else list(Streamed.objects.values_list("pk", "embedding"))
    search = Streamed.objects.approximate(**approximate)
    return sum(search.order_by(L2Distance("embedding", v)).first().pk == pk for pk, v in rows) / len(rows)


def all_found(rows=None, **approximate) -> bool:
    """Every row (or these) is the first answer when searching for its own vector."""
    return found_share(rows, **approximate) == 1.0


def top10(queries):
    return [[p.pk for p in Streamed.objects.order_by(L2Distance("embedding", q))[:10]] for q in queries]


def exact10(queries):
    return [[p.pk for p in Streamed.objects.order_by(L2Distance("embedding", q)).exact()[:10]] for q in queries]


def crowd_one_head(count=150, seed=9):
    """Insert vectors right on top of one head, so that its list overflows."""
    storage, state = runtime(declared(), "default").open()
    head = runtime(declared(), "default").current(storage, state)
    target = min(head.alive)
    centre = head.vectors(np.array([target]))[0]
    noise = np.random.default_rng(seed).normal(scale=0.05, size=(count, 16)).astype(np.float32)
    Streamed.objects.bulk_create(Streamed(embedding=centre + n) for n in noise)
    return target


def status():
    out = io.StringIO()
    call_command("vectorindex", "status", INDEX, "--json", stdout=out)
    return json.loads(out.getvalue())
