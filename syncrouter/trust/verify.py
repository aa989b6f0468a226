"""Verification of received transactions: at copy and import (``screen``), at replay (``check``).

A receiving node believes a transaction only if its producer is enrolled in
the node's device registry, is not revoked for that sequence, and signed it
with the key enrolled under that name; a row whose producer is the receiving
node itself is always refused (a node never receives its own transactions).
Rows that fail at copy or import never reach the inbox: they are recorded in
``RefusedTransaction`` and the rest of the batch or file goes on. Replay checks
again, because rows can reach an inbox by other ways (a restored backup, a
hand-written row), and then applies the write rules (``rules``).

``SYNCROUTER_VERIFY = False`` switches all of it off; ``SYNCROUTER_ACCEPT_UNSIGNED``
lets unsigned rows of enrolled, unrevoked producers through (the upgrade path).

Signatures cover the plaintext payload: an encrypted one (``atrest``) is revealed
first. A payload that fails authentication is refused like a bad signature. One
whose key is not in this node's keyring cannot be checked yet: copy and import
let it into the inbox, where replay checks it once the key is there (and waits
until then); nothing in an inbox is believed before replay's check.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping

import orjson

from .. import conf
from ..models import RefusedTransaction
from . import atrest, devices, rules, signing

logger = logging.getLogger("syncrouter.trust")


def enabled() -> bool:
    return bool(conf.get("SYNCROUTER_VERIFY"))


def signature_refusal(values: Mapping, registry: devices.Registry, own_name: str) -> str | None:
    """Why the node ``own_name`` must not believe the row ``values``, or None.

    ``values`` holds the signed fields and ``signature`` (``signing.values_of``).
    """
    producer, sequence = values["producer"], values["sequence"]
    if producer == own_name:
        return (f"refused: names this node ({own_name}) as its producer; a node never "
                "receives its own transactions")
    device = registry.by_name.get(producer)
    if device is None:
        return f"refused: unknown producer {producer!r} (not enrolled: 'keys trust')"
    if device.revoked_after is not None and sequence > device.revoked_after:
        return (f"refused: device {producer!r} was revoked after #{device.revoked_after}; "
                f"this is #{sequence}")
    if not values["signature"]:
        if conf.get("SYNCROUTER_ACCEPT_UNSIGNED"):
            return None
        return "refused: unsigned (SYNCROUTER_ACCEPT_UNSIGNED is off)"
    try:
        signing.verify(values, device.keys)
    except signing.WrongKey as exc:
        owner = registry.by_key_id.get(exc.key_id)
        whose = f"the key of {owner.name!r}" if owner else f"an unknown key ({exc.key_id})"
        return (f"refused: producer {producer!r} does not match its key: signed with "
                f"{whose}, not with the key enrolled for {producer!r}")
    except signing.BadSignature as exc:
        return f"refused: bad signature: {exc}"
    except (ValueError, TypeError) as exc:  # a field that cannot be encoded (a bad UUID)
        return f"refused: bad signature: a signed field cannot be read ({exc})"
    return None


def signed_values(row, plain: str | None = None) -> dict:
    """The row's signed fields and signature by name, its payload revealed (or ``plain``,
    when the caller has revealed it already), for ``verify``.

    Raises ``atrest.Unreadable`` for a payload that cannot be decrypted here.
    """
    values = signing.values_of(row)
    values["tx"] = atrest.reveal(values["tx"], values["id"]) if plain is None else plain
    return values


def screen(rows: list, target: str, source: str) -> list:
    """The rows of a copy or import batch that ``target`` may receive, in order.

    Each refused row is recorded in ``RefusedTransaction`` on ``target`` (with
    ``source``, the alias or file it came from) and logged. The caller's
    transaction covers the records, so they commit with the batch.
    """
    if not enabled() or not rows:
        return rows
    registry = devices.registry(target)
    own = conf.node_for_alias(target).name
    kept = []
    for row in rows:
        try:
            reason = signature_refusal(signed_values(row), registry, own)
        except atrest.KeyUnavailable as exc:
            logger.warning("%s#%s from %s is not verified yet: %s", row.producer,
                           row.sequence, source, exc)
            reason = None
        except atrest.Tampered as exc:
            reason = f"refused: {exc}"
        if reason is None:
            kept.append(row)
            continue
        logger.warning("%s#%s %s from %s: %s", row.producer, row.sequence, row.tx_name,
                       source, reason)
        refused = RefusedTransaction.objects.using(target)
        if not refused.filter(tx_id=row.id, signature=row.signature, reason=reason).exists():
            refused.create(tx_id=row.id, producer=row.producer, sequence=row.sequence,
                           tx_name=row.tx_name, action=row.action, signature=row.signature,
                           reason=reason, source=source[:300], row=_record(row))
    return kept


def _record(row) -> str:
    """A refused row's values as JSON for ``RefusedTransaction``, its payload at rest (a
    file's rows carry it in plain)."""
    values = signing.values_of(row)
    values["tx"] = atrest.at_rest(values["tx"], values["id"])
    return orjson.dumps(values, default=str).decode()


def check(row, payload: dict, model, alias: str, plain: str | None = None) -> str | None:
    """Replay's check of one incoming row: signature, registry, then write rules.

    Returns why it is refused, or None. Cheap for the rows of one signing
    group after the first (a few SHA-256 hashes each). ``plain`` is the payload
    text the caller revealed (``atrest``), so that it is not decrypted twice.
    """
    if not enabled():
        return None
    registry = devices.registry(alias)
    reason = signature_refusal(signed_values(row, plain), registry,
                               conf.node_for_alias(alias).name)
    if reason is not None:
        return reason
    reason = rules.refusal(row, payload, model, alias, registry.by_name.get(row.producer))
    return None if reason is None else f"refused by {reason}"
