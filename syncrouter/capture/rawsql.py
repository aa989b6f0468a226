"""The raw-SQL guard: make writes that capture cannot see loud.

Capture sees ORM writes (``save()``, the bulk queryset methods, Collector
deletes, M2M managers). A statement written by hand (``cursor.execute``,
``RunSQL``, a ``raw()`` trick) that inserts, updates, deletes or truncates a
registered model's table changes data without an outgoing transaction, and the
nodes drift apart silently. This guard is an ``execute_wrapper`` on every
connection. The captured paths run inside ``captured_writes(alias)``; any other
write to a registered table is reported according to ``SYNCROUTER_RAW_SQL``:

* ``"warn"`` (default): a logged warning naming the table and the statement kind;
* ``"raise"``: ``SyncError`` naming the table, before the statement runs;
* ``"off"``: nothing.

Django's own ``flush``, ``loaddata`` and migrations are not bypasses in this
sense; ``local.py`` holds the policy for them, and none of them is ever refused.

Cost (docs/architecture.md, "Measured costs"): sqlparse takes milliseconds per statement, so each
statement first meets a regular expression for a write verb at its start (about
1 µs; all a SELECT costs), then a set lookup of its identifiers against the
registered tables (a few µs); only statements passing both are parsed. A statement
sqlparse cannot parse is treated as a write to the registered tables it names.
"""
from __future__ import annotations

import logging
import re

import sqlparse
from django.db import connections
from django.db.backends.signals import connection_created
from sqlparse import tokens as T
from sqlparse.exceptions import SQLParseError

from .. import conf
from ..exceptions import SyncError
from ..registry import site_sync_models
from ..state import is_replaying, state, switched_on

logger = logging.getLogger("syncrouter.rawsql")

_WRITE = re.compile(r"\s*(?:/\*.*?\*/\s*|--[^\n]*\n\s*)*(insert|update|delete|truncate|replace|"
                    r"merge|with)\b", re.IGNORECASE | re.DOTALL)
#: The keyword after which each kind of write names its target table.
_TARGET_AFTER = {"INSERT": ("INTO",), "REPLACE": ("INTO",), "UPDATE": ("UPDATE",),
                 "DELETE": ("FROM",), "TRUNCATE": ("TABLE", "TRUNCATE"), "MERGE": ("INTO",)}


def captured_writes(alias: str):
    """Mark the writes made on ``alias`` inside the block as seen by capture."""
    return switched_on(alias, "captured_writes")


_IDENTIFIER = re.compile(r"[A-Za-z_][\w$]*")


def _named_tables(sql: str) -> set[str]:
    """Registered tables whose names occur in ``sql`` as identifiers (a few µs)."""
    tables = site_sync_models.db_tables()
    found = tables.intersection(_IDENTIFIER.findall(sql))
    if not found and not sql.islower():
        found = tables.intersection(_IDENTIFIER.findall(sql.lower()))
    return found


def _targets(sql: str) -> list[tuple[str, str]]:
    """(statement kind, target table) of each write in ``sql``, subqueries and
    data-modifying CTEs included."""
    found = []
    for statement in sqlparse.parse(sql):
        tokens = [t for t in statement.flatten()
                  if not t.is_whitespace and t.ttype not in T.Comment]
        kind = None
        for index, token in enumerate(tokens):
            word = token.normalized if token.ttype in T.Keyword else None
            if kind is None and word in _TARGET_AFTER:
                kind = word
                if word not in _TARGET_AFTER[word]:
                    continue
            if kind is not None and word in _TARGET_AFTER[kind]:
                found += [(kind, name) for name in _names(tokens[index + 1:])]
                kind = None
    return found


def _names(tokens) -> list[str]:
    """The table names at the start of ``tokens``: ``a``, ``a, b``, ``schema.a``."""
    names, expect_name = [], True
    for token in tokens:
        if expect_name and token.ttype in T.Keyword \
                and token.normalized in ("TABLE", "ONLY", "IGNORE", "INTO"):
            continue
        if expect_name and (token.ttype in T.Name or token.ttype in T.Literal.String.Symbol
                            or token.ttype in T.Keyword):
            names.append(token.value.strip('"`[]').lower())
            expect_name = False
        elif not expect_name and token.ttype in T.Punctuation and token.value in ",.":
            if token.value == ".":
                names.pop()  # a schema name: the table follows
            expect_name = True
        else:
            break
    return names


def writes_to_registered(sql: str) -> list[tuple[str, str]]:
    """(kind, table) for each write in ``sql`` to a registered model's table."""
    match = _WRITE.match(sql)
    named = _named_tables(sql) if match else None
    return _writes(sql, match, named) if named else []


def _writes(sql: str, match: re.Match, named: set[str]) -> list[tuple[str, str]]:
    try:
        return [(kind, table) for kind, table in _targets(sql) if table in named]
    except SQLParseError:
        return [(match.group(1).upper(), table) for table in sorted(named)]


def guard(execute, sql, params, many, context):
    """``execute_wrapper``: report uncaptured writes to registered tables, then run ``sql``.

    Checks run cheapest first: the capture mark, the write-verb regex (all a
    SELECT meets), the registered table names, then settings and sqlparse.
    Inside flush, loaddata or a migration (``local.py``) the writes are counted
    for that command's one-line report instead, and never refused.
    """
    connection = context["connection"]
    per_connection = state(connection)
    local = per_connection.local
    if (local is not None or not per_connection.captured_writes) and isinstance(sql, str):
        match = _WRITE.match(sql)
        named = _named_tables(sql) if match else None
        if named and local is not None:
            local.add(_writes(sql, match, named))
        elif named:
            mode = conf.get("SYNCROUTER_RAW_SQL")
            if mode != "off" and conf.capture_enabled() and not is_replaying(connection.alias):
                _report(_writes(sql, match, named), mode, connection.alias, sql)
    return execute(sql, params, many, context)


def _report(writes, mode: str, alias: str, sql: str) -> None:
    for kind, table in writes:
        text = (f"{kind} on {table!r} (a registered model's table) on {alias!r} bypasses "
                "syncrouter capture: no outgoing transaction is written for it. Use the ORM "
                "(save, bulk_create, bulk_update, update, delete) or record the change.")
        if mode == "raise":
            raise SyncError(text)
        logger.warning("%s Statement: %.200s", text, sql)


def install_on(connection, **kwargs) -> None:
    """Put the guard first: ``connection.execute_wrapper()`` blocks pop the last wrapper,
    so a connection opened inside one must not get the guard appended after it."""
    if guard not in connection.execute_wrappers:
        connection.execute_wrappers.insert(0, guard)


def install() -> None:
    """Guard every connection: the ones already open and each one created later."""
    connection_created.connect(install_on, dispatch_uid="syncrouter.rawsql")
    for connection in connections.all(initialized_only=True):
        install_on(connection)
