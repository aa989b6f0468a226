"""Transactions the next hop refused: what a copy or an export could not send, and why.

A refusal affects only what it must: the refused transaction, the rest of its
producer database transaction (which travels whole or not at all) and, after a
sequence clash, that producer's later transactions (they continue a history the
target does not hold). Other rows and other producers go on.

Nothing refused is marked sent, so every later copy or export tries it again:
a cause fixed on either side (a clash settled on the target, a value corrected)
lets it through without anyone having to remember it. What keeps that from
being a silent retry loop is the ledger (``Refusal``, on the sending node):
each attempt that refuses a transaction again updates its row, ends with
``CopyRefused`` (exit code 4 from the command), and ``status`` lists it; the
row is deleted when the transaction gets through.
"""
from __future__ import annotations

from dataclasses import dataclass

from django.db import connections, transaction
from django.utils import timezone

from ..models import Refusal
from ..params import chunks

#: How many refusals a message names one by one; ``status`` lists them all.
NAMED = 10


@dataclass
class Refused:
    """One transaction the target would not take, and how many wait behind it."""

    id: object
    producer: str
    sequence: int
    reason: str
    #: Transactions not sent because of this one: the rest of its producer database
    #: transaction and, after a sequence clash, the producer's later transactions.
    held_back: int = 0

    def __str__(self) -> str:
        behind = f" ({self.held_back} more held back behind it)" if self.held_back else ""
        return f"{self.producer}#{self.sequence}: {self.reason}{behind}"


def describe(refused: list[Refused]) -> str:
    """The refusals one per line, at most ``NAMED`` of them."""
    lines = [f"  {cause}" for cause in refused[:NAMED]]
    if len(refused) > NAMED:
        lines.append(f"  ... and {len(refused) - NAMED} more "
                     "(see 'manage.py syncrouter status')")
    return "\n".join(lines)


class Ledger:
    """The ``Refusal`` rows of one sending alias towards one target.

    A copy settles each batch in the sending alias's transaction that marks the
    batch sent, so the ledger always agrees with the marks.
    """

    def __init__(self, alias: str, target: str):
        self.alias, self.target = alias, target
        self.rows = Refusal.objects.using(alias)
        #: Ids refused before, by an earlier attempt: cleared when they get through.
        self.outstanding = set(self.rows.filter(target=target).order_by()
                               .values_list("tx_id", flat=True))

    def settle(self, other_ids, refused: list[Refused]) -> None:
        """Record (again) the ``refused`` causes; forget ``other_ids``, the transactions
        of the attempt that are no cause (any more): sent, or held back by another."""
        through = [tx_id for tx_id in other_ids if tx_id in self.outstanding]
        if not through and not refused:
            return
        now = timezone.now()
        with transaction.atomic(using=self.alias):
            for chunk in chunks(through, connections[self.alias]):
                self.rows.filter(target=self.target, tx_id__in=chunk).delete()
            self.rows.bulk_create(
                [Refusal(tx_id=cause.id, producer=cause.producer, sequence=cause.sequence,
                         target=self.target, reason=cause.reason, held_back=cause.held_back,
                         first_refused=now, last_refused=now) for cause in refused],
                update_conflicts=True, unique_fields=["tx_id", "target"],
                update_fields=["reason", "held_back", "last_refused"])
        self.outstanding.difference_update(through)
        self.outstanding.update(cause.id for cause in refused)
