"""An order, its shipment (written by a job) and reports (written by a slow job)."""

from django.db import models


class Order(models.Model):
    item = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)


class Shipment(models.Model):
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="shipments")
    worker_pid = models.IntegerField()
    shipped_at = models.DateTimeField(auto_now_add=True)


class Report(models.Model):
    label = models.CharField(max_length=200)
    orders = models.IntegerField()
    created_at = models.DateTimeField(auto_now_add=True)
