from django.db import models


class Refusal(models.Model):
    """A transaction the next hop refused, recorded on the node that tried to send it.

    One row per cause: the transaction the target would not take (a value its
    columns cannot hold, a sequence number it holds under another id), with the
    number of transactions held back behind it (the rest of its producer database
    transaction; after a sequence clash, the producer's later transactions too).

    None of them is marked sent: every later copy or export tries them again, so
    a cause fixed on either side lets them through, and the row here is deleted
    when its transaction gets through. Until then each attempt refuses them
    again, updates ``reason`` and ``last_refused``, and ends with exit code 4;
    ``manage.py syncrouter status`` lists what is refused.
    """

    tx_id = models.UUIDField(help_text="The refused transaction.")
    producer = models.CharField(max_length=200)
    sequence = models.BigIntegerField()
    target = models.CharField(
        max_length=200, help_text="Node that refused it; 'file' for a row export left out.")
    reason = models.TextField()
    held_back = models.BigIntegerField(
        default=0, help_text="Transactions not sent because of this one in the last attempt.")
    first_refused = models.DateTimeField()
    last_refused = models.DateTimeField()

    class Meta:
        ordering = ("target", "producer", "sequence")
        constraints = [models.UniqueConstraint(fields=("tx_id", "target"),
                                               name="syncrouter_refusal_tx_target")]

    def __str__(self):
        return f"{self.producer}#{self.sequence} refused by {self.target}: {self.reason}"
