"""Two models on the database set, and one (Note) that the delegate router sends elsewhere."""

from django.db import models


class Customer(models.Model):
    name = models.CharField(max_length=100)

    class Meta:
        app_label = "shop"


class Order(models.Model):
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE)
    amount = models.IntegerField(default=0)

    class Meta:
        app_label = "shop"


class Note(models.Model):
    text = models.CharField(max_length=100)

    class Meta:
        app_label = "shop"
