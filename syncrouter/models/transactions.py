"""The outbox (OutgoingTransaction) and inbox (IncomingTransaction) tables.

One row is one captured change of one registered model instance. Its ``id`` is
the transaction's global identity: it is assigned once, where the change was
captured, and every copy, file and hop keeps it, so every target can refuse a
second copy by primary key alone.
"""
import uuid

from django.db import models
from django.db.models import Q

from .managers import IncomingManager, TransactionManager

ACTIONS = (("I", "insert"), ("U", "update"), ("D", "delete"))


class TransactionBase(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False,
                          help_text="Global identity of the transaction, kept across hops.")
    tx = models.TextField(help_text="JSON payload: model, key, field values, before-state.")
    # Wide enough for any label Django accepts (app label and model name, 100 each).
    tx_name = models.CharField(max_length=255, help_text="Label of the concrete model, app.model.")
    # Text: a CharField primary key may have any length (an unbounded varchar on PostgreSQL).
    tx_pk = models.TextField(help_text="Primary key of the instance on the producer.")
    producer = models.CharField(max_length=200, help_text="Node that captured the change.")
    hostname = models.CharField(max_length=200, help_text="Machine that captured the change.")
    sequence = models.BigIntegerField(help_text="Gapless per-producer sequence number, from 1.")
    db_transaction_id = models.UUIDField(
        help_text="The producer's database transaction: rows sharing it were written together.")
    hlc = models.BigIntegerField(
        help_text="Hybrid logical clock at capture: milliseconds << 16 | logical counter.")
    action = models.CharField(max_length=1, choices=ACTIONS)
    timestamp = models.DateTimeField(help_text="Wall time at capture (informative only).")
    hops = models.TextField(default="[]", help_text="JSON list of the nodes the row has passed.")
    # db_default: rows written by raw SQL that predates these columns still insert.
    signature = models.TextField(
        blank=True, default="", db_default="",
        help_text="The producer's Ed25519 signature over the identity fields "
                  "(syncrouter.trust.signing); empty if unsigned.")
    consumed_datetime = models.DateTimeField(null=True, blank=True)
    consumer = models.CharField(max_length=200, blank=True, default="")
    is_consumed_middleman = models.BooleanField(default=False)
    is_consumed_server = models.BooleanField(default=False)
    is_ignored = models.BooleanField(default=False)
    is_error = models.BooleanField(default=False)
    error = models.TextField(blank=True, default="")
    batch_id = models.CharField(max_length=64, blank=True, default="")

    objects = TransactionManager()

    class Meta:
        abstract = True
        ordering = ("producer", "sequence")

    def __str__(self):
        return f"{self.producer}#{self.sequence} {self.action} {self.tx_name} {self.tx_pk}"


class OutgoingTransaction(TransactionBase):
    """A change captured on this node, waiting to be copied to the next hop.

    On PostgreSQL capture writes the row *unsealed* (``sequence`` NULL, a
    ``write_order``), and ``capture.seal`` numbers it once its database transaction
    has committed; reads through ``objects`` seal first (see ``transfer.copy.OutboxQuerySet``).
    """

    sequence = models.BigIntegerField(
        null=True, blank=True,
        help_text="Gapless per-producer sequence number, from 1; empty until sealed.")
    write_order = models.BigIntegerField(
        null=True, blank=True,
        help_text="Where the write fell among all captured writes (PostgreSQL sequence); "
                  "orders unsealed rows for the seal.")

    class Meta(TransactionBase.Meta):
        constraints = [
            models.UniqueConstraint(fields=("producer", "sequence"),
                                    name="syncrouter_out_producer_seq"),
        ]
        indexes = [
            models.Index(fields=("producer", "write_order"), condition=Q(sequence__isnull=True),
                         name="syncrouter_out_unsealed"),
            models.Index(fields=("producer", "sequence"), condition=Q(is_consumed_server=False),
                         name="syncrouter_out_pending_srv"),
            models.Index(fields=("producer", "sequence"), condition=Q(is_consumed_middleman=False),
                         name="syncrouter_out_pending_mid"),
        ]


class IncomingTransaction(TransactionBase):
    """A change received from another node, to replay here and/or forward on."""

    is_consumed = models.BooleanField(default=False, help_text="Replayed on this node.")
    is_deferred = models.BooleanField(
        default=False, help_text="Waiting for a parent row or an earlier transaction.")
    received_datetime = models.DateTimeField(null=True, blank=True)
    is_refused = models.BooleanField(
        default=False, db_default=False, help_text="Refused by a signature check or a write rule (see error).")

    objects = IncomingManager()

    class Meta(TransactionBase.Meta):
        constraints = [
            models.UniqueConstraint(fields=("producer", "sequence"),
                                    name="syncrouter_in_producer_seq"),
        ]
        indexes = [
            models.Index(fields=("producer", "sequence"), condition=Q(is_consumed=False),
                         name="syncrouter_in_pending"),
            models.Index(fields=("producer", "sequence"), condition=Q(is_consumed_server=False),
                         name="syncrouter_in_unforwarded"),
            # Replay's history of one row: clocks for conflicts, later changes for re-runs.
            models.Index(fields=("tx_name", "tx_pk", "producer", "sequence"),
                         name="syncrouter_in_row"),
        ]


class ProducerClock(models.Model):
    """Per-producer counter behind the gapless ``sequence`` and the hybrid logical clock.

    Whoever numbers outbox rows increments it in the transaction that numbers them,
    so a rollback gives the numbers back and no gap can appear: on SQLite the
    capture path, in the data write's own transaction; on PostgreSQL the seal
    (``capture.seal``), so that no user's write waits on this row.
    """

    producer = models.CharField(max_length=200, unique=True)
    last_sequence = models.BigIntegerField(default=0)
    last_hlc = models.BigIntegerField(default=0)

    def __str__(self):
        return f"{self.producer}: {self.last_sequence}"
