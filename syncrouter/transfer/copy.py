"""Direct copy between two Django database aliases.

The copy runs in batches in (producer, sequence) order. For each batch it first
commits the rows on the target, then marks them consumed on the source. A crash
between the two leaves rows on the target that the source still calls pending;
the retry finds them there by their transaction id, counts them as already
present and marks them. Nothing is lost (source marks follow target commits)
and nothing is duplicated (the target refuses a second row with the same id).
"""
from __future__ import annotations

import logging
from typing import Callable, NamedTuple

from django.db import IntegrityError, models, transaction
from django.db.models import Q
from django.utils import timezone

from .. import conf, serialization as ser
from ..exceptions import SyncError

logger = logging.getLogger("syncrouter.transfer")

#: Fields a transaction keeps on every hop.
IDENTITY_FIELDS = ("id", "tx", "tx_name", "tx_pk", "producer", "hostname", "sequence",
                   "db_transaction_id", "hlc", "action", "timestamp")


class CopyResult(NamedTuple):
    copied: int
    already_present: int


def keyset_pages(queryset, size: int):
    """Yield lists of rows in (producer, sequence) order without OFFSET or open cursors.

    Rows updated while paging (say, marked consumed) are neither skipped nor repeated.
    """
    queryset = queryset.order_by("producer", "sequence")
    last = None
    while True:
        page = queryset
        if last is not None:
            page = page.filter(Q(producer__gt=last[0]) | Q(producer=last[0], sequence__gt=last[1]))
        rows = list(page[:size])
        if not rows:
            return
        yield rows
        last = (rows[-1].producer, rows[-1].sequence)


def _check_identity_clash(incoming, target: str, rows) -> None:
    """Refuse rows whose (producer, sequence) the target already holds under another id.

    That happens when a producer's database is restored from a backup and hands
    out old sequence numbers again: ignoring it would silently drop data.
    """
    producers = {row.producer for row in rows}
    wanted = {(row.producer, row.sequence): row.id for row in rows}
    held = incoming.objects.using(target).filter(
        producer__in=producers, sequence__gte=min(r.sequence for r in rows),
        sequence__lte=max(r.sequence for r in rows)).values_list("producer", "sequence", "id")
    for producer, sequence, tx_id in held:
        if wanted.get((producer, sequence), tx_id) != tx_id:
            raise SyncError(
                f"{target!r} already holds {producer}#{sequence} as transaction {tx_id}, but the "
                f"source has {wanted[(producer, sequence)]} under the same number. The producer "
                "reused its sequence (restored from a backup?); nothing in this batch was copied.")


def _copy_batch(rows, target: str, target_name: str) -> CopyResult:
    from ..models import IncomingTransaction

    ids = [row.id for row in rows]
    now = timezone.now()
    for attempt in (1, 2):
        try:
            with transaction.atomic(using=target):
                present = set(IncomingTransaction.objects.using(target).filter(id__in=ids)
                              .values_list("id", flat=True))
                new = [row for row in rows if row.id not in present]
                if new:
                    _check_identity_clash(IncomingTransaction, target, new)
                IncomingTransaction.objects.using(target).bulk_create([
                    IncomingTransaction(
                        **{f: getattr(row, f) for f in IDENTITY_FIELDS},
                        hops=ser.dumps(ser.loads(row.hops) + [target_name]),
                        received_datetime=now)
                    for row in new])
            return CopyResult(len(new), len(present))
        except IntegrityError:
            if attempt == 2:
                raise
            logger.info("Another copy wrote to %s at the same time; retrying the batch.", target)


class TransferQuerySet(models.QuerySet):
    def copy_to_incoming_transaction(
        self, using: str, batch_size: int | None = None,
        progress: Callable[[CopyResult], None] | None = None,
    ) -> CopyResult:
        """Copy exactly these transactions into ``IncomingTransaction`` on alias ``using``.

        Idempotent: rows already on the target are not copied again. Each batch is
        committed on the target before it is marked on the source
        (``is_consumed_middleman`` if the target's role is middleman, else
        ``is_consumed_server``, with ``consumed_datetime`` and ``consumer``).
        Returns ``CopyResult(copied, already_present)``; ``progress`` is called
        with the running totals after each batch.
        """
        if using == self.db:
            raise SyncError(f"Cannot copy transactions from alias {using!r} to itself.")
        target = conf.node_for_alias(using)
        flag = "is_consumed_middleman" if target.role == "middleman" else "is_consumed_server"
        copied = present = 0
        for rows in keyset_pages(self, batch_size or conf.batch_size()):
            result = _copy_batch(rows, using, target.name)
            with transaction.atomic(using=self.db):
                self.model.objects.using(self.db).filter(id__in=[r.id for r in rows]).update(
                    **{flag: True}, consumed_datetime=timezone.now(), consumer=target.name)
            copied += result.copied
            present += result.already_present
            if progress:
                progress(CopyResult(copied, present))
        logger.info("Copied %d transactions from %s to %s (%d already there).",
                    copied, self.db, using, present)
        return CopyResult(copied, present)
