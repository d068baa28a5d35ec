"""The Celery worker ``bench stream`` and ``bench torture`` start: the demo's app, the run's ``--set`` options.

It runs on the benchmarks' settings (:mod:`bench.settings`; ``BENCH_DIMENSIONS``
inherited from the benchmark that starts it). A worker process reads the
index's declaration from the benchmarks' model, so the tuning a benchmark applies in its own process (:func:`bench.common.tune`) would
not reach it; this applies the same options (``BENCH_TUNING``, a JSON list of
``OPTION=VALUE``) and settings (``BENCH_SETTINGS``, ``KEY=VALUE``) before the
worker starts.

    BENCH_TUNING='["posting_limit=120"]' python -m bench.worker --pool=solo --beat
"""

from __future__ import annotations

import json
import os
import sys

from .common import ROOT


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from demo_project.celery import app

    from .common import configure, tune

    tune(json.loads(os.environ.get("BENCH_TUNING", "[]")))
    configure(json.loads(os.environ.get("BENCH_SETTINGS", "[]")))
    app.worker_main(["worker", *sys.argv[1:]])


if __name__ == "__main__":
    main()
