"""Write many rows of one model with one statement, the fastest way each backend has.

PostgreSQL takes new rows with COPY (about three times ``bulk_create``,
benchmarks/RESULTS.md); other backends with one ``executemany`` of an INSERT. Changed
rows go in with one ``executemany`` of an UPDATE by primary key (psycopg runs
it as a pipeline, sqlite3 and MySQLdb in C).

Values arrive as query parameters (``values.Columns.prepare``). Nothing here
checks anything: the caller has already found which rows are new or unchanged
since it looked, and runs this inside its ``atomic`` block, so a row the
database refuses rolls the whole batch back. The writes pass the raw-SQL guard
because they run while the alias is replaying.
"""
from __future__ import annotations

from django.db import connections, models
from django.db.models import F
from django.utils import timezone

from ..lookups import AnyOf
from ..models import IncomingTransaction


def insert(model: type[models.Model], columns: list[str], rows: list, alias: str) -> None:
    """INSERT ``rows`` (parameter lists in ``columns`` order) into ``model``'s table."""
    connection = connections[alias]
    quote = connection.ops.quote_name
    table, names = quote(model._meta.db_table), ", ".join(quote(c) for c in columns)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # Nothing else may run on the connection while the COPY is open; the
            # raw cursor needs Django's error translation put back around it.
            with connection.wrap_database_errors, cursor.cursor.copy(
                    f"COPY {table} ({names}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            marks = ", ".join(["%s"] * len(columns))
            cursor.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})", rows)


def update(model: type[models.Model], columns: list[str], rows: list, alias: str) -> None:
    """UPDATE ``columns`` of each row; a row's last parameter is its primary key."""
    connection = connections[alias]
    quote = connection.ops.quote_name
    assignments = ", ".join(f"{quote(c)} = %s" for c in columns)
    with connection.cursor() as cursor:
        cursor.executemany(f"UPDATE {quote(model._meta.db_table)} SET {assignments} "
                           f"WHERE {quote(model._meta.pk.column)} = %s", rows)


def consume(ids: list, alias: str, consumer: str) -> int:
    """Mark these incoming transactions consumed by ``consumer``; the number marked.

    Only rows still pending are marked, so a count short of ``len(ids)`` means
    another replay took some of them first.
    """
    return IncomingTransaction.objects.using(alias).filter(
        AnyOf(F("id"), ids), is_consumed=False).update(
        is_consumed=True, is_deferred=False, is_error=False, error="",
        consumed_datetime=timezone.now(), consumer=consumer)
