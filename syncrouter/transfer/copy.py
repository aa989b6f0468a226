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

A row the target refuses stops nothing else (see ``refusals``): it is left
out with the rest of its producer database transaction, after a sequence clash
with its producer's later rows too, and everything else is copied and marked.
The refusals are recorded on the source, the copy ends with ``CopyRefused``,
and the next copy tries them again.

On PostgreSQL targets a batch goes in with COPY (see ``pgcopy``); elsewhere
with one bulk INSERT.
"""
from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable, Iterator
from functools import lru_cache

from django.db import (
    DatabaseError,
    DataError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    connections,
    models,
    transaction,
)
from django.utils import timezone

from .. import conf, trust
from ..capture.seal import seal
from ..exceptions import SyncError
from ..models import IncomingTransaction
from ..params import chunks
from . import pgcopy
from .refusals import Ledger, Refused, describe
from .rows import (
    IDENTITY_FIELDS,
    CopyResult,
    incoming_hops,
    mark_sent,
    same_group,
    sent_flag,
    transaction_groups,
)

logger = logging.getLogger("syncrouter.transfer")

#: A copy of at least this many rows into a PostgreSQL inbox ends with ANALYZE
#: (``pgcopy.analyze_inbox``), so that replay's queries are planned for its new size.
ANALYZE_AFTER = 10_000


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


class CopyRefused(SyncError):
    """The target refused some transactions; everything else was copied and marked.

    ``refused`` lists each refused transaction with its reason and how many
    transactions it holds back; ``result`` is what was copied. The refused ones
    stay pending on the source, recorded in its ``Refusal`` ledger, and the next
    copy tries them again.
    """

    def __init__(self, message: str, result: CopyResult, refused: list[Refused]):
        super().__init__(message)
        self.result = result
        self.refused = refused


def keyset_pages(queryset, size: int, *, whole_groups: bool = False) -> Iterator[list]:
    """Yield lists of rows in (producer, sequence) order without OFFSET or open cursors.

    Rows updated while paging (say, marked consumed) are neither skipped nor repeated.

    With ``whole_groups`` no page ends inside a client database transaction (a
    run of one producer's rows sharing ``db_transaction_id``): a page goes on
    past ``size`` to the end of the group of its ``size``-th row, so a group
    larger than ``size`` makes one page. Rows the queryset leaves out do not
    matter: the group is cut nowhere within what the queryset returns.

    Only rows that can travel are paged: of the outbox, the sealed ones
    (``OutboxQuerySet.transferable``).
    """
    pages = _pages(queryset.transferable().order_by("producer", "sequence"), size)
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
        if len(page) >= size and not same_group(page[-1], row):
            yield page
            page = []
        page.append(row)
    if page:
        yield page


def identity_clash(target: str, producer: str, sequence: int, held_id, source_id) -> str:
    return (f"{target!r} already holds {producer}#{sequence} as transaction {held_id}, but "
            f"this is transaction {source_id} under the same number: the producer reused its "
            "sequence (restored from a backup?)")


@lru_cache(maxsize=None)
def _char_limits() -> tuple[tuple[str, int], ...]:
    """(field, max_length) of the inbox's character columns that travel."""
    fields = (IncomingTransaction._meta.get_field(name) for name in IDENTITY_FIELDS)
    return tuple((f.attname, f.max_length) for f in fields
                 if isinstance(f, models.CharField) and f.max_length)


#: Travelling text that PostgreSQL must store: it refuses a NUL character in text.
_TEXT = ("tx", "tx_name", "tx_pk", "producer", "hostname", "action", "hops")


def value_problem(row, vendor: str | None) -> str | None:
    """Why an inbox on ``vendor`` cannot hold ``row``, or None.

    ``vendor`` None means any inbox (a file's rows may go anywhere). Checked
    here, for every target alike, rather than left to the database: SQLite
    would store an over-long value that the next hop, on PostgreSQL, refuses.
    """
    for name, limit in _char_limits():
        length = len(getattr(row, name))
        if length > limit:
            return f"{name} is {length} characters long; the inbox column holds {limit}"
    if vendor in (None, "postgresql"):
        for name in _TEXT:
            if "\x00" in getattr(row, name):
                return f"{name} holds a NUL character, which PostgreSQL cannot store in text"
    return None


class Batch:
    """The rows of one batch and, once written, which of them the target refused.

    ``blocked`` is shared by the batches of one copy: producer -> the refusal its
    later transactions wait behind (a sequence clash). Clashes found in this
    batch join it only when the batch is done (``done``), so a batch tried
    again starts from the same state.
    """

    def __init__(self, rows: list, blocked: dict[str, Refused]):
        self.rows, self.blocked = rows, blocked
        self.refused: dict = {}  # row id -> the Refused it is, or is held back by
        self.clashed: dict[str, Refused] = {}
        self.result = CopyResult(0, 0)

    def refuse(self, row, reason: str) -> Refused:
        """Refuse ``row`` for ``reason``; rows it held back for another reason now wait
        behind this one (a clash outranks a bad value: it holds back what follows)."""
        cause = Refused(row.id, row.producer, row.sequence, reason)
        old = self.refused.get(row.id)
        if old is not None and old.id == row.id:
            for row_id, held_by in self.refused.items():
                if held_by is old:
                    self.refused[row_id] = cause
        self.refused[row.id] = cause
        return cause

    def screen(self, problem: Callable[[object], str | None]) -> None:
        """Refuse the rows of blocked producers, and each row for which ``problem`` gives
        a reason (``value_problem``: a value the target cannot hold)."""
        blocked = {**self.blocked, **self.clashed}
        for row in self.rows:
            cause = blocked.get(row.producer) if blocked else None
            if cause is not None:
                self.refused.setdefault(row.id, cause)
            elif not self.refused or row.id not in self.refused:  # ids hash slowly
                reason = problem(row)
                if reason:
                    self.refuse(row, reason)
        self._whole_groups()

    def refuse_clashes(self, target: str, clashes) -> set:
        """Refuse each clashing producer's rows from its first clash on; the ids refused.

        ``clashes``: (producer, sequence, id held on the target, id here), the
        lowest clashing sequence of each producer.
        """
        before = set(self.refused)
        for producer, sequence, held_id, source_id in clashes:
            row = next(row for row in self.rows if row.id == source_id)
            cause = self.clashed[producer] = self.refuse(
                row, identity_clash(target, producer, sequence, held_id, source_id))
            for later in self.rows:
                if later.producer == producer and later.sequence > sequence:
                    self.refused.setdefault(later.id, cause)
        self._whole_groups()
        return set(self.refused) - before

    def _whole_groups(self) -> None:
        """A producer database transaction travels whole: refuse the rest of a refused one."""
        if not self.refused:
            return
        causes = {}
        for row in self.rows:
            if row.id in self.refused:
                causes.setdefault((row.producer, row.db_transaction_id), self.refused[row.id])
        for row in self.rows:
            cause = causes.get((row.producer, row.db_transaction_id))
            if cause is not None:
                self.refused.setdefault(row.id, cause)

    def sendable(self) -> list:
        if not self.refused:
            return self.rows
        return [row for row in self.rows if row.id not in self.refused]

    def part(self, rows: list) -> "Batch":
        """A batch of some of these rows, refusing what this one refuses of them."""
        part = Batch(rows, {**self.blocked, **self.clashed})
        part.refused = {row.id: self.refused[row.id] for row in rows if row.id in self.refused}
        return part

    def join(self, part: "Batch") -> None:
        self.refused.update(part.refused)
        self.clashed.update(part.clashed)
        self.result = CopyResult(self.result.copied + part.result.copied,
                                 self.result.already_present + part.result.already_present)

    def done(self) -> list[Refused]:
        """Settle the batch: count what each refusal holds back, block clashed producers;
        the refusals this batch touched."""
        self.blocked.update(self.clashed)
        touched: dict[int, Refused] = {}
        for row_id, cause in self.refused.items():
            if cause.id != row_id:
                cause.held_back += 1
            touched[id(cause)] = cause
        return list(touched.values())


def _identity_clashes(incoming, target: str, rows) -> list[tuple]:
    """(producer, sequence, id held, id here) of the first row of each producer whose
    (producer, sequence) the target already holds under another id.

    That happens when a producer's database is restored from a backup and hands
    out old sequence numbers again: ignoring it would silently drop data.
    """
    if not rows:
        return []
    wanted = {(row.producer, row.sequence): row.id for row in rows}
    held = incoming.objects.using(target).filter(
        producer__in={row.producer for row in rows},
        sequence__gte=min(r.sequence for r in rows),
        sequence__lte=max(r.sequence for r in rows)).values_list("producer", "sequence", "id")
    first: dict[str, tuple] = {}
    for producer, sequence, tx_id in held:
        source_id = wanted.get((producer, sequence), tx_id)
        if source_id != tx_id and (producer not in first or sequence < first[producer][1]):
            first[producer] = (producer, sequence, tx_id, source_id)
    return [first[producer] for producer in sorted(first)]


def _clashes_of_screened(batch: Batch, target: str) -> None:
    """Look for clashes among the rows screened out for their values too: the writers
    only see the rows they write, and a clash blocks the producer's later rows."""
    screened = [row for row in batch.rows
                if row.id in batch.refused and row.producer not in batch.blocked]
    if screened:
        batch.refuse_clashes(target, _identity_clashes(IncomingTransaction, target, screened))


def _id_chunks(rows, alias: str) -> list[list]:
    """The rows' ids, in lists that one statement on ``alias`` can take as parameters
    (a batch that holds a large client database transaction can run to thousands)."""
    return list(chunks([row.id for row in rows], connections[alias]))


def _insert_batch(batch: Batch, target: str, target_name: str) -> CopyResult:
    """Portable path: a SELECT for the ids already there, one bulk INSERT for the rest."""
    rows = batch.sendable()
    present = set()
    for ids in _id_chunks(rows, target):
        present.update(IncomingTransaction.objects.using(target).filter(
            id__in=ids).values_list("id", flat=True))
    new = [row for row in rows if row.id not in present]
    refused = batch.refuse_clashes(target, _identity_clashes(IncomingTransaction, target, new))
    new = [row for row in new if row.id not in refused]
    now = timezone.now()
    IncomingTransaction.objects.using(target).bulk_create([
        IncomingTransaction(**{f: getattr(row, f) for f in IDENTITY_FIELDS},
                            hops=incoming_hops(row, target_name), received_datetime=now)
        for row in new])
    return CopyResult(len(new), len(present))


#: SQLSTATE classes of a refusal of the data, not of the connection: data exception,
#: integrity constraint, program limit (an index entry too large, a string too long).
_REFUSING_SQLSTATES = ("22", "23", "54")


def refused_by_database(exc: Exception) -> bool:
    """Whether ``exc`` is the database refusing the data rather than a failing connection."""
    if isinstance(exc, (DataError, IntegrityError)):
        return True
    sqlstate = getattr(exc.__cause__, "sqlstate", None) or ""
    return isinstance(exc, DatabaseError) and sqlstate[:2] in _REFUSING_SQLSTATES


def write_batch(batch: Batch, target: str, target_name: str) -> Batch:
    """Write one batch on the target in one database transaction, refusing only what
    the target cannot take; ``batch.refused`` and ``batch.result`` say what happened.

    Values the inbox cannot hold and clashing sequences are found before writing.
    Should the database refuse the batch all the same (a limit not foreseen, a
    concurrent copy slipping in between check and insert), it is written again
    one producer database transaction at a time, each in a savepoint and tried
    twice; one refused twice is refused with the database's reason.
    """
    connection = connections[target]
    if connection.vendor == "postgresql":
        write = pgcopy.copy_batch
    else:
        write = _insert_batch
    batch.screen(lambda row: value_problem(row, connection.vendor))
    _clashes_of_screened(batch, target)
    screened, clashed = dict(batch.refused), dict(batch.clashed)
    error = _attempt(batch, write, target, target_name)
    if error is None:
        return batch
    logger.info("%s refused a batch (%s); writing it one producer database transaction "
                "at a time.", target, error)
    batch.refused, batch.clashed = screened, clashed
    with transaction.atomic(using=target):
        for group in transaction_groups(batch.sendable()):
            batch.join(_write_group(batch.part(group), write, target, target_name))
    return batch


def _attempt(part: Batch, write, target: str, target_name: str) -> DatabaseError | None:
    """Write ``part`` in one transaction (a savepoint inside the caller's); None, or the
    error with which the target refused it (any other error is raised)."""
    try:
        with transaction.atomic(using=target):
            part.result = write(part, target, target_name)
    except DatabaseError as exc:
        if not refused_by_database(exc):
            raise
        return exc
    return None


def _write_group(part: Batch, write, target: str, target_name: str) -> Batch:
    """Write one producer database transaction in a savepoint; refuse it if the target
    refuses it twice."""
    vendor = connections[target].vendor
    part.screen(lambda row: value_problem(row, vendor))  # its producer may have clashed
    if not part.sendable():
        return part
    for _ in range(2):
        error = _attempt(part, write, target, target_name)
        if error is None:
            return part
        part.refused, part.clashed = {}, {}  # all of it was sendable: back to that
    reason = " ".join(str(error).split())  # PostgreSQL's DETAIL and HINT on one line
    cause = part.refuse(part.rows[0], f"{target_name} refused it "
                                      f"({type(error).__name__}: {reason})")
    for row in part.rows[1:]:
        part.refused[row.id] = cause
    return part


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
        naming the alias; the committed batches stay done. Rows the target
        refuses are left pending and recorded, the rest is copied, and the copy
        then raises ``CopyRefused`` naming each refused producer and sequence.
        """
        if using == self.db:
            raise SyncError(f"Cannot copy transactions from alias {using!r} to itself.")
        target = conf.node_for_alias(using)
        flag = sent_flag(target)
        copied = present = 0
        side = self.db
        ledger = Ledger(self.db, target.name)
        blocked: dict[str, Refused] = {}
        refused: dict[int, Refused] = {}
        # Plain named tuples: building model instances cost ~15% of the whole copy.
        pages = keyset_pages(self.values_list(*IDENTITY_FIELDS, "hops", named=True),
                             batch_size or conf.batch_size(), whole_groups=True)
        try:
            for rows in pages:
                side = using
                admitted = trust.screen(rows, using, f"copy from alias {self.db!r}")
                batch = write_batch(Batch(admitted, blocked), using, target.name)
                side = self.db
                touched = batch.done()
                causes = {cause.id for cause in touched}
                # Rows the target's device registry refused are on record there
                # (``RefusedTransaction``): sent, like the rows it took.
                kept = {row.id for row in admitted} if len(admitted) < len(rows) else None
                screened_out = [row for row in rows if row.id not in kept] if kept is not None \
                    else []
                with transaction.atomic(using=self.db):
                    mark_sent(self.model, self.db,
                              [row.id for row in [*batch.sendable(), *screened_out]],
                              **{flag: True}, consumed_datetime=timezone.now(),
                              consumer=target.name)
                    ledger.settle([row.id for row in rows if row.id not in causes]
                                  if ledger.outstanding else (), touched)
                refused.update((id(cause), cause) for cause in touched)
                copied += batch.result.copied
                present += batch.result.already_present
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
            pgcopy.analyze_inbox(using)
        logger.info("Copied %d transactions from %s to %s (%d already there).",
                    copied, self.db, using, present)
        result = CopyResult(copied, present)
        if refused:
            causes = sorted(refused.values(), key=lambda cause: (cause.producer, cause.sequence))
            held = sum(cause.held_back for cause in causes)
            message = (f"Copy from {self.db!r} to {using!r}: {copied} copied, {present} already "
                       f"there; {target.name} refused {len(causes)} transactions and {held} "
                       "more were held back behind them. They stay pending here and the next "
                       "copy tries them again:\n" + describe(causes))
            logger.warning("%s", message)
            raise CopyRefused(message, result, causes)
        return result

    def transferable(self) -> "TransferQuerySet":
        """These rows as far as they can travel now (all of them: see ``OutboxQuerySet``)."""
        return self


class OutboxQuerySet(TransferQuerySet):
    """``OutgoingTransaction.objects``: every read or update seals the alias's outbox first.

    So whoever goes through the ORM (copy, export, ``status``, the admin, a script)
    finds every committed row numbered; only rows of a transaction still open on
    the same connection may show ``sequence`` None (see ``capture.seal``). On
    SQLite, where capture numbers rows itself, the seal finds nothing: one query.
    """

    _sealed = False  # set on querysets made by ``transferable``: sealed once is enough

    def _clone(self):
        clone = super()._clone()
        clone._sealed = self._sealed
        return clone

    def _seal(self) -> None:
        if not self._sealed and self._result_cache is None:
            seal(self.db)

    def transferable(self) -> "OutboxQuerySet":
        """Seal now; then these rows less the unsealed ones (of transactions still open
        on this connection, or committed since), read without sealing again."""
        seal(self.db)
        clone = self.filter(sequence__isnull=False)
        clone._sealed = True
        return clone

    def _fetch_all(self):
        self._seal()
        super()._fetch_all()

    def iterator(self, *args, **kwargs):
        self._seal()
        return super().iterator(*args, **kwargs)

    def count(self) -> int:
        self._seal()
        return super().count()

    def exists(self) -> bool:
        self._seal()
        return super().exists()

    def aggregate(self, *args, **kwargs) -> dict:
        self._seal()
        return super().aggregate(*args, **kwargs)

    def update(self, **kwargs) -> int:
        self._seal()
        return super().update(**kwargs)
