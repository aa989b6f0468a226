"""Write one OutgoingTransaction row: sequence, clock and the row, in two or three queries.

This is the hot path of every captured ``save()``. It writes with plain SQL on the
write's own connection instead of a second ORM ``create()``, which measured about
1.4x faster per captured save (DESIGN.md §7), and it runs inside the atomic block
of the data write, so both commit or neither does.
"""
from __future__ import annotations

import time
import uuid
from django.db import connections
from django.utils import timezone

from .. import conf, serialization as ser

_TXID = "syncrouter_db_transaction"


def hlc_now() -> int:
    """Physical part of the hybrid logical clock: milliseconds shifted past a 16-bit counter."""
    return int(time.time() * 1000) << 16


def current_db_transaction_id(connection) -> uuid.UUID:
    """One UUID per outermost database transaction on ``connection``.

    The id is kept with the outermost atomic block and cleared on commit. After a
    rollback a re-used id is harmless: the rows that carried it are gone.
    """
    outer = connection.atomic_blocks[0] if connection.atomic_blocks else None
    current = getattr(connection, _TXID, None)
    if current is None or current[0] is not outer:
        current = (outer, uuid.uuid4())
        setattr(connection, _TXID, current)
        connection.on_commit(lambda: setattr(connection, _TXID, None))
    return current[1]


_STATEMENTS: dict[str, dict] = {}


def _statements(connection) -> dict:
    if connection.vendor not in _STATEMENTS:
        _STATEMENTS[connection.vendor] = _build_statements(connection.vendor,
                                                           connection.ops.quote_name)
    return _STATEMENTS[connection.vendor]


def _build_statements(vendor: str, quote) -> dict:
    from ..models import OutgoingTransaction, ProducerClock

    clock = quote(ProducerClock._meta.db_table)
    out = quote(OutgoingTransaction._meta.db_table)
    columns = ("id", "tx", "tx_name", "tx_pk", "producer", "hostname", "sequence",
               "db_transaction_id", "hlc", "action", "timestamp", "hops", "consumer",
               "is_consumed_middleman", "is_consumed_server", "is_ignored", "is_error",
               "error", "batch_id")
    tick = (f"UPDATE {clock} SET last_sequence = last_sequence + 1, "
            "last_hlc = CASE WHEN last_hlc >= %s THEN last_hlc + 1 ELSE %s END "
            "WHERE producer = %s")
    returning = vendor in ("postgresql", "sqlite")
    return {
        "tick": tick + (" RETURNING last_sequence, last_hlc" if returning else ""),
        "read": None if returning else
        f"SELECT last_sequence, last_hlc FROM {clock} WHERE producer = %s",
        "insert": f"INSERT INTO {out} ({', '.join(quote(c) for c in columns)}) "
                  f"VALUES ({', '.join(['%s'] * len(columns))})",
    }


def next_sequence(connection, producer: str) -> tuple[int, int]:
    """Take the producer's next sequence number and clock tick, inside the current transaction.

    The UPDATE locks the producer's clock row until commit, so concurrent writers
    on PostgreSQL queue instead of taking the same number.
    """
    from ..models import ProducerClock

    sql = _statements(connection)
    now = hlc_now()
    with connection.cursor() as cursor:
        cursor.execute(sql["tick"], [now, now, producer])
        row = cursor.fetchone() if sql["read"] is None else None
        if sql["read"] is not None and cursor.rowcount:
            cursor.execute(sql["read"], [producer])
            row = cursor.fetchone()
        if row is None:
            ProducerClock.objects.using(connection.alias).bulk_create(
                [ProducerClock(producer=producer)], ignore_conflicts=True)
            return next_sequence(connection, producer)
    return row[0], row[1]


def record(using: str, model, instance_pk, action: str, payload: dict) -> None:
    connection = connections[using]
    node = conf.node_for_alias(using)
    sequence, hlc = next_sequence(connection, node.name)
    txid, db_txid = uuid.uuid4(), current_db_transaction_id(connection)
    if connection.vendor != "postgresql":
        txid, db_txid = txid.hex, db_txid.hex
    params = [txid, ser.dumps(payload), model._meta.label_lower, str(instance_pk), node.name,
              conf.hostname(), sequence, db_txid, hlc, action,
              connection.ops.adapt_datetimefield_value(timezone.now()), ser.dumps([node.name]),
              "", False, False, False, False, "", ""]
    with connection.cursor() as cursor:
        cursor.execute(_statements(connection)["insert"], params)
