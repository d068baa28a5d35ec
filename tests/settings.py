"""Settings for the test suite: SQLite by default, any database from DATABASE_URL."""

import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent

SECRET_KEY = "vectorindex-tests"
DEBUG = False
USE_TZ = True

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{BASE_DIR / 'test.sqlite3'}",
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file, not memory: tests open other connections and other processes
    # against the test database.
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / "test-db.sqlite3")}
    # Threads and processes of the tests write at once; SQLite takes turns.
    # IMMEDIATE: a transaction takes the write lock when it begins, so that two
    # that read first cannot deadlock when both go on to write.
    DATABASES["default"].setdefault("OPTIONS", {}).update(timeout=60, transaction_mode="IMMEDIATE")
if DATABASES["default"]["ENGINE"] == "django.db.backends.mysql":
    DATABASES["default"].setdefault("OPTIONS", {})["charset"] = "utf8mb4"

# A second database of the same kind, for the tests of indexes on several
# databases (tests/test_databases.py): its test database is made only for
# the tests that ask for it.
DATABASES["other"] = {**DATABASES["default"], "NAME": f"{DATABASES['default']['NAME']}_other", "TEST": {}}
if DATABASES["other"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["other"]["NAME"] = str(BASE_DIR / "other.sqlite3")
    DATABASES["other"]["TEST"] = {"NAME": str(BASE_DIR / "test-other.sqlite3")}

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "vectorindex",
    "tests.testapp",
    "tests.django_app",
    "demo_project.packages",
]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "tests.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Builds do not calibrate (queries read 128 lists, or the probes declared),
# in this process or the suite's workers: see tests/conftest.py.
VECTORINDEX = {"CALIBRATION_QUERIES": 0}

# Maintenance runs inline unless a test (or the Celery worker a test starts)
# sets a broker.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL") or None
# A queue of a test's own (tests/test_workers.py), so that nothing left in a shared broker reaches its workers.
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("CELERY_TASK_DEFAULT_QUEUE") or "celery"
CELERY_TASK_IGNORE_RESULT = True
CELERY_BEAT_SCHEDULE = {"vectorindex-scan": {"task": "vectorindex.scan", "schedule": 60.0}}

# The browser tests' live server serves the admin's stylesheets and scripts.
STATIC_URL = "static/"
