"""What travels with a transaction on each hop, and what a copy reports."""
from __future__ import annotations

from typing import NamedTuple

from .. import serialization as ser

#: Fields a transaction keeps on every hop.
IDENTITY_FIELDS = ("id", "tx", "tx_name", "tx_pk", "producer", "hostname", "sequence",
                   "db_transaction_id", "hlc", "action", "timestamp", "signature")


class CopyResult(NamedTuple):
    copied: int
    already_present: int


def incoming_hops(row, target_name: str) -> str:
    """The row's hop list with the target appended, as stored on the target."""
    return ser.dumps(ser.loads(row.hops) + [target_name])
