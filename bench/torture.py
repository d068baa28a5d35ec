"""Torture: writers, a maintenance worker and the database itself killed over and over; then every row checked.

Starts a MariaDB server of its own (another port, a scratch data directory),
builds ``bench_embedding`` on ``--rows`` rows of the data set with small
posting lists (so that splits, merges and reassigns never stop), and for
``--minutes`` runs ``--writers`` writer processes (inserts through
``bulk_create``, ``create`` and the deserializer's raw saves; vector updates
through ``save``, ``update`` and ``bulk_update``; deletes) and a Celery worker
with the maintenance scan every few seconds, while it kills (SIGKILL) a
writer, the worker or the database server every few seconds and starts it
again. Then, with nothing killed any more, it lets maintenance finish and
checks every row: each is queried by its own vector with every list read
(lost rows), the index's own check finds what a query with the default
settings would not reach (unreachable rows), and each deleted row's last
vector is queried (deleted rows returned).

    python -m bench torture --minutes 20 --writers 3

Needs Redis (the broker, ``--broker``) and MariaDB's binaries. Writers log
what they committed to files under ``--scratch``; the server's data directory
is there too, and is removed at the end unless ``--keep``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np

from .common import DEFAULT_DATASET, ROOT, dimensions

TUNING = ["posting_limit=40", "merge_below=4", "defragment_rows=8"]
NOISE = 0.02  # added to each dataset vector, so that no two rows hold the same vector


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--writers", type=int, default=3)
    parser.add_argument("--rows", type=int, default=3_000, help="rows the index is built on")
    parser.add_argument("--kill-every", type=float, default=4.0, help="seconds between kills, on average")
    parser.add_argument("--port", type=int, default=3391)
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/vectorindex-torture"))
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory (the server's data, the logs)")
    parser.add_argument("--target-rows", type=int, default=10_000, help="writers delete more than they insert above this")
    parser.add_argument("--sample", type=int, default=3_000, help="rows (and deleted rows) queried with every list read")
    parser.add_argument(
        "--verify-only", action="store_true",
        help="only the checks at the end, on the server a --keep run left (started again on its data)",
    )
    parser.add_argument("--writer", type=int, help=argparse.SUPPRESS)  # a writer process's number
    args = parser.parse_args()
    if args.writer is not None:
        return write(args)
    if args.verify_only:
        return verify_only(args)
    run(args)


# The server --------------------------------------------------------------------------


class Server:
    """A MariaDB server of this run's own, killed and started at will."""

    def __init__(self, scratch: Path, port: int) -> None:
        self.data = scratch / "mariadb"
        self.port = port
        self.socket = scratch / "mariadb.sock"
        self.process: subprocess.Popen | None = None
        self.log = scratch / "mariadb.log"

    def install(self) -> None:
        shutil.rmtree(self.data, ignore_errors=True)
        self.data.mkdir(parents=True)
        installer = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
        subprocess.run(
            [installer, "--no-defaults", f"--datadir={self.data}", "--user=root", "--auth-root-authentication-method=normal"],
            check=True, capture_output=True,
        )

    def start(self) -> None:
        binary = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
        self.process = subprocess.Popen(
            [binary, "--no-defaults", f"--datadir={self.data}", f"--port={self.port}", "--bind-address=127.0.0.1",
             f"--socket={self.socket}", f"--pid-file={self.data / 'pid'}", "--user=root", f"--log-error={self.log}",
             "--innodb-buffer-pool-size=256M", "--max-connections=200", "--skip-name-resolve"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        import MySQLdb

        for _ in range(300):
            try:
                MySQLdb.connect(host="127.0.0.1", port=self.port, user="root").close()
                return
            except MySQLdb.OperationalError:
                time.sleep(0.1)
        raise SystemExit(f"the MariaDB server on port {self.port} did not start; see {self.log}")

    def kill(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(60)
            self.process = None


# The run ------------------------------------------------------------------------------


def run(args) -> None:
    args.scratch.mkdir(parents=True, exist_ok=True)
    server = Server(args.scratch, args.port)
    server.install()
    server.start()
    import MySQLdb

    connection = MySQLdb.connect(host="127.0.0.1", port=args.port, user="root")
    connection.cursor().execute("CREATE DATABASE torture CHARACTER SET utf8mb4")
    connection.close()
    environment = environment_for(args)
    os.environ.update(environment)
    from .common import configure, setup, tune

    setup("unused.sqlite3", dimensions(args.dataset))
    tune(TUNING)
    configure(json.loads(environment["BENCH_SETTINGS"]))
    import redis

    redis.Redis.from_url(args.broker).flushdb()
    from vectorindex.index import build
    from vectorindex.index.registry import get_declared

    from .models import INDEX, Row

    base = np.load(args.dataset / "base.f16.npy", mmap_mode="r")
    rng = np.random.default_rng(args.seed)
    first = rng.choice(len(base), size=args.rows, replace=False)
    vectors = base[np.sort(first)].astype(np.float32) + rng.normal(scale=NOISE, size=(args.rows, base.shape[1])).astype(np.float32)
    Row.objects.bulk_create(Row(name=f"seed{i}", summary="", embedding=v) for i, v in enumerate(vectors))
    report = build.build(get_declared(INDEX))
    print(f"built on {report.vectors:,} rows: {report.heads:,} heads", flush=True)
    from django.db import connections

    connections.close_all()

    logs = args.scratch / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir()
    children: dict[str, subprocess.Popen] = {}

    def start(name: str) -> None:
        if name == "worker":
            command = [sys.executable, "-m", "bench.worker", "--pool=solo", "--loglevel=WARNING", "--without-gossip",
                       "--without-mingle", "--without-heartbeat", "--beat", f"--schedule={args.scratch / 'beat'}"]
        else:
            number = int(name.removeprefix("writer"))
            command = [sys.executable, "-m", "bench", "torture", "--writer", str(number), "--scratch", str(args.scratch),
                       "--dataset", str(args.dataset), "--seed", str(args.seed * 100 + number + random.randrange(10**6))]
        log = open(logs / f"{name}.out", "a")
        # A group of its own: the worker's beat is a child process of it, killed with it.
        children[name] = subprocess.Popen(
            command, cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def kill(name: str, how: int = signal.SIGKILL) -> None:
        try:
            os.killpg(children[name].pid, how)
        except ProcessLookupError:
            pass  # the whole group is gone already
        children[name].wait(120)

    names = ["worker", *(f"writer{i}" for i in range(args.writers))]
    for name in names:
        start(name)
    kills = {"writer": 0, "worker": 0, "database": 0}
    chooser = random.Random(args.seed)
    deadline = time.monotonic() + 60 * args.minutes
    while time.monotonic() < deadline:
        time.sleep(chooser.expovariate(1 / args.kill_every))
        for name, child in list(children.items()):
            if child.poll() is not None:  # died by itself (it should not): start it again
                print(f"{name} exited with {child.returncode}; started again", flush=True)
                kill(name)  # what is left of its group
                start(name)
        victim = chooser.choice(["database", "worker", *(["writer"] * 2)])
        if victim == "database":
            server.kill()
            time.sleep(chooser.uniform(0.2, 2.0))
            server.start()
        else:
            name = "worker" if victim == "worker" else chooser.choice(names[1:])
            kill(name)
            start(name)
        kills[victim] += 1
    for name in children:
        kill(name, signal.SIGTERM if name == "worker" else signal.SIGKILL)
    print(f"killed: {kills}", flush=True)
    (args.scratch / "kills.json").write_text(json.dumps(kills))  # for a --verify-only run on what --keep kept
    results = verify(args, kills)
    server.stop()
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if not args.keep:
        shutil.rmtree(args.scratch, ignore_errors=True)


def environment_for(args) -> dict:
    return {
        **os.environ,
        "DATABASE_URL": f"mysql://root@127.0.0.1:{args.port}/torture",
        "DJANGO_SETTINGS_MODULE": "bench.settings",
        "BENCH_DIMENSIONS": str(dimensions(args.dataset)),
        "CELERY_BROKER_URL": args.broker,
        "VECTORINDEX_SCAN_INTERVAL": "5",
        "BENCH_TUNING": json.dumps(TUNING),
        "BENCH_SETTINGS": json.dumps(["RETIRED_GRACE=5", "WAL_SNAPSHOT_ENTRIES=200"]),
    }


def verify_only(args) -> None:
    server = Server(args.scratch, args.port)
    import MySQLdb

    try:
        MySQLdb.connect(host="127.0.0.1", port=args.port, user="root").close()
    except MySQLdb.OperationalError:
        server.start()
    environment = environment_for(args)
    environment["CELERY_BROKER_URL"] = ""  # maintenance runs here, not on a worker
    os.environ.update(environment)
    from .common import configure, setup, tune

    setup("unused.sqlite3", dimensions(args.dataset))
    tune(TUNING)
    configure(json.loads(environment["BENCH_SETTINGS"]) + ["JOBS=manual"])
    kills = args.scratch / "kills.json"
    results = verify(args, kills=json.loads(kills.read_text()) if kills.exists() else None)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def verify(args, kills: dict | None) -> dict:
    """Maintenance to the end, then every row against the index.

    Every row is compared with its entries by the index's own survey (what
    ``check`` reads: missing, lost, changed, unreachable); a sample of the
    rows is also queried by its own vector with every list read, and a
    sample of the deleted rows by their last vector.
    """
    from django.db import connections

    connections.close_all()
    from vectorindex import CosineDistance
    from vectorindex.index import maintenance, recovery
    from vectorindex.index.registry import get_declared
    from vectorindex.index.runtime import reset_runtimes

    from .models import INDEX, Row

    reset_runtimes()
    declared = get_declared(INDEX)
    operations = {}
    deleted_vectors: dict[int, list[float]] = {}
    for path in (args.scratch / "logs").glob("writer*.jsonl"):
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # the last line of a writer killed while writing it
            operations[record["op"]] = operations.get(record["op"], 0) + 1
            for pk, vector in record.get("deleted", {}).items():
                deleted_vectors[int(pk)] = vector
    started = time.perf_counter()
    outcomes = maintenance.maintain(declared, rounds=200).outcomes
    drained = time.perf_counter() - started
    survey = recovery.surveyed(declared)
    rows = list(Row.objects.values_list("pk", "embedding"))
    every = Row.objects.approximate(probes=10**6)

    def found(pk: int, vector: np.ndarray) -> bool:
        # QuerySet.update() gives several rows one vector: the row is found
        # when it is among the nearest, at the nearest distance.
        nearest = every.annotate(d=CosineDistance("embedding", vector)).order_by("d").values_list("pk", "d")[:20]
        return any(other == pk and d <= nearest[0][1] + 1e-6 for other, d in nearest)

    chooser = random.Random(args.seed)
    sample = chooser.sample(rows, min(args.sample, len(rows)))
    started = time.perf_counter()
    lost = [pk for pk, vector in sample if not found(pk, vector)]
    queried = time.perf_counter() - started
    present = {pk for pk, _vector in rows}
    gone = [(pk, vector) for pk, vector in deleted_vectors.items() if pk not in present]
    gone = chooser.sample(gone, min(args.sample, len(gone)))
    returned = [
        pk for pk, vector in gone
        if pk in every.order_by(CosineDistance("embedding", vector)).values_list("pk", flat=True)[:10]
    ]
    status = recovery.status(declared)
    from vectorindex.index.runtime import runtime

    head = runtime(declared, "default").current(*runtime(declared, "default").open())
    return {
        "minutes": args.minutes,
        "writers": args.writers,
        "operations_committed": operations,
        "kills": kills,
        "maintenance_after": {"jobs": len(outcomes), "seconds": round(drained, 1)},
        "rows": len(rows),
        "survey_of_every_row": {
            kind: len(getattr(survey, kind)) for kind in ("missing", "lost", "changed", "unreachable", "orphaned")
        },
        "rows_unreachable_with_defaults": len(survey.unreachable),
        "rows_queried_with_every_list": len(sample),
        "rows_lost": len(lost),
        "lost_examples": lost[:10],
        "seconds_a_query_with_every_list": round(queried / max(len(sample), 1), 3),
        "deleted_rows_logged": len(deleted_vectors),
        "deleted_rows_queried": len(gone),
        "deleted_rows_returned": len(returned),
        "heads": status.get("heads"),
        "retired_heads": status.get("retired_heads"),
        "head_index_elements": head.elements,
        "posting_entries": status.get("posting_entries"),
        "deleted_versions": status.get("deleted_versions"),
    }


# A writer --------------------------------------------------------------------------


def write(args) -> None:
    """One writer process: random writes for ever, each logged once committed."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core import serializers
    from django.db import connections, transaction

    from .common import configure, tune
    from .models import Row

    tune(json.loads(os.environ["BENCH_TUNING"]))
    configure(json.loads(os.environ["BENCH_SETTINGS"]))
    base = np.load(args.dataset / "base.f16.npy", mmap_mode="r")
    rng = np.random.default_rng(args.seed)
    log = open(args.scratch / "logs" / f"writer{args.writer}.jsonl", "a")

    def vector() -> np.ndarray:
        return base[rng.integers(len(base))].astype(np.float32) + rng.normal(scale=NOISE, size=base.shape[1]).astype(np.float32)

    def name() -> str:
        return uuid.uuid4().hex  # Row.name is unique

    def committed(op: str, **details) -> None:
        log.write(json.dumps({"op": op, **details}) + "\n")
        log.flush()

    def some(count: int) -> list:
        pks = list(Row.objects.order_by("?").values_list("pk", flat=True)[:count])
        return list(Row.objects.filter(pk__in=pks))

    target = args.target_rows
    rows = target
    operations = 0
    while True:
        if operations % 50 == 0:  # how many rows there are, now and then
            try:
                rows = Row.objects.count()
            except Exception:  # noqa: BLE001 - the server is down: as before
                pass
        operations += 1
        op = rng.choice(
            ["bulk_create", "create", "raw", "save", "update", "bulk_update", "delete"],
            p=[0.15, 0.2, 0.05, 0.2, 0.1, 0.1, 0.2] if rows < target else [0.0, 0.05, 0.0, 0.2, 0.1, 0.1, 0.55],
        )
        try:
            if op == "bulk_create":
                Row.objects.bulk_create(Row(name=name(), summary="", embedding=vector()) for _ in range(rng.integers(1, 20)))
            elif op == "create":
                Row.objects.create(name=name(), summary="", embedding=vector())
            elif op == "raw":  # as loaddata saves
                row = Row(name=name(), summary="", embedding=vector())
                for obj in serializers.deserialize("json", serializers.serialize("json", [row])):
                    obj.save()
            elif op == "save":
                for row in some(1):
                    row.embedding = vector()
                    row.save()
            elif op == "update":
                pks = [row.pk for row in some(3)]
                Row.objects.filter(pk__in=pks).update(embedding=vector())
            elif op == "bulk_update":
                picked = some(5)
                for row in picked:
                    row.embedding = vector()
                Row.objects.bulk_update(picked, ["embedding"])
            else:
                doomed = some(int(rng.integers(1, 6 if rows < target else 20)))
                with transaction.atomic():
                    gone = {row.pk: row.embedding.tolist() for row in doomed}
                    Row.objects.filter(pk__in=list(gone)).delete()
                committed(op, deleted=gone)
                continue
            committed(op)
        except Exception as error:  # noqa: BLE001 - the server was killed: a new connection, and on
            print(f"{op}: {type(error).__name__}: {error}", flush=True)
            connections.close_all()
            time.sleep(0.3)


if __name__ == "__main__":
    main()
