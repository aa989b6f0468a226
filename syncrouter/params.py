"""How many query parameters one statement may carry: decided here, once, for every
query that sends a batch of values (ids, keys, rows) in chunks."""
from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence

#: Parameters each chunk leaves free for the statement's own values.
RESERVED = 100


def max_params(connection) -> int:
    """How many query parameters one statement may carry on ``connection``.

    SQLite's real limit (32766 since 3.32) is read from the open connection;
    Django's feature flag says 999 for the oldest builds.
    """
    if connection.vendor == "sqlite":
        connection.ensure_connection()
        getlimit = getattr(connection.connection, "getlimit", None)
        if getlimit is not None:
            return getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    return connection.features.max_query_params or 60000


def chunk_size(connection, per_item: int = 1) -> int:
    """How many items of ``per_item`` parameters each go in one statement."""
    return max(1, (max_params(connection) - RESERVED) // per_item)


def chunks(items: Sequence, connection, per_item: int = 1) -> Iterator[Sequence]:
    """``items`` in slices that one statement on ``connection`` can take as parameters."""
    size = chunk_size(connection, per_item)
    for start in range(0, len(items), size):
        yield items[start:start + size]
