"""One replay at a time per database: a second one waits for the first.

Two replays of one inbox would race for the same rows: each checks a row, the
other inserts it, and the loser meets a unique violation for a row that is in
fact fine. Replay is correct without this lock (the conditional consumed mark
applies nothing twice, and a clash only makes a unit wait for a retry), but it
would be noisy and slow. So a replay holds a lock for its run: on PostgreSQL a
session advisory lock, on MySQL/MariaDB a named lock, on SQLite an operating
system lock on a file beside the database file (``<name>.replay-lock``:
SQLite's own locks are per transaction, and a second writer that meets one
gives up at once with "database is locked").

The lock is released when the run ends, even on error; a process that dies
releases it with its connection (or its open file).
"""
from __future__ import annotations

import logging
import os
import time
import zlib
from contextlib import contextmanager

from django.db import DatabaseError, connections

logger = logging.getLogger("syncrouter.replay")

NAME = "syncrouter.replay"
#: PostgreSQL advisory locks take a bigint: a fixed number derived from the name.
KEY = zlib.crc32(NAME.encode())


@contextmanager
def replay_lock(alias: str):
    """Hold the replay lock of ``alias`` for the block, waiting for another holder."""
    connection = connections[alias]
    if connection.vendor == "postgresql":
        take_now, take, release = ("SELECT pg_try_advisory_lock(%s)", "SELECT pg_advisory_lock(%s)",
                                   "SELECT pg_advisory_unlock(%s)")
        args = [KEY]
    elif connection.vendor == "mysql":
        take_now, take, release = ("SELECT GET_LOCK(%s, 0)", "SELECT GET_LOCK(%s, -1)",
                                   "SELECT RELEASE_LOCK(%s)")
        args = [NAME]
    elif connection.vendor == "sqlite":
        with _file_lock(connection.settings_dict["NAME"], alias):
            yield
        return
    else:
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute(take_now, args)
        if not cursor.fetchone()[0]:
            logger.info("Another replay is running on %s; waiting for it to finish.", alias)
            cursor.execute(take, args)
    try:
        yield
    finally:
        try:
            with connection.cursor() as cursor:
                cursor.execute(release, args)
        except DatabaseError:  # the session is gone or aborted: the lock went with it
            logger.info("Could not release the replay lock on %s.", alias, exc_info=True)


@contextmanager
def _file_lock(name, alias: str):
    """Hold an exclusive lock on ``<name>.replay-lock`` (no lock for in-memory databases)."""
    name = str(name)
    if not name or ":memory:" in name or "mode=memory" in name:
        yield
        return
    with open(f"{name}.replay-lock", "a+b") as handle:
        if not _try_lock(handle):
            logger.info("Another replay is running on %s; waiting for it to finish.", alias)
            _lock(handle)
        try:
            yield
        finally:
            _unlock(handle)


if os.name == "nt":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _try_lock(handle) -> bool:
        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _lock(handle) -> None:
        while not _try_lock(handle):
            time.sleep(0.2)

    def _unlock(handle) -> None:
        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
else:
    import fcntl

    def _try_lock(handle) -> bool:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        return True

    def _lock(handle) -> None:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)

    def _unlock(handle) -> None:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
