"""Per-connection switch that keeps replayed writes from being captured again (no echo).

Django keeps one connection object per alias and thread, so a flag on it covers
exactly the writes replay makes through that alias in this thread.
"""
from contextlib import contextmanager

from django.db import connections

_FLAG = "syncrouter_replaying"


def is_replaying(alias: str) -> bool:
    return getattr(connections[alias], _FLAG, False)


@contextmanager
def replaying(alias: str):
    connection = connections[alias]
    previous = getattr(connection, _FLAG, False)
    setattr(connection, _FLAG, True)
    try:
        yield
    finally:
        setattr(connection, _FLAG, previous)
