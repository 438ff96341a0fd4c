"""Views: each answers with the alias that served its query (``_state.db``)."""

from typing import Any

from django.http import HttpRequest, JsonResponse

from .models import Customer, Order


def create_customer(request: HttpRequest) -> JsonResponse:
    customer = Customer.objects.create(name=request.POST.get("name", "someone"))
    return JsonResponse({"id": customer.pk, "alias": customer._state.db})


def read_customer(request: HttpRequest, pk: int) -> JsonResponse:
    customer = Customer.objects.filter(pk=pk).first()
    alias = customer._state.db if customer is not None else None
    return JsonResponse({"found": customer is not None, "alias": alias})


async def create_customer_async(request: HttpRequest) -> JsonResponse:
    customer = await Customer.objects.acreate(name=request.POST.get("name", "someone"))
    # The write pinned the set (GreedyRouter): this read goes to the primary.
    again = await Customer.objects.aget(pk=customer.pk)
    return JsonResponse({"id": customer.pk, "alias": customer._state.db, "read": again._state.db})


async def read_customer_async(request: HttpRequest, pk: int) -> JsonResponse:
    customer = await Customer.objects.filter(pk=pk).afirst()
    alias = customer._state.db if customer is not None else None
    return JsonResponse({"found": customer is not None, "alias": alias})


def queue_order(request: HttpRequest, customer: int) -> JsonResponse:
    from .tasks import read_order

    order = Order.objects.create(customer_id=customer, amount=1)
    result: Any = read_order.delay(order.pk)
    return JsonResponse({"id": order.pk, "task": result.get(timeout=10)})
