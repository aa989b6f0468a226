"""Conflict detection and resolution (guarantee 6: no silent overwrite).

An update or delete carries the before-state of what it changes: the values the
producer saw. If this node's row no longer holds them, someone else changed the
row in between, and applying the change blindly would overwrite their work. The
conflict goes to the ``Conflict`` ledger and the model's policy decides:

* ``server_wins``: keep this node's row; the incoming change is consumed, not applied.
* ``client_wins``: apply the incoming change over this node's row.
* ``newer_wins``: the change with the later hybrid logical clock wins (a tie
  keeps this node's row). The clock is read on the producer when it captures
  the change, so a laptop whose wall clock runs a day fast wins its concurrent
  conflicts for that day: the ledger keeps both clocks so this can be audited.
* ``manual`` (the default): hold the incoming change unapplied until someone
  decides with ``resolve(conflict, keep="server" | "incoming")``; the next
  replay acts on the decision.

An insert that meets a different row (another primary key) under the same
natural key, and an update of a row this node deleted, are conflicts too.

Fields with ``auto_now`` are not compared: every save changes them.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from django.db.models import Max
from django.utils import timezone

from .. import conf, serialization as ser
from ..exceptions import SyncError
from .messages import Outcome

if TYPE_CHECKING:
    from ..models import Conflict

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


def row_hlc(model, pk, key, alias: str) -> int | None:
    """The latest clock of a change to this row known here.

    Changes replayed or made here are found by primary key; a change applied
    over a row with another primary key (an insert that met this row under its
    natural key) only through the conflict ledger, by natural key.
    """
    from ..models import Conflict, IncomingTransaction, OutgoingTransaction

    label, pk = model._meta.label_lower, str(pk)
    latest = [
        IncomingTransaction.objects.using(alias).filter(
            tx_name=label, tx_pk=pk, is_consumed=True).aggregate(m=Max("hlc"))["m"],
        OutgoingTransaction.objects.using(alias).filter(
            tx_name=label, tx_pk=pk).aggregate(m=Max("hlc"))["m"],
        Conflict.objects.using(alias).filter(
            model=label, key=ser.dumps(key), resolution="incoming_applied").aggregate(
            m=Max("incoming_hlc"))["m"],
    ]
    latest = [value for value in latest if value is not None]
    return max(latest) if latest else None


def reflected_later(tx, alias: str, current, holds) -> int | None:
    """Sequence of a later change of this row by ``tx``'s producer that this node reflects.

    Within a producer, sequence order is the truth: an earlier change that
    comes (again) after a later one is stale, which is what makes replaying the
    same rows twice, in any order or overlap, leave the tables as they are. A
    later change counts when it is consumed here, or, still pending (marks
    reset), when it deletes the absent row (``current`` None) or when
    ``holds(fields)`` says the row already has its values.
    """
    from ..models import IncomingTransaction

    later = IncomingTransaction.objects.using(alias).filter(
        tx_name=tx.tx_name, tx_pk=tx.tx_pk, producer=tx.producer, sequence__gt=tx.sequence,
        is_error=False).order_by("-sequence").values_list("sequence", "is_consumed", "action", "tx")
    for sequence, consumed, action, text in later:
        if consumed or (current is None and action == "D"):
            return sequence
        if current is not None and holds is not None and action != "D":
            fields = ser.loads(text).get("fields")
            if fields and holds(fields):
                return sequence
    return None


def deleted_here(model, pk, alias: str) -> bool:
    """Whether this node deleted the row with primary key ``pk`` (replayed or locally)."""
    from ..models import IncomingTransaction, OutgoingTransaction

    if pk is None:
        return False
    rows = {"tx_name": model._meta.label_lower, "tx_pk": str(pk), "action": "D"}
    return (IncomingTransaction.objects.using(alias).filter(is_consumed=True, **rows).exists()
            or OutgoingTransaction.objects.using(alias).filter(**rows).exists())


def _decide(policy: str, tx, current_hlc: int | None) -> str:
    if policy == "server_wins":
        return "server_kept"
    if policy == "client_wins":
        return "incoming_applied"
    if policy == "newer_wins":
        newer = current_hlc is None or tx.hlc > current_hlc
        return "incoming_applied" if newer else "server_kept"
    return "pending"


def check(model, existing, payload: dict, alias: str, tx,
          gap: tuple[int, int] | None = None,
          differing: dict | None = None) -> tuple[str, str]:
    """Decide an update/delete of ``existing``: ("apply" | "skip", conflict text).

    ``existing`` is None when this node deleted the row the change is about.
    The text is empty when there is no conflict. A conflict held for a decision
    raises ``Outcome("held")`` carrying its unsaved ledger row. ``gap`` is a
    range of this producer's earlier sequences not here yet: while one is
    missing, a differing before-state may be that missing change, so the
    transaction waits instead of becoming a conflict. ``differing`` is
    ``mismatches(model, existing, before)`` when the caller has it already.
    """
    from ..models import Conflict

    before = payload.get("before")
    if before is None:
        return "apply", ""  # the producer knew no before-state: nothing to compare
    recorded = Conflict.objects.using(alias).filter(tx_id=tx.id).first()
    if recorded is not None and recorded.resolution != "pending":
        decision = "apply" if recorded.resolution == "incoming_applied" else "skip"
        return decision, f"conflict #{recorded.pk} resolved: {recorded.get_resolution_display()}"
    if existing is None:
        differing = {name: (base, None) for name, base in before.items()}
    elif differing is None:
        differing = mismatches(model, existing, before)
    label = model._meta.label_lower
    if not differing:
        if recorded is not None:
            recorded.resolution, recorded.resolved_by = "incoming_applied", "replay:matched"
            recorded.resolved_datetime = timezone.now()
            recorded.save(using=alias)
        return "apply", ""
    if gap is not None:
        raise Outcome("deferred", (
            f"{label} {payload['nk']}: {', '.join(sorted(differing))} differ from what "
            f"{tx.producer} saw, and its transactions #{gap[0]}-{gap[1]} have not arrived; "
            "waiting for them before calling it a conflict"))
    if recorded is not None:
        raise Outcome("held", f"conflict #{recorded.pk} is waiting for a decision")
    policy = policy_for(model)
    pk = existing.pk if existing is not None else payload.get("pk") or tx.tx_pk
    current_hlc = row_hlc(model, pk, payload["nk"], alias)
    resolution = _decide(policy, tx, current_hlc)
    conflict = Conflict(
        tx_id=tx.id, model=label, key=ser.dumps(payload["nk"]),
        action=tx.action, producer=tx.producer, policy=policy,
        base=ser.dumps({k: None if v is _UNKNOWN else v for k, v in before.items()}),
        incoming=ser.dumps(payload.get("fields", {})),
        current=ser.dumps({} if existing is None else ser.row_fields(existing)),
        incoming_hlc=tx.hlc, current_hlc=current_hlc, resolution=resolution,
        resolved_datetime=None if resolution == "pending" else timezone.now(),
        resolved_by="" if resolution == "pending" else f"policy:{policy}")
    gone = "" if existing is not None else "row deleted on this node; "
    text = f"on {gone}{', '.join(sorted(differing))} ({policy}): "
    if resolution == "pending":
        raise Outcome("held", text + "held for a decision", ledger=conflict)
    conflict.save(using=alias)
    text = f"conflict #{conflict.pk} {text}"
    if resolution == "incoming_applied":
        return "apply", text + "incoming change applied"
    return "skip", text + "this node's row kept"


KEEP = {"server": "server_kept", "incoming": "incoming_applied"}


def resolve(conflict: Conflict, keep: str, by: str = "") -> Conflict:
    """Decide a conflict held under the ``manual`` policy (or re-decide an unreplayed one).

    ``keep="server"`` consumes the incoming change without applying it;
    ``keep="incoming"`` applies it over this node's row. The decision is saved
    on the ledger row's own database; the next replay there acts on it.
    ``by`` names who decided (a user name), for the record.
    """
    from ..models import IncomingTransaction

    if keep not in KEEP:
        raise SyncError(f"resolve(keep={keep!r}): keep must be 'server' or 'incoming'.")
    alias = conflict._state.db
    if IncomingTransaction.objects.using(alias).filter(id=conflict.tx_id,
                                                       is_consumed=True).exists():
        raise SyncError(f"Conflict #{conflict.pk} ({conflict.model} {conflict.key}) was already "
                        f"replayed as {conflict.get_resolution_display()!r}; it cannot be "
                        "decided again.")
    conflict.resolution = KEEP[keep]
    conflict.resolved_datetime = timezone.now()
    conflict.resolved_by = by or "manual"
    conflict.save(using=alias, update_fields=["resolution", "resolved_datetime", "resolved_by"])
    return conflict
