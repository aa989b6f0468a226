"""Conflict detection and resolution (guarantee 6: no silent overwrite).

An update or delete carries the before-state of what it changes: the values the
producer saw. If this node's row no longer holds them, someone else changed the
row in between, and applying the change blindly would overwrite their work. The
conflict goes to the ``Conflict`` ledger and the model's policy decides:

* ``server_wins``: keep this node's row; the incoming change is consumed, not applied.
* ``client_wins``: apply the incoming change over this node's row.
* ``newer_wins``: the change with the later hybrid logical clock wins. The clock
  is taken when a change is captured and never runs backwards on a producer, so
  a laptop whose wall clock is a day fast wins only against changes it has
  already seen, not everything.
* ``manual`` (the default): hold the incoming change unapplied until someone
  resolves the ledger row (``manage.py syncrouter resolve`` or the admin).

Fields with ``auto_now`` are not compared: every save changes them.
"""
from __future__ import annotations

from django.db.models import Max
from django.utils import timezone

from .. import conf, serialization as ser
from ..exceptions import SyncError

_UNKNOWN = object()


def policy_for(model) -> str:
    from ..models.conflict import POLICIES

    label = model._meta.label_lower
    policy = conf.get("SYNCROUTER_CONFLICT_POLICIES").get(
        label, getattr(model, "sync_conflict_policy", conf.get("SYNCROUTER_CONFLICT_POLICY")))
    if policy not in POLICIES:
        raise SyncError(f"Conflict policy {policy!r} for {label} is not one of "
                        f"{', '.join(POLICIES)}.")
    return policy


def as_unknown_base(fields: dict) -> dict:
    """A before-state that matches nothing: an insert that meets an existing, different row."""
    return {name: _UNKNOWN for name in fields}


def _normal(value):
    return ser.loads(ser.dumps(value))


def mismatches(model, existing, before: dict) -> dict:
    """name -> (base, current) for each field whose current value differs from the base."""
    found = {}
    for name, base in before.items():
        field = model._meta.get_field(name)
        if getattr(field, "auto_now", False):
            continue
        current = _normal(ser.encode_field(existing, field))
        if base is _UNKNOWN:
            found[name] = (None, current)
            continue
        if field.is_relation or base is None or current is None:
            same = _normal(base) == current
        else:
            same = ser.decode_value(field, base) == field.value_from_object(existing)
        if not same:
            found[name] = (base, current)
    return found


def row_hlc(model, existing, alias: str) -> int | None:
    """The latest clock of a change to this row known here (replayed or made locally)."""
    from ..models import IncomingTransaction, OutgoingTransaction

    label, pk = model._meta.label_lower, str(existing.pk)
    latest = [
        IncomingTransaction.objects.using(alias).filter(
            tx_name=label, tx_pk=pk, is_consumed=True).aggregate(m=Max("hlc"))["m"],
        OutgoingTransaction.objects.using(alias).filter(
            tx_name=label, tx_pk=pk).aggregate(m=Max("hlc"))["m"],
    ]
    latest = [value for value in latest if value is not None]
    return max(latest) if latest else None


def check(model, existing, payload: dict, alias: str, tx) -> tuple[str, str]:
    """Decide an update/delete of ``existing``: ("apply" | "skip" | "hold", conflict text).

    The text is empty when there is no conflict. A held change leaves its ledger
    row committed and the incoming transaction unconsumed.
    """
    from ..models import Conflict

    before = payload.get("before")
    if before is None:
        return "apply", ""  # the producer knew no before-state: nothing to compare
    recorded = Conflict.objects.using(alias).filter(tx_id=tx.id).first()
    if recorded is not None and recorded.resolution != "pending":
        decision = "apply" if recorded.resolution == "incoming_applied" else "skip"
        return decision, f"conflict #{recorded.pk} resolved: {recorded.get_resolution_display()}"
    differing = mismatches(model, existing, before)
    if not differing:
        return "apply", ""
    if recorded is not None:
        return "hold", f"conflict #{recorded.pk} is waiting for a decision"
    policy = policy_for(model)
    current_hlc = row_hlc(model, existing, alias)
    if policy == "server_wins":
        resolution = "server_kept"
    elif policy == "client_wins":
        resolution = "incoming_applied"
    elif policy == "newer_wins":
        newer = current_hlc is None or (tx.hlc, tx.producer) > (current_hlc, "")
        resolution = "incoming_applied" if newer else "server_kept"
    else:
        resolution = "pending"
    conflict = Conflict.objects.using(alias).create(
        tx_id=tx.id, model=model._meta.label_lower, key=ser.dumps(payload["nk"]),
        action=tx.action, producer=tx.producer, policy=policy,
        base=ser.dumps({k: None if v is _UNKNOWN else v for k, v in before.items()}),
        incoming=ser.dumps(payload.get("fields", {})),
        current=ser.dumps(ser.row_fields(existing)), incoming_hlc=tx.hlc,
        current_hlc=current_hlc, resolution=resolution,
        resolved_datetime=None if resolution == "pending" else timezone.now(),
        resolved_by="" if resolution == "pending" else f"policy:{policy}")
    text = f"conflict #{conflict.pk} on {', '.join(sorted(differing))} ({policy}): "
    if resolution == "pending":
        return "hold", text + "held for a decision"
    if resolution == "incoming_applied":
        return "apply", text + "incoming change applied"
    return "skip", text + "this node's row kept"
