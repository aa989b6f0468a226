from django.db import models

from ..enums import Resolution


class Conflict(models.Model):
    """The conflict ledger: one row per incoming change whose before-state did not match.

    Written in the same database transaction as the replay decision, so every
    conflict that changed (or did not change) a row is on record.
    """

    tx_id = models.UUIDField(unique=True, help_text="The incoming transaction.")
    model = models.CharField(max_length=128)
    key = models.TextField(help_text="Natural key, JSON.")
    action = models.CharField(max_length=1)
    producer = models.CharField(max_length=200)
    policy = models.CharField(max_length=20)
    base = models.TextField(help_text="Values the producer saw before its change, JSON.")
    incoming = models.TextField(help_text="Values the producer wrote, JSON.")
    current = models.TextField(help_text="Values this node held when the change arrived, JSON.")
    incoming_hlc = models.BigIntegerField()
    current_hlc = models.BigIntegerField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    resolution = models.CharField(max_length=20, choices=Resolution.choices,
                                  default=Resolution.PENDING)
    resolved_datetime = models.DateTimeField(null=True, blank=True)
    resolved_by = models.CharField(max_length=200, blank=True, default="")

    class Meta:
        ordering = ("created",)
        indexes = [models.Index(fields=("resolution", "model"), name="syncrouter_conflict_res")]

    def __str__(self):
        return f"{self.model} {self.key}: {self.resolution}"
