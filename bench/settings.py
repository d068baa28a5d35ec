"""The benchmarks' settings: the demo project's, with the benchmarks' own model (:mod:`bench.models`).

DEBUG is off, as on a production site. ``BENCH_DIMENSIONS`` in the environment is that model's dimension: the
benchmarks set it from the data set they load (:func:`bench.common.setup`),
so that a data set of any dimension fits. ``BENCH_PGVECTOR_URL``, when set,
adds the PostgreSQL database ``bench side-by-side`` measures pgvector on.
"""

import os

import dj_database_url

from demo_project.settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "bench"]  # noqa: F405

# Measured as a site runs: with DEBUG on (the demo's default), Django keeps
# and formats every statement of every query (connection.queries), for both
# systems a side-by-side compares.
DEBUG = False

BENCH_DIMENSIONS = int(os.environ.get("BENCH_DIMENSIONS", "384"))

if os.environ.get("BENCH_PGVECTOR_URL"):
    DATABASES["pgvector"] = dj_database_url.parse(os.environ["BENCH_PGVECTOR_URL"], conn_max_age=None)  # noqa: F405
