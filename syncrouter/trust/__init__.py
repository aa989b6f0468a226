"""Trust: node keys, signed transactions, the device registry, write rules, encryption.

The pipeline calls into this package at four places, each one line:

* capture (``capture.outbox.record_many`` on SQLite, ``capture.seal`` on PostgreSQL):
  ``sign_outbox_rows``; where the seal signs, capture writes ``signature_at_capture``;
  then ``protect_outbox_rows`` (at-rest encryption of the payload, ``atrest``);
* copy and import, before a batch is written (``transfer.copy._copy_batch``): ``screen``;
* replay, for each row (``replay.runner``): ``check``, whose refusal is the outcome
  ``refused``;
* export and import of batch files: ``crypto_files`` wraps the archive.
"""
from __future__ import annotations

from collections.abc import Sequence

from .. import conf
from . import atrest, keys, signing
from .verify import check, screen

__all__ = ["SIGN_AT_SEAL", "check", "protect_outbox_rows", "screen", "sign_outbox_rows",
           "signature_at_capture", "signing_required"]

#: The ``signature`` capture writes on an unsealed outbox row that the seal must sign.
SIGN_AT_SEAL = "sign-at-seal"


def signing_required() -> bool:
    """Whether this node signs what it captures (``SYNCROUTER_SIGN``)."""
    return bool(conf.get("SYNCROUTER_SIGN"))


def signature_at_capture(using: str) -> str:
    """The ``signature`` to write on a row the seal numbers later: ``SIGN_AT_SEAL`` when the
    node signs, else empty. Whether a row is signed is decided at capture, like it is
    where capture signs; and a node that must sign but has no key (``SyncError``) is
    refused now, before the user's write commits, not when its rows are sealed.
    """
    if not signing_required():
        return ""
    keys.require(using)
    return SIGN_AT_SEAL


def sign_outbox_rows(using: str, rows: Sequence[list], columns: Sequence[str], *,
                     required: bool | None = None) -> None:
    """Fill the ``signature`` column of outbox ``rows`` (lists of values in ``columns``
    order, one producer) with the signatures of that producer, the node behind ``using``
    (or the name it captured them under: ``keys.key_source``), in place.

    Call it where the rows' final sequence and clock are set. Does nothing when
    ``required`` is false (by default: when ``SYNCROUTER_SIGN`` is off); raises
    ``SyncError`` when the node has no key.
    """
    if not rows or not (signing_required() if required is None else required):
        return
    position = {name: index for index, name in enumerate(columns)}
    values = [{name: row[position[name]] for name in signing.SIGNED_FIELDS} for row in rows]
    for value in values:  # signatures cover the plaintext, also of rows read back encrypted
        value["tx"] = atrest.reveal(value["tx"], value["id"])
    column = position["signature"]
    producer = values[0]["producer"]
    node_keys = keys.require(using, producer)
    for row, signature in zip(rows, signing.sign_rows(node_keys, producer, values)):
        row[column] = signature


def protect_outbox_rows(rows: Sequence[list], columns: Sequence[str]) -> None:
    """Encrypt the payload (``tx``) of outbox ``rows`` under the current payload key, in
    place, once they are signed (signatures cover the plaintext). Does nothing when
    at-rest encryption is off."""
    if not rows or not atrest.enabled():
        return
    payload, row_id = columns.index("tx"), columns.index("id")
    for row in rows:
        row[payload] = atrest.protect(row[payload], row[row_id])
