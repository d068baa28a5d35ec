"""Database routers of the tests that run on more than one database (tests/test_replicas.py, tests/test_databases.py)."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from django.conf import settings


class PrimaryReplicaRouter:
    """Django's documented primary/replica router: every read to the replica, every write and migration to the primary."""

    def db_for_read(self, model: Any, **hints: Any) -> str:
        return "replica" if "replica" in settings.DATABASES else "default"

    def db_for_write(self, model: Any, **hints: Any) -> str:
        return "default"

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool:
        return True

    def allow_migrate(self, db: str, app_label: str, model_name: str | None = None, **hints: Any) -> bool:
        return db == "default"


# The tenant a request (or a test) is for: TenantRouter sends every query there.
current_tenant: ContextVar[str | None] = ContextVar("current_tenant", default=None)


class TenantRouter:
    """A database per tenant: reads and writes go to the tenant set for the request, else the default."""

    def db_for_read(self, model: Any, **hints: Any) -> str | None:
        return current_tenant.get()

    db_for_write = db_for_read
