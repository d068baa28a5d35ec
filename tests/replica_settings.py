"""Settings of the processes tests/test_replicas.py starts: a private MariaDB primary and its read-only replica.

``default`` is the primary (as root), ``replica`` the replica as a user that
may only SELECT; Django's primary/replica router sends reads to the replica.
With ``VECTORINDEX_READER_ONLY`` set, the process has the replica alone, as
``default``: a process that serves only reads.
"""

import os

from tests.settings import *  # noqa: F403

from .servers import DATABASE, READER

PRIMARY = {
    "ENGINE": "django.db.backends.mysql",
    "NAME": DATABASE,
    "USER": "root",
    "PASSWORD": "",
    "HOST": os.environ["VECTORINDEX_PRIMARY_SOCKET"],
    "OPTIONS": {"charset": "utf8mb4"},
}
REPLICA = {**PRIMARY, "USER": READER, "HOST": os.environ["VECTORINDEX_REPLICA_SOCKET"]}

if os.environ.get("VECTORINDEX_READER_ONLY"):
    DATABASES = {"default": REPLICA}
    DATABASE_ROUTERS: list[str] = []
else:
    DATABASES = {"default": PRIMARY, "replica": REPLICA}
    DATABASE_ROUTERS = ["tests.routers.PrimaryReplicaRouter"]

# Jobs run inline, after the commit that asked for them, in the process that wrote.
CELERY_BROKER_URL = None
