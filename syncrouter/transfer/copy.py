"""Direct copy between two Django database aliases.

The copy runs in batches in (producer, sequence) order, holding one batch and
the page read after it in memory at a time. A batch never ends inside a client
database transaction (rows sharing ``db_transaction_id``): it runs on past the
batch size to the end of that group. The target commits a batch as a whole,
so at any moment it holds all of a group that the copy sent, or none of it;
replay there never waits on the other half of a group after a crash or a cut.

For each batch the copy first commits the rows on the target, then marks them
consumed on the source, and never the other way round:

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

import itertools
import logging
from typing import Callable, Iterable, Iterator, NamedTuple

from django.db import IntegrityError, InterfaceError, OperationalError, connections, models
from django.db import transaction
from django.utils import timezone

from .. import conf, serialization as ser, trust
from ..exceptions import SyncError

logger = logging.getLogger("syncrouter.transfer")

#: Fields a transaction keeps on every hop.
IDENTITY_FIELDS = ("id", "tx", "tx_name", "tx_pk", "producer", "hostname", "sequence",
                   "db_transaction_id", "hlc", "action", "timestamp", "signature")


#: A copy of at least this many rows into a PostgreSQL inbox ends with ANALYZE
#: (``pgcopy.analyze_inbox``), so that replay's queries are planned for its new size.
ANALYZE_AFTER = 10_000


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


def keyset_pages(queryset, size: int, *, whole_groups: bool = False) -> Iterator[list]:
    """Yield lists of rows in (producer, sequence) order without OFFSET or open cursors.

    Rows updated while paging (say, marked consumed) are neither skipped nor repeated.

    With ``whole_groups`` no page ends inside a client database transaction (a
    run of one producer's rows sharing ``db_transaction_id``): a page goes on
    past ``size`` to the end of the group of its ``size``-th row, so a group
    larger than ``size`` makes one page. Rows the queryset leaves out do not
    matter: the group is cut nowhere within what the queryset returns.
    """
    pages = _pages(queryset.order_by("producer", "sequence"), size)
    return _whole_groups(pages, size) if whole_groups else pages


def _pages(queryset, size: int) -> Iterator[list]:
    """Pages of ``size`` rows; a shorter one is the last, as nothing came after it."""
    rows = list(queryset[:size])
    while rows:
        yield rows
        if len(rows) < size:
            return
        rows = _after(queryset, rows[-1], size)


def _after(queryset, last, size: int) -> list:
    """The first ``size`` rows after ``last`` in (producer, sequence) order.

    Two queries, the rest of ``last``'s producer and then the producers after
    it, rather than one with ``producer > p OR (producer = p AND sequence > s)``:
    each is a plain range on the (producer, sequence) indexes that every
    database seeks straight to, while PostgreSQL takes the OR as a filter on
    an index read from its start, through the entries of every row paged (and
    marked) before, so each page cost more than the last. A row-value
    comparison ``(producer, sequence) > (p, s)`` is one range on those two,
    but MariaDB uses no index for it.
    """
    rows = list(queryset.filter(producer=last.producer, sequence__gt=last.sequence)[:size])
    if len(rows) < size:
        rows += queryset.filter(producer__gt=last.producer)[:size - len(rows)]
    return rows


def _whole_groups(pages: Iterable[list], size: int) -> Iterator[list]:
    """Cut the rows of ``pages`` again, each page running on to the end of a group."""
    page: list = []
    for row in itertools.chain.from_iterable(pages):
        if len(page) >= size and not _same_group(page[-1], row):
            yield page
            page = []
        page.append(row)
    if page:
        yield page


def _same_group(row, other) -> bool:
    return (row.producer, row.db_transaction_id) == (other.producer, other.db_transaction_id)


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


def _id_chunks(rows, alias: str) -> list[list]:
    """The rows' ids, in lists that one statement on ``alias`` can take as parameters.

    A batch that holds a large client database transaction can run to
    thousands of rows, past what some SQLite builds accept (Django assumes 999);
    each list leaves room for 100 more parameters, the statement's own values.
    """
    ids = [row.id for row in rows]
    limit = connections[alias].features.max_query_params
    size = limit - 100 if limit else max(len(ids), 1)
    return [ids[start:start + size] for start in range(0, len(ids), size)]


def _insert_batch(rows, target: str, target_name: str) -> CopyResult:
    """Portable path: a SELECT for the ids already there, one bulk INSERT for the rest."""
    from ..models import IncomingTransaction

    present = set()
    for ids in _id_chunks(rows, target):
        present.update(IncomingTransaction.objects.using(target).filter(
            id__in=ids).values_list("id", flat=True))
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

        Idempotent: rows already on the target are not copied again. Each batch
        holds whole client database transactions (one larger than ``batch_size``
        goes alone, whole) and is committed on the target before it is marked on
        the source (``is_consumed_middleman`` if the target's role is middleman, else
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
                             batch_size or conf.batch_size(), whole_groups=True)
        try:
            for rows in pages:
                side = using
                admitted = trust.screen(rows, using, f"copy from alias {self.db!r}")
                result = _copy_batch(admitted, using, target.name)
                side = self.db
                self._mark_copied(rows, **{flag: True}, consumed_datetime=timezone.now(),
                                  consumer=target.name)
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
        if copied >= ANALYZE_AFTER and connections[using].vendor == "postgresql":
            from .pgcopy import analyze_inbox

            analyze_inbox(using)
        logger.info("Copied %d transactions from %s to %s (%d already there).",
                    copied, self.db, using, present)
        return CopyResult(copied, present)

    def _mark_copied(self, rows, **values) -> None:
        """Set ``values`` on the source rows of one batch, in one database transaction."""
        with transaction.atomic(using=self.db):
            for ids in _id_chunks(rows, self.db):
                self.model.objects.using(self.db).filter(id__in=ids).update(**values)
