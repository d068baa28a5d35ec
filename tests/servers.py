"""Private MariaDB servers for the tests that need servers of their own: a primary and its replica.

:class:`ReplicaPair` makes two data directories with ``mariadb-install-db``,
starts ``mariadbd`` on each (other sockets and ports than the machine's
server, under a temporary directory), turns on the binary log of the
primary, points the replica at it (``CHANGE MASTER TO … MASTER_USE_GTID``)
and sets it ``read_only``. The primary gets a database for the tests and a
user, ``reader``, that may only SELECT from it; both reach the replica by
replication. :meth:`ReplicaPair.stop` stops both servers and deletes their
directories.

Where the server cannot be installed or started (no MariaDB server package,
a sandbox without the permissions), :func:`start_pair` raises
:class:`ServerUnavailable` saying why, and the tests skip with that reason.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DATABASE = "vectorindex_replicas"
READER = "reader"


class ServerUnavailable(RuntimeError):
    """A private MariaDB server could not be started here; the message says why."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _binary(*names: str) -> str:
    for name in names:
        found = shutil.which(name) or next(
            (str(Path(d) / name) for d in ("/usr/sbin", "/usr/bin") if (Path(d) / name).exists()), None
        )
        if found:
            return found
    raise ServerUnavailable(f"{' / '.join(names)} is not installed (Debian's package mariadb-server provides it)")


@dataclass
class Server:
    """One private mariadbd: its directory, socket, TCP port and process."""

    root: Path
    port: int
    server_id: int
    process: subprocess.Popen | None = None
    extra: list[str] = field(default_factory=list)

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def socket(self) -> str:
        return str(self.root / "mariadb.sock")

    def start(self) -> None:
        log = self.root / "error.log"
        self.process = subprocess.Popen(
            [
                _binary("mariadbd", "mysqld"),
                "--no-defaults",
                f"--datadir={self.datadir}",
                f"--socket={self.socket}",
                f"--port={self.port}",
                "--bind-address=127.0.0.1",
                f"--pid-file={self.root / 'mariadb.pid'}",
                f"--log-error={log}",
                f"--server-id={self.server_id}",
                *(["--user=root"] if os.geteuid() == 0 else []),
                "--skip-name-resolve",
                "--innodb-buffer-pool-size=128M",
                "--innodb-log-file-size=48M",
                "--innodb-flush-log-at-trx-commit=2",
                "--max-connections=200",
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
                raise ServerUnavailable(f"mariadbd on port {self.port} exited ({self.process.returncode}): {tail}")
            try:
                self.execute("SELECT 1")
                return
            except Exception:  # noqa: BLE001 - not accepting connections yet
                time.sleep(0.2)
        raise ServerUnavailable(f"mariadbd on port {self.port} did not accept connections within 60 s")

    def connect(self, user: str = "root", database: str | None = None) -> Any:
        import MySQLdb

        options = {"unix_socket": self.socket, "user": user, "charset": "utf8mb4", "autocommit": True}
        if database:
            options["database"] = database
        return MySQLdb.connect(**options)

    def execute(self, sql: str, params: Any = None) -> list[tuple]:
        connection = self.connect()
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
                return list(cursor.fetchall()) if cursor.description else []
        finally:
            connection.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class ReplicaPair:
    primary: Server
    replica: Server
    root: Path

    def database(self, server: Server, user: str = "root") -> dict[str, Any]:
        """A Django DATABASES entry for *server*'s test database, as *user*."""
        return {
            "ENGINE": "django.db.backends.mysql",
            "NAME": DATABASE,
            "USER": user,
            "PASSWORD": "",
            "HOST": server.socket,
            "OPTIONS": {"charset": "utf8mb4"},
        }

    def environment(self) -> dict[str, str]:
        """What tests/replica_settings.py reads: where the two servers listen."""
        return {"VECTORINDEX_PRIMARY_SOCKET": self.primary.socket, "VECTORINDEX_REPLICA_SOCKET": self.replica.socket}

    @classmethod
    def from_environment(cls) -> ReplicaPair:
        """The pair a test started, as a process it started finds it (:meth:`environment`): to pause it and wait for it."""
        primary = Server(Path(os.environ["VECTORINDEX_PRIMARY_SOCKET"]).parent, 0, 1)
        replica = Server(Path(os.environ["VECTORINDEX_REPLICA_SOCKET"]).parent, 0, 2)
        return cls(primary, replica, primary.root.parent)

    def caught_up(self, timeout: float = 60) -> None:
        """Wait until the replica has applied everything the primary has logged."""
        position = self.primary.execute("SELECT @@gtid_binlog_pos")[0][0]
        waited = self.replica.execute("SELECT MASTER_GTID_WAIT(%s, %s)", [position, timeout])[0][0]
        if waited != 0:
            raise AssertionError(f"the replica did not reach {position} within {timeout} s: {self.status()}")

    def pause(self) -> None:
        """Replication lag on demand: the replica receives the primary's log but applies nothing."""
        self.replica.execute("STOP SLAVE SQL_THREAD")

    def resume(self) -> None:
        self.replica.execute("START SLAVE SQL_THREAD")

    def status(self) -> dict[str, Any]:
        connection = self.replica.connect()
        try:
            cursor = connection.cursor()
            cursor.execute("SHOW SLAVE STATUS")
            row = cursor.fetchone()
            names = [column[0] for column in cursor.description]
            return dict(zip(names, row, strict=True)) if row else {}
        finally:
            connection.close()

    def reset_database(self) -> None:
        """An empty test database on both (dropped and created on the primary, replicated)."""
        self.primary.execute(f"DROP DATABASE IF EXISTS {DATABASE}")
        self.primary.execute(f"CREATE DATABASE {DATABASE} CHARACTER SET utf8mb4")
        self.caught_up()

    def stop(self) -> None:
        for server in (self.replica, self.primary):
            server.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def start_pair() -> ReplicaPair:
    """A primary and a read-only replica of it, replicating; ServerUnavailable where that cannot be."""
    install = _binary("mariadb-install-db", "mysql_install_db")
    _binary("mariadbd", "mysqld")
    try:
        import MySQLdb  # noqa: F401
    except ImportError as error:
        raise ServerUnavailable(f"mysqlclient is not installed: {error}") from None
    root = Path(tempfile.mkdtemp(prefix="vectorindex-replicas-"))
    primary = Server(root / "primary", _free_port(), 1, extra=["--log-bin=binlog", "--binlog-format=ROW"])
    replica = Server(
        root / "replica",
        _free_port(),
        2,
        extra=["--read-only=1", "--relay-log=relay", "--log-slave-updates=0", "--skip-slave-start"],
    )
    pair = ReplicaPair(primary, replica, root)
    try:
        primary.root.mkdir()
        done = subprocess.run(
            [
                install,
                "--no-defaults",
                f"--datadir={primary.datadir}",
                "--user=root" if os.geteuid() == 0 else f"--user={os.environ.get('USER', 'nobody')}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ],
            capture_output=True,
            text=True,
            timeout=180,
        )
        if done.returncode != 0:
            raise ServerUnavailable(f"mariadb-install-db failed ({done.returncode}): {(done.stderr or done.stdout)[-1500:]}")
        replica.root.mkdir()
        shutil.copytree(primary.datadir, replica.datadir, symlinks=True)
        primary.start()
        replica.start()
        primary.execute("CREATE USER 'replication'@'127.0.0.1' IDENTIFIED BY 'replication'")
        primary.execute("GRANT REPLICATION SLAVE ON *.* TO 'replication'@'127.0.0.1'")
        primary.execute(f"CREATE DATABASE {DATABASE} CHARACTER SET utf8mb4")
        # A user that can only read: what the read-only processes connect to the replica as.
        primary.execute(f"CREATE USER '{READER}'@'localhost'")
        primary.execute(f"GRANT SELECT ON {DATABASE}.* TO '{READER}'@'localhost'")
        replica.execute(
            "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=%s, MASTER_USER='replication', "
            "MASTER_PASSWORD='replication', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1",
            [primary.port],
        )
        replica.execute("START SLAVE")
        pair.caught_up()
    except ServerUnavailable:
        pair.stop()
        raise
    except Exception as error:
        pair.stop()
        raise ServerUnavailable(f"the primary and replica did not start replicating: {type(error).__name__}: {error}") from error
    return pair
