"""The natural keys a transaction writes or depends on, for keeping a producer's order.

Once a row of producer P cannot be applied yet (deferred, held, in error), P's
later rows that touch one of its keys (as the row itself, a parent or an M2M
target) must wait behind it; these sets say what "touch" means. A key is
(model label, natural key as ``serialization.dumps`` text).
"""
from __future__ import annotations

from .. import serialization as ser

#: The key a row holds whose payload cannot be read yet (its payload key is not in the
#: keyring): it may write any row, so every later row of its producer touches it.
UNREAD = ("", "a payload not readable yet")


def own(row, payload: dict | None) -> set:
    """(model label, key) pairs of the row this transaction writes (before and after);
    ``UNREAD`` for a payload not readable yet (None)."""
    if payload is None:
        return {UNREAD}
    return {(row.tx_name, ser.dumps(payload.get("nk"))),
            (row.tx_name, ser.dumps(payload.get("old_nk", payload.get("nk"))))}


def touched(row, payload: dict, model) -> set:
    """(model label, key) pairs this transaction writes or depends on (parents, M2M targets)."""
    keys = own(row, payload) | {UNREAD}
    for name, value in payload.get("fields", {}).items():
        field = model._meta._forward_fields_map.get(name)
        if field is not None and field.is_relation and value is not None:
            keys.add((field.related_model._meta.label_lower, ser.dumps(value)))
    change = payload.get("m2m")
    if change:
        field = model._meta._forward_fields_map.get(change.get("field"))
        if field is not None and field.many_to_many:
            keys.update((field.related_model._meta.label_lower, ser.dumps(k))
                        for k in change.get("keys", []))
    return keys
