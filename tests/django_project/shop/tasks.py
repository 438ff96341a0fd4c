"""A task queued right after a write: it reads that write."""

from typing import Any

from project.celery import app

from .models import Order


@app.task
def read_order(pk: int) -> dict[str, Any]:
    order = Order.objects.filter(pk=pk).first()
    return {"found": order is not None, "alias": order._state.db if order is not None else None}
