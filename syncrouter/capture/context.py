"""Per-connection switches: replay in progress (no echo), writes made by capture.

Django keeps one connection object per alias and thread, so a flag on it covers
exactly the writes made through that alias in this thread.
"""
from contextlib import contextmanager

from django.db import connections

_REPLAYING = "syncrouter_replaying"


@contextmanager
def connection_flag(alias: str, name: str):
    """Set the flag ``name`` on ``alias``'s connection for the block (nestable)."""
    connection = connections[alias]
    previous = getattr(connection, name, False)
    setattr(connection, name, True)
    try:
        yield
    finally:
        setattr(connection, name, previous)


def is_replaying(alias: str) -> bool:
    return getattr(connections[alias], _REPLAYING, False)


def replaying(alias: str):
    """Replay writes in this block: capture stays off for them (guarantee 4)."""
    return connection_flag(alias, _REPLAYING)
