"""The test project's URLs."""

from django.urls import path
from shop import views

urlpatterns = [
    path("customers/", views.create_customer),
    path("customers/<int:pk>/", views.read_customer),
    path("async/customers/", views.create_customer_async),
    path("async/customers/<int:pk>/", views.read_customer_async),
    path("orders/<int:customer>/", views.queue_order),
]
