"""The demo's Celery app: ``celery -A demo_project worker`` and ``celery -A demo_project beat``.

Configuration comes from Django settings prefixed ``CELERY_`` (the broker URL,
the beat schedule); tasks are found in every installed app's ``tasks`` module,
vectorindex's maintenance jobs among them.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo_project.settings")

app = Celery("demo_project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
