"""dumpdata / loaddata round-trip vectors exactly, in JSON and XML."""

import io
import json

import numpy as np
import pytest
from django.core import serializers
from django.core.management import call_command

from tests.testapp.models import Document


@pytest.mark.django_db
@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_round_trip(fmt, tmp_path):
    rng = np.random.default_rng(3)
    vectors = [rng.normal(size=3).astype(np.float32) * 10.0 ** e for e in (-30, 0, 30)]
    originals = [Document.objects.create(title=f"d{i}", embedding=v) for i, v in enumerate(vectors)]
    Document.objects.create(title="none")
    out = io.StringIO()
    call_command("dumpdata", "testapp.Document", format=fmt, stdout=out)
    path = tmp_path / f"documents.{fmt}"
    path.write_text(out.getvalue())
    Document.objects.all().delete()
    call_command("loaddata", str(path), verbosity=0)
    loaded = {d.title: d for d in Document.objects.all()}
    for original, vector in zip(originals, vectors):
        np.testing.assert_array_equal(loaded[original.title].embedding, vector)  # bit-exact
    assert loaded["none"].embedding is None


@pytest.mark.django_db
def test_json_shows_readable_text():
    Document.objects.create(title="x", embedding=[0.1, 2, -3.5])
    [record] = json.loads(serializers.serialize("json", Document.objects.all()))
    assert record["fields"]["embedding"] == "[0.1, 2.0, -3.5]"
    assert record["fields"]["summary_embedding"] is None


@pytest.mark.django_db
def test_loading_a_bad_vector_fails_and_writes_nothing(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([
        {"model": "testapp.document", "pk": 1, "fields": {"title": "ok", "embedding": "[1, 2, 3]"}},
        {"model": "testapp.document", "pk": 2, "fields": {"title": "bad", "embedding": "[1, 2]"}},
    ]))
    with pytest.raises(Exception, match="embedding: expected 3 dimensions, got 2"):
        call_command("loaddata", str(path), verbosity=0)
    assert Document.objects.count() == 0
