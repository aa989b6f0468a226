"""syncrouter's per-connection state: one small object on each Django connection.

Django keeps one connection object per alias and thread, so state kept on it
covers exactly the writes made through that alias in this thread. Every switch
capture, the raw-SQL guard and replay need lives here, in one place, instead of
as loose attributes on the connection.
"""
from __future__ import annotations

import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.db import connections

_ATTRIBUTE = "syncrouter_state"


@dataclass
class ConnectionState:
    #: Replay is writing: capture stays off for these writes (guarantee 4).
    replaying: bool = False
    #: A replay dry run is in progress (rolled back at its end).
    dry_run: bool = False
    #: The writes are capture's own or captured by it: the raw-SQL guard lets them pass.
    captured_writes: bool = False
    #: A queryset bulk path is capturing: Django's nested queryset calls are not captured twice.
    bulk_write: bool = False
    #: (outermost atomic block, its UUID): the producer's database transaction.
    db_transaction: tuple[Any, uuid.UUID] | None = None
    #: Outbox entries collected by ``capture.outbox.batch``, written at its end.
    outbox_buffer: list | None = None
    #: The ``capture.local.LocalWrites`` of a running flush, loaddata or migration.
    local: Any = None


def state(connection) -> ConnectionState:
    """The state of ``connection`` (a Django connection object), made on first use."""
    try:
        return connection.__dict__[_ATTRIBUTE]
    except KeyError:
        return connection.__dict__.setdefault(_ATTRIBUTE, ConnectionState())


def state_of(alias: str) -> ConnectionState:
    """The state of ``alias``'s connection in this thread."""
    return state(connections[alias])


@contextmanager
def switched_on(alias: str, name: str):
    """Set the switch ``name`` of ``alias``'s state for the block (nestable)."""
    current = state_of(alias)
    previous = getattr(current, name)
    setattr(current, name, True)
    try:
        yield
    finally:
        setattr(current, name, previous)


def is_replaying(alias: str) -> bool:
    return state_of(alias).replaying


def replaying(alias: str):
    """Replay writes in this block: capture stays off for them (guarantee 4)."""
    return switched_on(alias, "replaying")
