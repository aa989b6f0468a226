"""Write one batch into a PostgreSQL inbox with COPY.

COPY through the Django connection's psycopg cursor runs about 3x faster than
``bulk_create`` (benchmarks/RESULTS.md). It cannot skip rows that are already there, so
the batch goes into a TEMP staging table first, then one
``INSERT ... SELECT ... ON CONFLICT (id) DO NOTHING`` moves the new rows; its
row count is exactly the number of new rows.

Two traps shape the code:

- Any other query on the same connection while a COPY block is open hangs with
  no error. Every value is computed before the block opens and nothing else
  runs until it closes.
- COPY is invisible to ``execute_wrapper``, to Django's query log and to its
  error translation; the statements around it are not.

The caller's ``transaction.atomic(using=target)`` covers the staging, the check
and the insert, so a failure anywhere rolls all of it back. A producer whose
sequence clashes is refused from the clash on (``Batch.refuse_clashes``): its
rows leave the staging table and the other producers' rows go in.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from django.db import connections
from django.utils import timezone

from ..models import IncomingTransaction
from .rows import IDENTITY_FIELDS, CopyResult, incoming_hops

if TYPE_CHECKING:
    from .copy import Batch

STAGING = "syncrouter_copy_staging"
#: Columns that travel with each row; every other inbox column takes its default.
STAGED = IDENTITY_FIELDS + ("hops",)


def _sql(connection) -> dict[str, str]:
    quote = connection.ops.quote_name
    inbox = quote(IncomingTransaction._meta.db_table)
    staged = ", ".join(quote(IncomingTransaction._meta.get_field(f).column) for f in STAGED)
    columns = [f.column for f in IncomingTransaction._meta.concrete_fields]
    return {
        # ON COMMIT DELETE ROWS empties it after each batch; the DELETE covers a
        # copy nested in the caller's transaction, where no commit comes between.
        "stage": f"CREATE TEMP TABLE IF NOT EXISTS {STAGING} ON COMMIT DELETE ROWS AS "
                 f"SELECT {staged} FROM {inbox} WITH NO DATA; DELETE FROM {STAGING}",
        "copy": f"COPY {STAGING} ({staged}) FROM STDIN",
        # The first (producer, sequence) of each producer held under another id: one
        # probe on the unique index per staged row. The LIMIT keeps the subquery a
        # per-row probe: as a plain join the planner could pick a merge or hash join,
        # reading the whole inbox for every batch, so that each batch cost more than
        # the one before.
        "clash": f"SELECT DISTINCT ON (s.producer) s.producer, s.sequence, i.id, s.id "
                 f"FROM {STAGING} s CROSS JOIN LATERAL (SELECT id FROM {inbox} "
                 "WHERE producer = s.producer AND sequence = s.sequence LIMIT 1) i "
                 "WHERE i.id <> s.id ORDER BY s.producer, s.sequence",
        "unstage": f"DELETE FROM {STAGING} WHERE id = ANY(%s)",
        # ON CONFLICT names (id) only: a (producer, sequence) clash that appears
        # after the check raises IntegrityError instead of dropping the row.
        "insert": f"INSERT INTO {inbox} ({', '.join(quote(c) for c in columns)}) "
                  f"SELECT {', '.join(_source(quote, c) for c in columns)} FROM {STAGING} "
                  "ON CONFLICT (id) DO NOTHING",
    }


def _source(quote, column: str) -> str:
    return quote(column) if column in STAGED else "%s"


def _defaults(connection, now) -> list:
    """Parameters of the INSERT: values of the columns that do not travel."""
    values = []
    for field in IncomingTransaction._meta.concrete_fields:
        if field.column in STAGED:
            continue
        value = now if field.name == "received_datetime" else field.get_default()
        values.append(field.get_db_prep_save(value, connection))
    return values


def copy_batch(batch: Batch, target: str, target_name: str) -> CopyResult:
    """Stage the batch's rows with COPY and insert the new ones; run inside
    ``atomic(using=target)``."""
    connection = connections[target]
    sql = _sql(connection)
    rows = batch.sendable()
    values = [[getattr(row, f) for f in IDENTITY_FIELDS] + [incoming_hops(row, target_name)]
              for row in rows]
    with connection.cursor() as cursor:
        cursor.execute(sql["stage"])
        # The raw psycopg cursor bypasses Django's error translation: restore it,
        # so a cut connection surfaces as django.db.OperationalError.
        with connection.wrap_database_errors, cursor.cursor.copy(sql["copy"]) as copy:
            for row in values:
                copy.write_row(row)
        cursor.execute(sql["clash"])
        refused = batch.refuse_clashes(target, cursor.fetchall())
        if refused:
            cursor.execute(sql["unstage"], [list(refused)])
        cursor.execute(sql["insert"], _defaults(connection, timezone.now()))
        copied = cursor.rowcount
    return CopyResult(copied, len(rows) - len(refused) - copied)


def analyze_inbox(target: str) -> None:
    """Refresh the planner's statistics of the inbox after a large copy.

    Until autovacuum gets to it, PostgreSQL plans with the statistics of the
    table as it was: after a copy of a million rows into a nearly empty inbox,
    replay's page query became a sort of every pending row for each 500-row
    page (1.4 s a page). ANALYZE reads a sample of the table, a fraction of a
    second even at a million rows.
    """
    connection = connections[target]
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {connection.ops.quote_name(IncomingTransaction._meta.db_table)}")
