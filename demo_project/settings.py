"""Settings for the demo project.

Everything that differs between machines comes from the environment:

- ``SECRET_KEY``: required for anything but local use (a dev default is set here).
- ``DEBUG``: ``1``/``true``/``yes``/``on`` or ``0``/``false``/``no``/``off``; on by default.
- ``ALLOWED_HOSTS``: comma-separated; defaults to localhost only.
- ``DATABASE_URL``: any database dj-database-url understands, for example
  ``mysql://root@127.0.0.1:3306/vectorindex_demo``. Without it the demo uses
  SQLite in ``db.sqlite3`` at the top of the repository.
- ``CONN_MAX_AGE``: seconds to keep database connections open (default 60).
"""

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

# The repository root: manage.py lives here, and so does the SQLite database.
BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    value = value.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(
        f"{name} must be a boolean (1/0, true/false, yes/no, on/off), got {value!r}."
    )


SECRET_KEY = os.environ.get(
    "SECRET_KEY",
    "django-insecure-vectorindex-demo-only-do-not-use-in-production",
)

DEBUG = env_bool("DEBUG", True)

ALLOWED_HOSTS = [
    host.strip()
    for host in os.environ.get("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",")
    if host.strip()
]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "vectorindex",
    "demo_project.packages",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "demo_project.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "demo_project.wsgi.application"
ASGI_APPLICATION = "demo_project.asgi.application"

DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
        conn_max_age=int(os.environ.get("CONN_MAX_AGE", "60")),
    ),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.mysql":
    # MariaDB and MySQL: full Unicode (package summaries contain emoji and CJK text).
    DATABASES["default"].setdefault("OPTIONS", {})["charset"] = "utf8mb4"
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # SQLite has one writer at a time: transactions take the write lock when
    # they begin (so that two cannot deadlock upgrading from a read) and wait
    # up to 30 s for it, e.g. while an index build holds it.
    DATABASES["default"].setdefault("OPTIONS", {}).update(timeout=30, transaction_mode="IMMEDIATE")

# django-vectorindex settings; every key is optional. See the "Settings" section
# of the README for the keys and their defaults.
VECTORINDEX = {}

# Celery runs the index's maintenance jobs when a broker is configured, e.g.
# CELERY_BROKER_URL=redis://127.0.0.1:6379/0 or amqp://guest:guest@127.0.0.1:5672//.
# Without one (the default), the same jobs run in-process right after the
# transaction that triggered them commits.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL") or None
CELERY_TASK_IGNORE_RESULT = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BEAT_SCHEDULE = {
    # The safety net: finds oversized and undersized posting lists, a long WAL
    # and expired retired heads, and enqueues the jobs for them.
    "vectorindex-scan": {
        "task": "vectorindex.scan",
        "schedule": float(os.environ.get("VECTORINDEX_SCAN_INTERVAL", 60)),
    },
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
