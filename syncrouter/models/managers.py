"""The managers of the transaction tables, and how their querysets reach them.

The copy queryset (``transfer.copy.TransferQuerySet``) and the replay queryset
(``replay.runner.ReplayQuerySet``) live in the layers above the models, which
use the models. ``AppConfig.ready`` hands them to these managers
(``use_querysets``), so the models import nothing from the layers above them.
"""
from __future__ import annotations

from django.db import models


class TransactionManager(models.Manager):
    """Manager of both transaction tables: its querysets copy (``transfer.copy``)."""

    def copy_to_incoming_transaction(self, *args, **kwargs):
        """``TransferQuerySet.copy_to_incoming_transaction`` over every row of the table."""
        return self.get_queryset().copy_to_incoming_transaction(*args, **kwargs)


class IncomingManager(TransactionManager):
    """Manager of the inbox: its querysets copy on and replay (``replay.runner``)."""

    def deserialize(self, *args, **kwargs):
        """``ReplayQuerySet.deserialize`` over every row of the inbox."""
        return self.get_queryset().deserialize(*args, **kwargs)


def use_querysets(outgoing: type[models.QuerySet], incoming: type[models.QuerySet]) -> None:
    """Give the outbox's manager the queryset class ``outgoing`` and the inbox's ``incoming``."""
    TransactionManager._queryset_class = outgoing
    IncomingManager._queryset_class = incoming
