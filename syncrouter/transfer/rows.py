"""What travels with a transaction on each hop, how the sender marks it sent, and how
rows fall into their producer's database transactions."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import NamedTuple

from django.db import connections

from .. import serialization as ser
from ..conf import Node
from ..params import chunks

#: Fields a transaction keeps on every hop.
IDENTITY_FIELDS = ("id", "tx", "tx_name", "tx_pk", "producer", "hostname", "sequence",
                   "db_transaction_id", "hlc", "action", "timestamp", "signature")


class CopyResult(NamedTuple):
    copied: int
    already_present: int


def incoming_hops(row, target_name: str) -> str:
    """The row's hop list with the target appended, as stored on the target."""
    return ser.dumps(ser.loads(row.hops) + [target_name])


def sent_flag(target: Node) -> str:
    """The column that marks a row sent to ``target``: a middleman is a hop on the way,
    so rows sent to it still go to a server."""
    return "is_consumed_middleman" if target.role == "middleman" else "is_consumed_server"


def mark_sent(model, alias: str, ids: list, **values) -> None:
    """Set ``values`` (the sent flag, when and to whom) on the rows ``ids`` of ``model``
    on ``alias``, inside the caller's transaction. The base manager: rows being
    sent are sealed already, so the outbox's manager need not seal again per chunk."""
    for chunk in chunks(ids, connections[alias]):
        model._base_manager.using(alias).filter(id__in=chunk).update(**values)


def same_group(row, other) -> bool:
    """Whether two rows were written in one database transaction of one producer."""
    return (row.producer, row.db_transaction_id) == (other.producer, other.db_transaction_id)


def transaction_groups(rows: Iterable) -> Iterator[list]:
    """``rows`` cut into producer database transactions (consecutive, same producer and id)."""
    group: list = []
    for row in rows:
        if group and not same_group(group[-1], row):
            yield group
            group = []
        group.append(row)
    if group:
        yield group
