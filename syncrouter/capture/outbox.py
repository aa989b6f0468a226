"""Write OutgoingTransaction rows: sequence, clock and the rows, in a few plain queries.

``record`` is the hot path of every captured ``save()``. It writes with plain SQL on
the write's own connection instead of a second ORM ``create()``, which measured about
1.4x faster per captured save (benchmarks/RESULTS.md), and it runs inside the atomic block
of the data write, so both commit or neither does.

``record_many`` is the bulk path: N rows in batched INSERTs. Inside ``batch(using)``
(a Collector delete) ``record`` defers its row to one ``record_many`` at the end.

Where the rows get their sequence depends on the database. SQLite runs one writer at
a time, so capture numbers the rows itself: one clock UPDATE reserves N sequence
numbers and clock ticks, in the writer's transaction. On PostgreSQL that UPDATE
would make every writer wait on one row until commit (and deadlock writers that
plain Django runs side by side); there the rows go in unsealed and ``seal`` numbers
them after commit (see ``capture/seal.py``).
"""
from __future__ import annotations

import time
import uuid
from contextlib import contextmanager

from django.db import connections
from django.utils import timezone

from .. import conf, serialization as ser, trust
from ..models import OutgoingTransaction, ProducerClock
from ..params import max_params
from ..state import state, state_of


def hlc_now() -> int:
    """Physical part of the hybrid logical clock: milliseconds shifted past a 16-bit counter."""
    return int(time.time() * 1000) << 16


def current_db_transaction_id(connection) -> uuid.UUID:
    """One UUID per outermost database transaction on ``connection``.

    The id is kept with the outermost atomic block and cleared on commit. After a
    rollback a re-used id is harmless: the rows that carried it are gone.
    """
    # Test cases wrap each test in atomic blocks of their own: skip them, or every
    # write of a test would look like one client transaction to replay.
    outer = next((block for block in connection.atomic_blocks
                  if not getattr(block, "_from_testcase", False)), None)
    per_connection = state(connection)
    current = per_connection.db_transaction
    if current is None or current[0] is not outer:
        current = (outer, uuid.uuid4())
        per_connection.db_transaction = current
        connection.on_commit(lambda: setattr(per_connection, "db_transaction", None))
    return current[1]


def open_db_transaction_id(connection) -> uuid.UUID | None:
    """The id of the database transaction still open on ``connection`` that has captured
    writes, or None (test cases' own atomic blocks do not count, as above)."""
    current = state(connection).db_transaction
    if current is None or current[0] is None:
        return None
    return current[1] if any(block is current[0] for block in connection.atomic_blocks) else None


def seals_at_capture(connection) -> bool:
    """Whether capture numbers rows itself (one writer at a time) or leaves it to ``seal``."""
    return connection.vendor != "postgresql"


#: The PostgreSQL sequence behind ``write_order`` (created by migration 0005).
WRITE_ORDER = "syncrouter_outbox_write_order"

_STATEMENTS: dict[tuple, dict] = {}
_COLUMNS = ("id", "tx", "tx_name", "tx_pk", "producer", "hostname", "sequence",
            "db_transaction_id", "hlc", "action", "timestamp", "hops", "consumer",
            "is_consumed_middleman", "is_consumed_server", "is_ignored", "is_error",
            "error", "batch_id", "signature")


def statements(connection, build) -> dict:
    """The SQL ``build(vendor, quote_name)`` writes, built once per database vendor."""
    key = (build, connection.vendor)
    if key not in _STATEMENTS:
        _STATEMENTS[key] = build(connection.vendor, connection.ops.quote_name)
    return _STATEMENTS[key]


def _statements(connection) -> dict:
    return statements(connection, _build_statements)


def _build_statements(vendor: str, quote) -> dict:
    clock = quote(ProducerClock._meta.db_table)
    out = quote(OutgoingTransaction._meta.db_table)
    # N = 1 for one row; for N rows the clock ends N - 1 ticks past the first row's.
    tick = (f"UPDATE {clock} SET last_sequence = last_sequence + %s, "
            "last_hlc = CASE WHEN last_hlc >= %s THEN last_hlc + %s ELSE %s END "
            "WHERE producer = %s")
    returning = vendor in ("postgresql", "sqlite")
    columns, values = list(_COLUMNS), ["%s"] * len(_COLUMNS)
    if vendor == "postgresql":  # unsealed: the sequence stays NULL, the seal numbers it
        columns.append("write_order")
        values.append(f"nextval('{WRITE_ORDER}')")
    return {
        "tick": tick + (" RETURNING last_sequence, last_hlc" if returning else ""),
        "read": None if returning else
        f"SELECT last_sequence, last_hlc FROM {clock} WHERE producer = %s",
        "insert": f"INSERT INTO {out} ({', '.join(quote(c) for c in columns)}) VALUES ",
        "row": f"({', '.join(values)})",
        "width": len(_COLUMNS),
    }


def next_sequence(connection, producer: str, count: int = 1) -> tuple[int, int]:
    """Take the producer's next ``count`` sequence numbers and clock ticks, inside the
    current transaction; return the last of each (the first is ``count - 1`` before).

    The UPDATE locks the producer's clock row until commit, so concurrent writers
    on PostgreSQL queue instead of taking the same numbers.
    """
    sql = _statements(connection)
    now = hlc_now()
    with connection.cursor() as cursor:
        cursor.execute(sql["tick"], [count, now, count, now + count - 1, producer])
        row = cursor.fetchone() if sql["read"] is None else None
        if sql["read"] is not None and cursor.rowcount:
            cursor.execute(sql["read"], [producer])
            row = cursor.fetchone()
        if row is None:
            ProducerClock.objects.using(connection.alias).bulk_create(
                [ProducerClock(producer=producer)], ignore_conflicts=True)
            return next_sequence(connection, producer, count)
    return row[0], row[1]


def record(using: str, model, instance_pk, action: str, payload: dict) -> None:
    """Write one outgoing row, or add it to the open ``batch`` on ``using``."""
    record_entries(using, [(model._meta.label_lower, instance_pk, action, payload)])


def record_entries(using: str, entries: list[tuple[str, object, str, dict]]) -> None:
    """``record_many``, or add the entries to the open ``batch`` on ``using`` (keeps order)."""
    buffer = state_of(using).outbox_buffer
    if buffer is not None:
        buffer.extend(entries)
    else:
        record_many(using, entries)


def record_many(using: str, entries: list[tuple[str, object, str, dict]]) -> None:
    """Write outgoing rows for (model label, instance pk, action, payload) entries, in order.

    Sealing at capture, one clock UPDATE reserves ``len(entries)`` consecutive
    sequence numbers and clock ticks, and the rows are signed here; otherwise they
    go in unsealed, with the clock's physical time, marked for the seal to sign
    (``trust.signature_at_capture``). The rows go in multi-row
    INSERTs (SQLite: as many rows per statement as its parameter limit allows) or
    one pipelined executemany (PostgreSQL).
    """
    if not entries:
        return
    connection = connections[using]
    node = conf.node_for_alias(using)
    sealed = seals_at_capture(connection)
    if sealed:
        last_sequence, last_hlc = next_sequence(connection, node.name, len(entries))
        signature = ""
    else:
        last_sequence, last_hlc = None, hlc_now() + len(entries) - 1
        signature = trust.signature_at_capture(using)
    first = len(entries) - 1
    db_txid = current_db_transaction_id(connection)
    as_text = connection.vendor != "postgresql"
    if as_text:
        db_txid = db_txid.hex
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    hops, host = ser.dumps([node.name]), conf.hostname()
    rows = []
    for offset, (label, instance_pk, action, payload) in enumerate(entries):
        txid = uuid.uuid4()
        rows.append([txid.hex if as_text else txid, ser.dumps(payload), label, str(instance_pk),
                     node.name, host, last_sequence - first + offset if sealed else None,
                     db_txid, last_hlc - first + offset, action, now, hops,
                     "", False, False, False, False, "", "", signature])
    if sealed:
        trust.sign_outbox_rows(using, rows, _COLUMNS)  # where the final sequence and clock are set
    trust.protect_outbox_rows(rows, _COLUMNS)  # after signing: signatures cover plaintext
    sql = _statements(connection)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql" and len(rows) > 1:
            # psycopg pipelines executemany(). A multi-row VALUES list of N rows spends
            # seconds in psycopg's client-side placeholder parsing, array parameters
            # (unnest) as long in client-side quoting (measured, 10,000 rows).
            cursor.executemany(sql["insert"] + sql["row"], rows)
            return
        per_statement = 1 if len(rows) == 1 else max(1, max_params(connection) // sql["width"])
        for start in range(0, len(rows), per_statement):
            chunk = rows[start:start + per_statement]
            cursor.execute(sql["insert"] + ", ".join([sql["row"]] * len(chunk)),
                           [value for row in chunk for value in row])


@contextmanager
def batch(using: str):
    """Collect the rows ``record`` writes on ``using`` and write them in one ``record_many``.

    Re-entrant: an inner batch joins the outer one. Must run inside the atomic
    block of the writes it records; on an exception nothing is written.
    """
    per_connection = state_of(using)
    if per_connection.outbox_buffer is not None:
        yield per_connection.outbox_buffer
        return
    buffer: list = []
    per_connection.outbox_buffer = buffer
    try:
        yield buffer
    finally:
        per_connection.outbox_buffer = None
    record_many(using, buffer)
