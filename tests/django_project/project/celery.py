"""The test project's Celery app: the memory broker, pgrouter's task signals connected."""

from celery import Celery

import pgrouter.django.celery

app = Celery("project", broker="memory://", backend="cache+memory://")
app.conf.task_always_eager = True
app.conf.task_store_eager_result = False
pgrouter.django.celery.setup()
