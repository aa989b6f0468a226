"""The device registry and the record of refused transactions, on each receiving node.

Both live in the receiving node's own database (the alias a copy, import or
replay writes to), so each node decides for itself whom it believes.
"""
from django.db import models

from ..conf import ROLES


class Device(models.Model):
    """A node this node believes: its name (the producer it writes as), its public
    keys and its role, as enrolled with ``manage.py syncrouter keys trust``.

    ``revoked_after`` is the revocation cut-off: transactions of this producer with a
    higher sequence are refused, earlier ones stay valid. None: not revoked.
    """

    name = models.CharField(max_length=200, unique=True, help_text="Producer name of the node.")
    public_key = models.CharField(
        max_length=200, help_text="Its public keys as printed by 'keys show' (sr1:...).")
    fingerprint = models.CharField(max_length=64, help_text="SHA-256 of the public keys, hex.")
    role = models.CharField(max_length=20, choices=[(r, r) for r in ROLES], default="client")
    revoked_after = models.BigIntegerField(
        null=True, blank=True, help_text="Sequences above this are refused; empty: not revoked.")
    revoked_datetime = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("name",)

    def __str__(self):
        state = "" if self.revoked_after is None else f", revoked after #{self.revoked_after}"
        return f"{self.name} ({self.role}, {self.fingerprint[:16]}{state})"


class RefusedTransaction(models.Model):
    """A transaction a copy or an import refused before it reached the inbox.

    It never enters ``IncomingTransaction``: a forged row must not take the
    (producer, sequence) place of the genuine one. It is kept here, with the
    reason and where it came from, so ``status`` shows it and an operator can
    judge it; the rest of its batch or file goes on.
    """

    tx_id = models.UUIDField(help_text="The id the row carried (a forgery may reuse one).")
    producer = models.CharField(max_length=200)
    sequence = models.BigIntegerField()
    tx_name = models.CharField(max_length=128)
    action = models.CharField(max_length=1)
    signature = models.TextField(blank=True, default="")
    reason = models.TextField()
    source = models.CharField(max_length=300, help_text="The copy's source alias or the file.")
    row = models.TextField(help_text="The row as received (its identity fields, JSON).")
    received_datetime = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("producer", "sequence")
        indexes = [models.Index(fields=("tx_id",), name="syncrouter_refused_tx")]

    def __str__(self):
        return f"{self.producer}#{self.sequence} {self.tx_name}: {self.reason}"
