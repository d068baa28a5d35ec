"""``manage.py vectorindex``: what each action prints, its options in either place, its errors."""

import io
import json
import re

import pytest
from django.core.management import CommandError, call_command
from django.db import OperationalError, connection

from tests.indexing import build, clustered
from tests.testapp.models import Point, Streamed
from vectorindex.index import recovery
from vectorindex.index.registry import declared_indexes, get_declared
from vectorindex.index.runtime import runtime
from vectorindex.management.commands.vectorindex import ACTIONS, Command
from vectorindex.models import Head, IndexState, Posting, Snapshot, Version


def command(*args, **options):
    """(stdout, stderr) of ``vectorindex ARGS``."""
    out, err = io.StringIO(), io.StringIO()
    call_command("vectorindex", *args, stdout=out, stderr=err, **options)
    return out.getvalue(), err.getvalue()


def from_argv(*argv):
    """``manage.py vectorindex ARGV --skip-checks`` as the command line runs it: (stdout, stderr, exit code)."""
    out, err = io.StringIO(), io.StringIO()
    try:
        Command(stdout=out, stderr=err).run_from_argv(["manage.py", "vectorindex", *argv, "--skip-checks"])
    except SystemExit as exit:
        return out.getvalue(), err.getvalue(), exit.code
    return out.getvalue(), err.getvalue(), 0


@pytest.fixture
def points(db):
    Point.objects.bulk_create(Point(embedding=v) for v in clustered(600))


@pytest.fixture
def built(points):
    build("point_embedding")


def as_leftover(name, new_name):
    """Make index *name*'s contents look like those of an index that no model declares any more."""
    IndexState.objects.filter(name=name).update(name=new_name)
    state = IndexState.objects.get(name=new_name)
    postings = [count for count in Posting.objects.filter(index_id=state.pk).values_list("count", flat=True)]
    snapshot = Snapshot.objects.get(index=state)
    return (
        f"{Head.objects.filter(index=state).count()} heads, {sum(postings):,} posting entries in {len(postings)} rows, "
        f"{Version.objects.filter(index_id=state.pk).count()} versions, 0 WAL entries, 1 snapshot ({snapshot.size:,} bytes)"
    )


# status ------------------------------------------------------------------------------


def test_status_with_no_name_lists_every_index_and_what_removed_ones_left(built):
    sizes = as_leftover("point_embedding", "old_points")
    out, _err = command("status")
    lines = out.splitlines()
    titles = [line.split(" (")[0] for line in lines if not line.startswith(" ") and "(" in line]
    assert titles[: len(declared_indexes())] == sorted(declared_indexes())
    assert (
        "point_embedding (testapp.Point.embedding, l2, 16-d): not built: 600 rows with vectors; "
        "run `manage.py vectorindex build point_embedding`"
    ) in lines
    assert lines[-3:] == [
        "Left behind by removed indexes (no model declares them):",
        f"  old_points (was testapp.Point.embedding): {sizes}",
        "    `manage.py vectorindex drop old_points` deletes it",
    ]
    assert command("status", "--all")[0] == out
    # Named, an index is shown alone; a leftover's name says how to delete it.
    assert command("status", "streamed_embedding")[0] == (
        "streamed_embedding (testapp.Streamed.embedding, l2, 16-d): not built: no rows with vectors yet; "
        "run `manage.py vectorindex build streamed_embedding`\n"
    )
    with pytest.raises(CommandError, match=r"'old_points' is what a removed index left behind: `manage.py vectorindex drop old_points` deletes it"):
        command("status", "old_points")


def test_status_json_lists_every_index_and_the_leftovers(built):
    as_leftover("point_embedding", "old_points")
    document = json.loads(command("status", "--json")[0])
    assert [report["name"] for report in document["indexes"]] == sorted(declared_indexes())
    [point] = [report for report in document["indexes"] if report["name"] == "point_embedding"]
    assert (point["status"], point["rows_with_vectors"]) == ("empty", 600)
    [left] = document["leftovers"]
    assert (left["name"], left["model"], left["versions"], left["wal_entries"]) == ("old_points", "testapp.Point", 600, 0)
    assert json.loads(command("status", "streamed_embedding", "--json")[0])["name"] == "streamed_embedding"


@pytest.mark.parametrize("action", [name for name, action in ACTIONS.items() if action.declared])
def test_names_given_with_all_are_refused_before_anything_runs(action):
    """`status --all NAME --json` printed the first declared index, `build --all NAME` built every one."""
    for argv, names in [
        (["--all", "point_embedding"], "point_embedding"),
        (["streamed_embedding", "point_embedding", "--all"], "streamed_embedding, point_embedding"),
    ]:
        with pytest.raises(CommandError) as refused:  # no database access: it is refused before anything runs
            command(action, *argv, *(["--json"] if action == "status" else []))
        assert str(refused.value) == f"Name indexes or give --all, not both (--all with {names})."
    _out, err, code = from_argv("status", "--all", "point_embedding", "--json")
    assert (err, code) == ("CommandError: Name indexes or give --all, not both (--all with point_embedding).\n", 1)


def test_status_rounds_its_numbers(built):
    out, _err = command("status", "point_embedding", "--json")
    report = json.loads(out)
    long_floats = re.findall(r"\d+\.\d{5,}", out)
    assert not long_floats, long_floats
    assert all(value == round(value, 1) for value in report["posting_sizes"].values())
    assert report["snapshot_age_s"] == round(report["snapshot_age_s"], 1)
    assert report["head_index_share"] == round(report["head_index_share"], 4)
    text, _err = command("status", "point_embedding")
    # Recalls are shares, to their third decimal at most; every other number is rounded further.
    assert not re.findall(r"(?:recall|recall@10|target) \d\.\d{4,}", text), text
    assert not re.findall(r"\d+\.\d{2,}", re.sub(r"(?:recall|recall@10|target) \d\.\d+", "", text)), text
    assert re.search(r"; snapshot [\d,]+ bytes, \d+ s old\n", text)


def test_status_weighs_the_posting_data_against_the_buffer_pool(built, monkeypatch):
    from tests.indexing import pretend_buffer_pool
    from vectorindex.wording import in_bytes

    report = json.loads(command("status", "point_embedding", "--json")[0])
    index_id = IndexState.objects.get(name="point_embedding").pk
    payloads = sum(len(bytes(p)) for p in Posting.objects.filter(index_id=index_id).values_list("payload", flat=True))
    assert report["posting_bytes"] == payloads
    assert report["buffer_pool_warning"] is None
    text = command("status", "point_embedding")[0]
    if connection.vendor == "sqlite":
        assert report["buffer_pool"] is None
        assert (
            f"  posting data   {in_bytes(payloads)}; no buffer pool: the operating system caches the database's pages "
            "in free memory\n"
        ) in text
    else:
        assert report["buffer_pool"]["name"] == "InnoDB buffer pool"
        assert f"  posting data   {in_bytes(payloads)}; InnoDB buffer pool {in_bytes(report['buffer_pool']['size'])}\n" in text
    assert "warning" not in text

    pretend_buffer_pool(monkeypatch, payloads // 2)
    report = json.loads(command("status", "point_embedding", "--json")[0])
    assert report["buffer_pool"] == {"name": "InnoDB buffer pool", "setting": "innodb_buffer_pool_size", "size": payloads // 2}
    warning = (
        f"posting data {in_bytes(payloads)} is 2.0× the InnoDB buffer pool ({in_bytes(payloads // 2)}): queries will "
        "read lists from disk; set innodb_buffer_pool_size to at least 128 MiB (see README, Deployment)"
    )
    assert report["buffer_pool_warning"] == warning
    assert command("status", "point_embedding")[0].endswith(
        f"  posting data   {in_bytes(payloads)}; InnoDB buffer pool {in_bytes(payloads // 2)}\n  warning        {warning}\n"
    )


def test_counts_of_one_are_singular(db):
    Point.objects.create(embedding=clustered(1)[0])
    out = build("point_embedding")
    assert re.fullmatch(r"point_embedding: 1 vector, 1 head, 1 posting entry in \d+\.\d s \([\d,]+ vectors/s\)\n", out)
    assert command("snapshot", "point_embedding")[0] == (
        f"point_embedding: snapshot at LSN 0, {Snapshot.objects.get().size:,} bytes in 1 chunk\n"
    )
    assert command("recover", "point_embedding")[0] == "point_embedding: head index from the snapshot, 1 head at LSN 0\n"
    status, _err = command("status", "point_embedding")
    assert "  vectors        1 (0 deleted versions)\n" in status
    assert "  posting lists  1, 1 entry; " in status
    assert "  WAL            0 entries after LSN 0; " in status


@pytest.mark.django_db(transaction=True)
def test_build_and_status_agree_on_heads_and_entries(monkeypatch):
    """Lists the build leaves over the limit are split when it commits: its report counts after that."""
    from vectorindex.index import build as building

    monkeypatch.setattr(building, "BALANCE_ROUNDS", 0)  # every list over the limit is left to split jobs
    Streamed.objects.bulk_create(Streamed(embedding=v) for v in clustered(3000))
    out = build("streamed_embedding")
    report = json.loads(command("status", "streamed_embedding", "--json")[0])
    assert report["retired_heads"] > 0  # split jobs ran after the build
    assert f" {report['heads']:,} heads, {report['posting_entries']:,} posting entries in " in out


# an index not built ------------------------------------------------------------------


def test_an_index_not_built_says_so_everywhere(points):
    out, _err = command("status", "point_embedding")
    assert out == (
        "point_embedding (testapp.Point.embedding, l2, 16-d): not built: 600 rows with vectors; "
        "run `manage.py vectorindex build point_embedding`\n"
    )
    assert command("maintain", "point_embedding")[0] == (
        "point_embedding: not built, nothing to maintain; `manage.py vectorindex build point_embedding` builds it\n"
    )
    with pytest.raises(CommandError, match=r"^point_embedding: point_embedding is not built; run `manage.py vectorindex build point_embedding`\.$"):
        command("check", "point_embedding")
    assert IndexState.objects.get(name="point_embedding").get_status_display() == "not built"  # the admin's column


# check -------------------------------------------------------------------------------


def test_a_violation_says_what_fixes_it(built):
    storage, _state = runtime(get_declared("point_embedding"), "default").open()
    point = Point.objects.order_by("pk")[5]
    with connection.cursor() as cursor:  # a row's version moves on, behind the index's back
        cursor.execute(
            "UPDATE vectorindex_version SET version = version + 7 WHERE index_id = %s AND vector_id = %s",
            [storage.index_id, point.pk],
        )
    with pytest.raises(CommandError) as raised:
        command("check", "point_embedding")
    assert str(raised.value) == "Invariants violated in: point_embedding"
    err = io.StringIO()
    with pytest.raises(CommandError):
        call_command("vectorindex", "check", "point_embedding", stdout=io.StringIO(), stderr=err)
    assert err.getvalue() == (
        f"point_embedding: VIOLATION: 1 row is in no posting list of an alive head at its current version (e.g. [{point.pk}])\n"
        "point_embedding: fix: `manage.py vectorindex repair point_embedding` indexes the rows the check names "
        "and marks deleted the versions that belong to no row (`manage.py vectorindex build point_embedding` "
        "rebuilds the whole index)\n"
    )


def test_a_head_index_violation_says_recover(built):
    head = Head.objects.filter(alive=True).order_by("pk").first()
    Head.objects.filter(pk=head.pk).update(alive=False)  # retired in the table, not in the head index
    err = io.StringIO()
    with pytest.raises(CommandError):
        call_command("vectorindex", "check", "point_embedding", stdout=io.StringIO(), stderr=err)
    lines = err.getvalue().splitlines()
    assert f"point_embedding: VIOLATION: 1 head in the head index is retired or unknown (e.g. [{head.pk}])" in lines
    assert "point_embedding: fix: `manage.py vectorindex recover point_embedding` rebuilds the head index from the heads table" in lines


# drop --------------------------------------------------------------------------------


def test_drop_deletes_a_leftover_after_asking(built, monkeypatch):
    sizes = as_leftover("point_embedding", "old_points")
    asked = []
    monkeypatch.setattr("builtins.input", lambda prompt: asked.append(prompt) or "no")
    assert command("drop", "old_points")[0] == "old_points: drop cancelled.\n"
    assert asked == [
        "You have requested to drop the vector index 'old_points' (testapp.Point.embedding) in the 'default' database:\n"
        f"{sizes}.\nThis will IRREVERSIBLY DESTROY them.\nAre you sure you want to do this?\n\n"
        "    Type 'yes' to continue, or 'no' to cancel: "
    ]
    assert IndexState.objects.filter(name="old_points").exists()
    monkeypatch.setattr("builtins.input", lambda prompt: "yes")
    assert command("drop", "old_points")[0] == f"old_points: dropped {sizes}\n"
    assert not IndexState.objects.filter(name="old_points").exists()
    assert not Head.objects.exists() and not Posting.objects.exists() and not Version.objects.exists()
    assert not Snapshot.objects.exists()
    assert "Left behind" not in command("status")[0]


def test_drop_without_asking(built, monkeypatch):
    as_leftover("point_embedding", "old_points")
    monkeypatch.setattr("builtins.input", lambda prompt: pytest.fail("asked"))
    assert command("drop", "old_points", interactive=False)[0].startswith("old_points: dropped ")
    IndexState.objects.filter(name="streamed_embedding").update(name="old_stream")  # never built
    assert command("drop", "--no-input", "old_stream")[0] == (
        "old_stream: dropped 0 heads, 0 posting entries in 0 rows, 0 versions, 0 WAL entries, 0 snapshots (0 bytes)\n"
    )
    assert not IndexState.objects.filter(name__startswith="old_").exists()


def test_drop_refuses_a_declared_index_unless_forced(built):
    with pytest.raises(CommandError, match=(
        r"^point_embedding is declared by testapp.Point: `manage.py vectorindex build point_embedding` "
        r"replaces its contents\. To delete them anyway \(the index is then not built\), add --force\.$"
    )):
        command("drop", "point_embedding", "--no-input")
    assert Head.objects.exists()
    assert command("drop", "point_embedding", "--no-input", "--force")[0].startswith("point_embedding: dropped ")
    assert not Head.objects.exists()
    assert command("status", "point_embedding")[0].startswith(
        "point_embedding (testapp.Point.embedding, l2, 16-d): not built: 600 rows with vectors;"
    )
    build("point_embedding")
    assert "point_embedding: ok" in command("check", "point_embedding")[0]


def test_drop_names_what_it_could_drop(built):
    with pytest.raises(CommandError, match=r"^Nothing is stored for an index named 'nope' \(no removed index left anything behind\)\.$"):
        command("drop", "nope", "--no-input")
    as_leftover("point_embedding", "old_points")
    with pytest.raises(CommandError, match=r"^Name the index to drop \(left by removed indexes: old_points\)\.$"):
        command("drop")


# options after the action word; errors -------------------------------------------------------


@pytest.mark.django_db(transaction=True)  # the command line closes the connections when it ends
def test_djangos_options_work_after_the_action_word(settings):
    settings.VECTORINDEX = {"JOBS": "manual"}  # the split waits for `maintain`
    Point.objects.bulk_create(Point(embedding=v) for v in clustered(600))
    build("point_embedding")
    Point.objects.bulk_create(Point(embedding=v) for v in clustered(400, seed=5) + 30)  # far away: one list overflows
    out, err, code = from_argv("maintain", "point_embedding", "-v", "2", "--database", "default")
    assert code == 0, err
    assert re.search(r"^  split: head \d+: [\d,]+ live entries into \d+ new heads$", out, re.MULTILINE), out
    assert from_argv("-v", "2", "--database", "default", "maintain", "point_embedding")[0].endswith(
        "point_embedding: nothing to do\n"
    )
    out, err, code = from_argv("status", "nope")
    assert (out, code) == ("", 1)
    assert err.startswith("CommandError: No VectorIndex named 'nope'; declared: ")
    with pytest.raises(CommandError, match="No VectorIndex named 'nope'"):  # --traceback: raised, for the traceback
        from_argv("status", "nope", "--traceback")
    with pytest.raises(CommandError, match="No VectorIndex named 'nope'"):
        from_argv("--traceback", "status", "nope")


@pytest.mark.django_db(transaction=True)
def test_unexpected_errors_name_the_index_and_the_error(monkeypatch):
    real = recovery.status

    def status(declared, using):
        if declared.name == "point_embedding":
            raise OperationalError(2013, "Lost connection to server during query")
        return real(declared, using)

    monkeypatch.setattr(recovery, "status", status)
    out, err, code = from_argv("status")
    assert code == 1
    assert "streamed_embedding (testapp.Streamed.embedding, l2, 16-d): not built" in out  # the others are shown
    assert err == "CommandError: point_embedding: OperationalError: (2013, 'Lost connection to server during query')\n"
    with pytest.raises(CommandError) as raised:
        from_argv("status", "point_embedding", "--traceback")
    assert str(raised.value) == "point_embedding: OperationalError: (2013, 'Lost connection to server during query')"
    assert isinstance(raised.value.__cause__, OperationalError)  # Django prints its traceback too

    monkeypatch.setattr(recovery, "take_snapshot", lambda declared, using: [][0])  # a bug, deep down
    with pytest.raises(CommandError, match=r"^point_embedding: IndexError: list index out of range$"):
        command("snapshot", "point_embedding")
