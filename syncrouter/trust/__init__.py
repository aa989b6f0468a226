"""Trust: node keys, signed transactions, the device registry, write rules, encryption.

The pipeline calls into this package at four places, each one line:

* capture (``capture.outbox.record_many``, later the seal step): ``sign_outbox_rows``;
* copy and import, before a batch is written (``transfer.copy._copy_batch``): ``screen``;
* replay, for each row (``replay.runner``): ``check``, whose refusal is the outcome
  ``refused``;
* export and import of batch files: ``crypto_files`` wraps the archive.
"""
from __future__ import annotations

from collections.abc import Sequence

from .. import conf
from . import keys, signing
from .verify import check, screen

__all__ = ["check", "screen", "sign_outbox_rows"]


def sign_outbox_rows(using: str, rows: Sequence[list], columns: Sequence[str]) -> None:
    """Fill the ``signature`` column of outbox ``rows`` (lists of values in ``columns``
    order) with the signatures of the node behind ``using``, in place.

    Call it where the rows' final sequence and clock are set. Does nothing when
    ``SYNCROUTER_SIGN`` is off; raises ``SyncError`` when the node has no key.
    """
    if not rows or not conf.get("SYNCROUTER_SIGN"):
        return
    node_keys = keys.require(using)
    position = {name: index for index, name in enumerate(columns)}
    values = [{name: row[position[name]] for name in signing.SIGNED_FIELDS} for row in rows]
    column = position["signature"]
    producer = values[0]["producer"]
    for row, signature in zip(rows, signing.sign_rows(node_keys, producer, values)):
        row[column] = signature
