"""Number unsealed outbox rows: sequences in an order replay can trust, and no hot row.

On PostgreSQL capture writes its outbox rows *unsealed*: no ``sequence`` yet, a
``write_order`` from a PostgreSQL sequence (``nextval`` takes no row lock and
makes no transaction wait on another), a provisional clock. The user's
transaction never touches the producer's ``ProducerClock`` row, so writers that
plain Django runs side by side still run side by side, and no lock-order
dependency between their writes is added. (On SQLite, one writer at a time,
capture numbers its rows itself, as ``outbox.record_many`` says; they are never
unsealed, and ``seal`` finds nothing.)

``seal(alias)`` numbers the rows later, in a short transaction of its own that
holds the clock row: only sealers ever wait on it. It runs before anything reads
the outbox through ``OutgoingTransaction.objects`` (copy, export, status, the
admin, a script's query). It can only see rows of committed transactions, and
leaves those of a transaction still open on its own connection for later.

**Why the order is right.** The committed transactions a seal finds are numbered
by their last ``write_order``, each transaction's rows together, in write order.
Capture writes the outbox row after the data write it records. A transaction B
that depends on a transaction A (B changed a row A changed, or read what A wrote
before writing) could do so only after A committed: PostgreSQL makes B's write
wait on A's row lock, and B's snapshot shows A only once A has committed. So B's
last captured write took its ``write_order`` after every one of A's, and B is
numbered after A. Transactions that touch nothing in common replay to the same
state in either order. Across seals: what one seal numbers had committed before
it looked; what a later seal finds had not, so it committed later and nothing
numbered before can depend on it. Numbers continue from the clock, so a
transaction that commits late always gets higher numbers than everything already
sealed (and perhaps copied); a rollback, or a writer killed mid-transaction,
leaves no row and takes no number. Sequences stay gapless, never reused, and the
receiving side's "contiguous up to N" still proves completeness.

The clock (hybrid logical clock) is made final here too, in sequence order: each
row's ``hlc`` is its capture-time clock, or one past the row before if that is
higher, so it never runs backwards and passes every change replayed here before.
Rows captured by a node that signs (``trust.SIGN_AT_SEAL``) are signed here
(``trust.sign_outbox_rows``), over their final values.
"""
from __future__ import annotations

import uuid

from django.db import connections, transaction

from .. import trust
from ..exceptions import SyncError
from .outbox import open_db_transaction_id, statements

#: Stands for "no transaction of ours is open": uuid4() never gives it.
_NONE = uuid.UUID(int=0)
#: What a seal reads of each row; signing needs the signed fields as well.
_NUMBERING = ("id", "db_transaction_id", "write_order", "hlc", "sequence", "signature")
_SIGNED = ("producer", "hostname", "tx_name", "tx_pk", "action", "tx")


def _statements(connection) -> dict:
    return statements(connection, _build_statements)


def _build_statements(vendor: str, quote) -> dict:
    from ..models import OutgoingTransaction, ProducerClock

    out, clock = quote(OutgoingTransaction._meta.db_table), quote(ProducerClock._meta.db_table)
    unsealed = "sequence IS NULL AND db_transaction_id <> %s"
    sql = {
        "producers": f"SELECT DISTINCT producer FROM {out} WHERE {unsealed}",
        # A no-op UPDATE rather than SELECT ... FOR UPDATE: it also takes SQLite's write lock.
        "lock": f"UPDATE {clock} SET last_sequence = last_sequence WHERE producer = %s "
                "RETURNING last_sequence, last_hlc",
        "highest": f"SELECT MAX(sequence) FROM {out} WHERE producer = %s",
        "clock": f"UPDATE {clock} SET last_sequence = %s, last_hlc = %s WHERE producer = %s",
    }
    for signing in (False, True):
        columns = ", ".join(quote(c) for c in _NUMBERING + (_SIGNED if signing else ()))
        sql["rows", signing] = (f"SELECT {columns} FROM {out} WHERE producer = %s AND "
                                       f"{unsealed} ORDER BY write_order")
    if vendor == "postgresql":
        sql["number"] = (
            f"UPDATE {out} AS o SET sequence = v.sequence, hlc = v.hlc, signature = v.signature "
            "FROM unnest(%s::uuid[], %s::bigint[], %s::bigint[], %s::text[]) "
            "AS v(id, sequence, hlc, signature) WHERE o.id = v.id AND o.sequence IS NULL")
    else:
        sql["number"] = (f"UPDATE {out} SET sequence = %s, hlc = %s, signature = %s "
                                "WHERE id = %s AND sequence IS NULL")
    return sql


def seal(using: str) -> int:
    """Number every committed unsealed outbox row on alias ``using``; how many it numbered.

    One short transaction per producer that has such rows (a savepoint when called
    inside a transaction, whose end then releases the clock row). Rows of a
    transaction still open on this connection are left for a later seal.
    Raises ``SyncError`` (and numbers nothing of that producer) when the outbox
    already holds a number the clock has not given out: rows written by hand.
    """
    connection = connections[using]
    sql = _statements(connection)
    open_id = _db_value(connection, open_db_transaction_id(connection) or _NONE)
    with connection.cursor() as cursor:
        cursor.execute(sql["producers"], [open_id])
        producers = sorted(producer for producer, in cursor.fetchall())
    numbered = 0
    for producer in producers:  # in name order: two sealers never wait on each other in a circle
        with transaction.atomic(using=using):
            numbered += _seal_producer(using, producer, open_id)
    return numbered


def _db_value(connection, value: uuid.UUID):
    """A UUID as the outbox stores it on ``connection`` (32 hex digits outside PostgreSQL)."""
    return value if connection.vendor == "postgresql" else value.hex


def _lock_clock(using: str, producer: str) -> tuple[int, int]:
    """Hold ``producer``'s clock row until the end of the transaction; (last sequence, hlc)."""
    from ..models import ProducerClock

    connection = connections[using]
    with connection.cursor() as cursor:
        cursor.execute(_statements(connection)["lock"], [producer])
        row = cursor.fetchone()
    if row is None:
        ProducerClock.objects.using(using).bulk_create([ProducerClock(producer=producer)],
                                                       ignore_conflicts=True)
        return _lock_clock(using, producer)
    return row[0], row[1]


def _seal_producer(using: str, producer: str, open_id) -> int:
    connection = connections[using]
    sql = _statements(connection)
    last_sequence, last_hlc = _lock_clock(using, producer)
    signing = trust.signing_required()  # a guess at what the rows were captured with
    with connection.cursor() as cursor:
        cursor.execute(sql["highest"], [producer])
        highest = cursor.fetchone()[0]
        cursor.execute(sql["rows", signing], [producer, open_id])
        rows = [list(row) for row in cursor.fetchall()]
        if not rows:
            return 0
        if not signing and any(row[5] == trust.SIGN_AT_SEAL for row in rows):
            signing = True  # SYNCROUTER_SIGN was on at capture: read what signing needs
            cursor.execute(sql["rows", signing], [producer, open_id])
            rows = [list(row) for row in cursor.fetchall()]
        if highest is not None and highest > last_sequence:
            raise SyncError(
                f"Cannot seal the outbox of producer {producer!r} on alias {using!r}: its clock "
                f"(ProducerClock) has given out sequences up to {last_sequence}, but "
                f"OutgoingTransaction already holds #{highest}. Rows were written to the outbox "
                f"outside capture, or the clock was changed; {len(rows)} captured rows stay "
                "unsealed (and are not sent) until the two agree again.")
        ordered = _in_commit_order(rows)
        for row in ordered:  # id, db_transaction_id, write_order, hlc, sequence, signature
            last_sequence += 1
            last_hlc = max(row[3], last_hlc + 1)
            row[3], row[4] = last_hlc, last_sequence
        if signing:  # the rows captured by a node that signs, whatever it says now
            trust.sign_outbox_rows(using, [row for row in ordered if row[5] == trust.SIGN_AT_SEAL],
                                   _NUMBERING + _SIGNED, required=True)
        _write_numbers(cursor, connection.vendor, sql["number"], ordered)
        cursor.execute(sql["clock"], [last_sequence, last_hlc, producer])
    return len(ordered)


def _in_commit_order(rows: list[list]) -> list[list]:
    """The rows (in write order) by database transaction, the transactions by their last
    write: see the module's docstring for why that order is safe."""
    transactions: dict = {}
    for row in rows:
        transactions.setdefault(row[1], []).append(row)
    ordered = sorted(transactions.values(), key=lambda group: group[-1][2] or 0)
    return [row for group in ordered for row in group]


def _write_numbers(cursor, vendor: str, statement: str, rows: list[list]) -> None:
    """Store sequence, clock and signature of ``rows``; every one must still be unsealed."""
    if vendor == "postgresql":
        cursor.execute(statement, [[row[0] for row in rows], [row[4] for row in rows],
                                   [row[3] for row in rows], [row[5] for row in rows]])
        written = cursor.rowcount
    else:
        written = 0
        for row in rows:
            cursor.execute(statement, [row[4], row[3], row[5], row[0]])
            written += cursor.rowcount
    if written != len(rows):  # another seal without the clock row: never silently
        raise SyncError(f"Sealing {len(rows)} outbox rows numbered only {written}: another "
                        "process changed them meanwhile; nothing was sealed.")
