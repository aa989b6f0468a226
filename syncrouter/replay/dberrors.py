"""What a database error during replay says about the transaction: wait, or give up.

Replay marks a transaction ``is_error`` only when it can never apply as it
stands (guarantee 7). Many database errors are about this node's state at the
moment, not about the transaction: a deadlock or serialization failure with a
concurrent writer, a lock timeout, a unique value another row holds until a
later change frees it, a row another replay inserted a moment ago. Those make
the transaction wait (deferred, with the database's own words) and replay
retries it, later in the run and in every later run. Other errors (a value too
long for its column, a NULL where the schema refuses one: a schema that
differs) stay errors.

The error is told by its SQLSTATE where the driver gives one (PostgreSQL),
else by the backend's error code or message (SQLite, MySQL/MariaDB).
"""
from __future__ import annotations

from django.db import DatabaseError, IntegrityError, OperationalError

#: PostgreSQL: serialization_failure, deadlock_detected, lock_not_available,
#: query_canceled (statement_timeout), unique_violation, foreign_key_violation,
#: exclusion_violation.
_TRANSIENT_STATES = {"40001", "40P01", "55P03", "57014"}
_CLASH_STATES = {"23505", "23503", "23P01"}
#: MySQL/MariaDB: lock wait timeout, deadlock; duplicate entry, foreign key failures.
_TRANSIENT_CODES = {1205, 1213}
_CLASH_CODES = {1062, 1451, 1452}
_SQLITE_TRANSIENT = ("database is locked", "database table is locked", "database is busy")
_SQLITE_CLASH = ("UNIQUE constraint failed", "FOREIGN KEY constraint failed")


def _state(exc: BaseException) -> str | None:
    cause = exc.__cause__
    return getattr(cause, "sqlstate", None) or getattr(getattr(cause, "diag", None),
                                                       "sqlstate", None)


def _code(exc: BaseException) -> int | None:
    args = getattr(exc.__cause__, "args", ()) or exc.args
    return args[0] if args and isinstance(args[0], int) else None


def waits(exc: BaseException) -> str | None:
    """Why a unit that failed with ``exc`` should wait and be retried, or None if it should not."""
    if not isinstance(exc, DatabaseError):
        return None
    state, code, text = _state(exc), _code(exc), str(exc)
    if isinstance(exc, IntegrityError):
        if state in _CLASH_STATES or code in _CLASH_CODES or text.startswith(_SQLITE_CLASH):
            return (f"clashes with a row on this node ({text.strip()}); waits for a change "
                    "that resolves it")
        return None
    if isinstance(exc, OperationalError):
        if state in _TRANSIENT_STATES or code in _TRANSIENT_CODES or any(
                words in text for words in _SQLITE_TRANSIENT):
            return f"the database refused it for now ({text.strip()}); retried"
    return None
