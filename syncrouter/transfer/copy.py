"""Direct copy between two Django database aliases.

The copy runs in batches in (producer, sequence) order, holding one batch in
memory at a time. For each batch it first commits the rows on the target, then
marks them consumed on the source, and never the other way round:

- a crash (or lost connection) after the target commit and before the source
  mark leaves rows on the target that the source still calls pending; the
  retry finds them there by their transaction id, counts them as already
  present and marks them. Nothing is duplicated: the target refuses a second
  row with the same id.
- the reverse order would let a crash leave a row marked consumed on the source
  that never reached the target: it would never be sent again, a silent loss.

On PostgreSQL targets a batch goes in with COPY (see ``pgcopy``); elsewhere
with one bulk INSERT.
"""
from __future__ import annotations

import logging
from typing import Callable, NamedTuple

from django.db import IntegrityError, InterfaceError, OperationalError, connections, models
from django.db import transaction
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


class CopyInterrupted(SyncError):
    """One side of a copy failed at the connection level (network cut, server restart, lock).

    Batches committed before the break are on the target and marked on the
    source; running the copy again finishes the rest. ``alias`` is the side that
    failed, ``result`` what was done before, ``__cause__`` the database error.
    """

    def __init__(self, message: str, alias: str, result: CopyResult):
        super().__init__(message)
        self.alias = alias
        self.result = result


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


def identity_clash(target: str, producer: str, sequence: int, held_id, source_id) -> SyncError:
    return SyncError(
        f"{target!r} already holds {producer}#{sequence} as transaction {held_id}, but the "
        f"source has {source_id} under the same number. The producer reused its sequence "
        "(restored from a backup?); nothing in this batch was copied.")


def incoming_hops(row, target_name: str) -> str:
    """The row's hop list with the target appended, as stored on the target."""
    return ser.dumps(ser.loads(row.hops) + [target_name])


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
            raise identity_clash(target, producer, sequence, tx_id, wanted[(producer, sequence)])


def _insert_batch(rows, target: str, target_name: str) -> CopyResult:
    """Portable path: one SELECT for the ids already there, one bulk INSERT for the rest."""
    from ..models import IncomingTransaction

    present = set(IncomingTransaction.objects.using(target).filter(
        id__in=[row.id for row in rows]).values_list("id", flat=True))
    new = [row for row in rows if row.id not in present]
    if new:
        _check_identity_clash(IncomingTransaction, target, new)
    now = timezone.now()
    IncomingTransaction.objects.using(target).bulk_create([
        IncomingTransaction(**{f: getattr(row, f) for f in IDENTITY_FIELDS},
                            hops=incoming_hops(row, target_name), received_datetime=now)
        for row in new])
    return CopyResult(len(new), len(present))


def _copy_batch(rows, target: str, target_name: str) -> CopyResult:
    """Write one batch on the target in one database transaction.

    A concurrent copy of the same rows can slip in between the presence check
    and the insert; the batch is then rolled back and tried once more.
    """
    if connections[target].vendor == "postgresql":
        from .pgcopy import copy_batch as write
    else:
        write = _insert_batch
    for attempt in (1, 2):
        try:
            with transaction.atomic(using=target):
                return write(rows, target, target_name)
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
        ``is_consumed_server``, with ``consumed_datetime`` and ``consumer``), so
        a crash or a lost connection at any point loses and duplicates nothing.
        Returns ``CopyResult(copied, already_present)``; ``progress`` is called
        with the running totals after each batch. An ``OperationalError`` or
        ``InterfaceError`` (a cut connection, say) raises ``CopyInterrupted``
        naming the alias; the committed batches stay done.
        """
        if using == self.db:
            raise SyncError(f"Cannot copy transactions from alias {using!r} to itself.")
        target = conf.node_for_alias(using)
        flag = "is_consumed_middleman" if target.role == "middleman" else "is_consumed_server"
        copied = present = 0
        side = self.db
        # Plain named tuples: building model instances cost ~15% of the whole copy.
        pages = keyset_pages(self.values_list(*IDENTITY_FIELDS, "hops", named=True),
                             batch_size or conf.batch_size())
        try:
            for rows in pages:
                side = using
                result = _copy_batch(rows, using, target.name)
                side = self.db
                with transaction.atomic(using=self.db):
                    self.model.objects.using(self.db).filter(id__in=[r.id for r in rows]).update(
                        **{flag: True}, consumed_datetime=timezone.now(), consumer=target.name)
                copied += result.copied
                present += result.already_present
                if progress:
                    progress(CopyResult(copied, present))
        except (OperationalError, InterfaceError) as exc:
            done = CopyResult(copied, present)
            logger.error("Copy from %s to %s interrupted on %s after %d copied: %s",
                         self.db, using, side, copied, exc)
            raise CopyInterrupted(
                f"Copy from {self.db!r} to {using!r} interrupted by alias {side!r}: "
                f"{type(exc).__name__}: {exc}. {copied} transactions were "
                f"copied and marked before the break ({present} already there); run the copy "
                "again to finish.", side, done) from exc
        logger.info("Copied %d transactions from %s to %s (%d already there).",
                    copied, self.db, using, present)
        return CopyResult(copied, present)
