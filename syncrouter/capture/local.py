"""Django's own commands that write registered tables: flush, loaddata, migrations.

They write outside the paths capture sees, but they are not the hand-written
SQL the raw-SQL guard exists for, and ``SYNCROUTER_RAW_SQL = "raise"`` must
never stop them. The policy, one rule per command:

* ``flush`` empties whole tables of one alias: a local reset, not replicated.
  It is reported in one line per command and alias, not as a bypass per table.
  The outbox and the producer clock are emptied with the rest, so the node's
  next change takes sequence 1 again, which the next hop refuses as a reused
  sequence (``Refusal``) until the node gets a new name.
* ``loaddata`` rows are not captured, nor their many-to-many rows (capture is
  off on the alias while it runs). Fixtures are per-node data: load them on
  every node. One warning line names how many rows of which registered models
  were loaded; ``capture_existing`` sends rows on where they should travel.
* Migrations (``RunPython`` through historical models, ``RunSQL``) are not
  captured, whatever models they use: every node runs the same migrations, so
  capturing them would apply their changes twice. One warning line per
  migration names the registered tables it wrote.

Inside each, capture is off for the alias as during replay, and the guard
counts the writes to registered tables instead of reporting them. The
commands are wrapped once per process, like the queryset methods in
``queryset.py``: ``BaseDatabaseOperations.execute_sql_flush`` (what ``flush``
runs), ``loaddata.Command.loaddata``/``save_obj``, ``Migration.apply``/
``unapply``, and ``BaseDatabaseCreation.deserialize_db_from_string`` (the
test runner's serialized rollback, reported nowhere).
"""
from __future__ import annotations

import functools
import logging
from collections import Counter
from collections.abc import Callable
from contextlib import contextmanager

from django.db import transaction

from ..registry import site_sync_models
from ..state import replaying, state_of
from . import changes, outbox

logger = logging.getLogger("syncrouter.rawsql")


class LocalWrites:
    """What one command wrote to registered tables on one alias, uncaptured."""

    def __init__(self, alias: str):
        self.alias = alias
        #: (statement kind, table) -> statements
        self.statements: Counter = Counter()
        #: model label -> rows (loaddata)
        self.rows: Counter = Counter()

    def add(self, writes: list[tuple[str, str]]) -> None:
        self.statements.update(writes)

    def tables(self) -> list[str]:
        return sorted({table for _, table in self.statements})


@contextmanager
def local_writes(alias: str, report: Callable[[LocalWrites], None] | None):
    """Capture off on ``alias`` for the block, its registered writes counted; ``report``
    is called with them when the block ends normally. A nested block joins the outer
    one (loaddata called from a data migration)."""
    per_connection = state_of(alias)
    if per_connection.local is not None:
        yield per_connection.local
        return
    record = LocalWrites(alias)
    per_connection.local = record
    try:
        with replaying(alias):  # capture off for the alias, as while replaying
            yield record
    finally:
        per_connection.local = None
    if report is not None:
        report(record)


def _named(items, limit: int = 6) -> str:
    items = list(items)
    return ", ".join(items[:limit]) + (f" and {len(items) - limit} more" if len(items) > limit
                                       else "")


def _report_flush(record: LocalWrites) -> None:
    if record.statements:
        logger.warning(
            "flush emptied %d registered tables on %r (%s): a local reset, not replicated. "
            "The outbox and the producer clock were emptied too: this node's next change "
            "takes sequence 1 again, which the next hop refuses as a reused sequence; give "
            "the node a new name in SYNCROUTER_NODES before it writes again.",
            len(record.tables()), record.alias, _named(record.tables()))


def _report_loaddata(record: LocalWrites) -> None:
    if record.rows:
        logger.warning(
            "loaddata wrote %d rows of registered models on %r without capturing them (%s): "
            "fixtures are not replicated. Load the fixture on every node, or send the rows "
            "on with syncrouter.capture.local.capture_existing(queryset).",
            sum(record.rows.values()), record.alias,
            _named(f"{label}: {count}" for label, count in sorted(record.rows.items())))


def _report_migration(migration) -> Callable[[LocalWrites], None]:
    def report(record: LocalWrites) -> None:
        if record.statements:
            logger.warning(
                "migration %s.%s wrote registered tables on %r without capture (%s): data "
                "migrations are not replicated, since every node runs the same migrations.",
                migration.app_label, migration.name, record.alias,
                _named(f"{kind} {table} x{count}"
                       for (kind, table), count in sorted(record.statements.items())))
    return report


def capture_existing(queryset) -> int:
    """Record the rows of ``queryset`` as inserts, as if they had just been created here,
    so that rows written without capture (a fixture, a data migration) travel on.

    A node that already holds an identical row skips the insert; one holding a
    different row under the same natural key records a conflict. Returns the
    number of rows recorded.
    """
    using = queryset.db
    with transaction.atomic(using=using):
        objs = list(queryset)
        changes.load_related(objs)
        outbox.record_entries(using, [changes.insert_entry(obj) for obj in objs])
    return len(objs)


def _wrap(owner, name: str, make_wrapper) -> None:
    original = getattr(owner, name)
    if getattr(original, "syncrouter_original", None) is None:
        wrapper = functools.wraps(original)(make_wrapper(original))
        wrapper.syncrouter_original = original
        setattr(owner, name, wrapper)


def install() -> None:
    """Wrap flush, loaddata, migrations and the test runner's restore, once per process."""
    from django.core.management.commands import loaddata
    from django.db.backends.base.creation import BaseDatabaseCreation
    from django.db.backends.base.operations import BaseDatabaseOperations
    from django.db.migrations.migration import Migration

    def flush(original):
        def execute_sql_flush(self, *args, **kwargs):
            with local_writes(self.connection.alias, _report_flush):
                return original(self, *args, **kwargs)
        return execute_sql_flush

    def load(original):
        def loaddata_(self, *args, **kwargs):
            with local_writes(self.using, _report_loaddata):
                return original(self, *args, **kwargs)
        return loaddata_

    def save_obj(original):
        def save_obj_(self, obj, *args, **kwargs):
            saved = original(self, obj, *args, **kwargs)
            record = state_of(self.using).local
            if saved and record is not None and site_sync_models.guards(type(obj.object)):
                record.rows[obj.object._meta.label_lower] += 1
            return saved
        return save_obj_

    def migrate(original):
        def apply(self, project_state, schema_editor, collect_sql=False, *args, **kwargs):
            if collect_sql:  # sqlmigrate: nothing runs
                return original(self, project_state, schema_editor, collect_sql, *args, **kwargs)
            with local_writes(schema_editor.connection.alias, _report_migration(self)):
                return original(self, project_state, schema_editor, collect_sql, *args, **kwargs)
        return apply

    def restore(original):
        def deserialize_db_from_string(self, *args, **kwargs):
            with local_writes(self.connection.alias, None):
                return original(self, *args, **kwargs)
        return deserialize_db_from_string

    _wrap(BaseDatabaseOperations, "execute_sql_flush", flush)
    _wrap(loaddata.Command, "loaddata", load)
    _wrap(loaddata.Command, "save_obj", save_obj)
    _wrap(Migration, "apply", migrate)
    _wrap(Migration, "unapply", migrate)
    _wrap(BaseDatabaseCreation, "deserialize_db_from_string", restore)
