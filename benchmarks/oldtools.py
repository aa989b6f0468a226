"""A reproduction of the older tools' capture and replay, as the baseline they set.

Not their code: the same technique, on this benchmark's models. Capture is a
``post_save`` receiver that serializes the instance with Django's JSON serializer
(natural foreign keys, pk kept) and writes one transaction row with the ORM.
Replay reads each row, ``serializers.deserialize(...)`` it and ``.save()`` s it,
one object at a time, with natural keys looked up on the replaying alias.
"""
from __future__ import annotations

import socket
from contextlib import contextmanager

from django.core import serializers
from django.db import transaction
from django.db.models.signals import post_save
from django.utils import timezone

from .benchapp.models import OldTransaction


def _capture(sender, instance, created, raw, using, **kwargs):
    if raw:
        return
    OldTransaction.objects.using(using).create(
        tx=serializers.serialize("json", [instance], use_natural_foreign_keys=True),
        tx_name=instance._meta.label_lower, tx_pk=str(instance.pk), producer=f"old-{using}",
        hostname=socket.gethostname(), action="I" if created else "U")


@contextmanager
def capturing(model):
    """Capture saves of ``model`` the older tools' way while the block runs."""
    post_save.connect(_capture, sender=model, dispatch_uid="benchmarks.oldtools")
    try:
        yield
    finally:
        post_save.disconnect(sender=model, dispatch_uid="benchmarks.oldtools")


def copy(source: str, target: str) -> int:
    """Move the transaction rows to the target (setup for replay; not timed).

    Moved, not copied: a later copy, of updates say, must not send the inserts again.
    """
    pending = OldTransaction.objects.using(source).filter(is_consumed=False)
    rows = list(pending)
    OldTransaction.objects.using(target).bulk_create(rows, batch_size=1000)
    pending.delete()
    return len(rows)


def replay(alias: str) -> int:
    """Per-row replay: deserialize and save each object in its own atomic block."""
    count = 0
    for row in OldTransaction.objects.using(alias).filter(is_consumed=False).order_by("timestamp"):
        with transaction.atomic(using=alias):
            for obj in serializers.deserialize("json", row.tx, using=alias,
                                               handle_forward_references=False):
                obj.save(using=alias)
            OldTransaction.objects.using(alias).filter(pk=row.pk).update(
                is_consumed=True, consumed_datetime=timezone.now())
        count += 1
    return count
