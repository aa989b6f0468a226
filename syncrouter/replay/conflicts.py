"""Conflict detection and resolution (guarantee 6: no silent overwrite).

An update or delete carries the before-state of the fields it changes: the
values the producer saw. If this node's row no longer holds them, someone else
changed those fields in between, and writing the change blindly would
overwrite their work. Only the fields the producer changed are compared and
written: a field this node corrected that the producer did not touch is never
written back. A conflict goes to the ``Conflict`` ledger and the model's policy
decides **the conflicting fields**; the change's other fields conflict with
nothing and apply whatever the decision:

* ``server_wins``: this node keeps its values of the conflicting fields (a
  conflicting delete keeps the row).
* ``client_wins``: the incoming values are written over them.
* ``newer_wins``: the change with the later hybrid logical clock wins (a tie
  keeps this node's values). The clock is read on the producer, so a laptop
  whose wall clock runs a day fast wins its concurrent conflicts for that day:
  the ledger keeps both clocks so this can be audited.
* ``manual`` (the default): the whole change is held unapplied until someone
  decides with ``resolve(conflict, keep="server" | "incoming")``; the next
  replay acts on the decision.

Conflicts of identity are conflicts too: an insert that meets another row
under the same natural key (every field is then compared, with no base), an
update of a row this node deleted, and every later change of a producer's row
whose insert was refused here (this node kept its own row under that key, so
the producer's row is another row: ``identity``).

Fields with ``auto_now`` are not compared: every save changes them.
"""
from __future__ import annotations

from dataclasses import dataclass, field as dataclass_field

from django.db.models import Max
from django.utils import timezone

from .. import conf, serialization as ser
from ..enums import ConflictPolicy, Resolution
from ..exceptions import SyncError
from ..models import Conflict, IncomingTransaction, OutgoingTransaction
from ..trust import atrest
from .messages import HELD, ApplyStopped

#: A before-state value that matches nothing: the producer did not know this node's row.
UNKNOWN = object()


def policy_for(model) -> str:
    label = model._meta.label_lower
    policy = conf.get("SYNCROUTER_CONFLICT_POLICIES").get(
        label, getattr(model, "sync_conflict_policy", conf.get("SYNCROUTER_CONFLICT_POLICY")))
    if policy not in ConflictPolicy.values:
        raise SyncError(f"Conflict policy {policy!r} for {label} is not one of "
                        f"{', '.join(ConflictPolicy.values)}.")
    return policy


def as_unknown_base(fields) -> dict:
    """A before-state that matches nothing, for each of ``fields``."""
    return {name: UNKNOWN for name in fields}


def _normal(value):
    return ser.loads(ser.dumps(value))


def holds(field, value, obj) -> bool:
    """Whether ``obj`` has the travelling ``value`` in ``field`` (foreign keys by natural key)."""
    current = _normal(ser.encode_field(obj, field))
    if field.is_relation or value is None or current is None or type(value) is list:
        return _normal(value) == current  # lists: natural keys (a generic object id), JSON
    return ser.same(ser.decode_value(field, value), field.value_from_object(obj))


def mismatches(model, existing, before: dict) -> dict:
    """name -> (base, current) for each field whose current value differs from the base."""
    found = {}
    for name, base in before.items():
        field = model._meta.get_field(name)
        if getattr(field, "auto_now", False):
            continue
        if base is UNKNOWN or not holds(field, base, existing):
            found[name] = (None if base is UNKNOWN else base,
                           _normal(ser.encode_field(existing, field)))
    return found


def row_hlc(model, pk, key, alias: str) -> int | None:
    """The latest clock of a change to this row known here.

    Changes replayed or made here are found by primary key; a change applied
    over a row with another primary key (an insert that met this row under its
    natural key) only through the conflict ledger, by natural key.
    """
    label, pk = model._meta.label_lower, str(pk)
    latest = [
        IncomingTransaction.objects.using(alias).filter(
            tx_name=label, tx_pk=pk, is_consumed=True).aggregate(m=Max("hlc"))["m"],
        OutgoingTransaction.objects.using(alias).filter(
            tx_name=label, tx_pk=pk).aggregate(m=Max("hlc"))["m"],
        Conflict.objects.using(alias).filter(
            model=label, key=ser.dumps(key), resolution=Resolution.INCOMING_APPLIED).aggregate(
            m=Max("incoming_hlc"))["m"],
    ]
    latest = [value for value in latest if value is not None]
    return max(latest) if latest else None


@dataclass
class Later:
    """What the producer of a transaction did later to the same row, as far as this node knows.

    Within a producer, sequence order is the truth. A change that arrives (or is
    replayed again) after a later change of the same row by the same producer
    has been applied here must not undo it: only the parts of it that no later
    applied change rewrote still count. Filled from the incoming rows of the
    same producer and row (``tx_name``, ``tx_pk``) with a higher sequence.
    """

    #: Sequence of a consumed later change (any kind), or None.
    consumed: int | None = None
    #: Sequence of a consumed later delete, or None.
    deleted: int | None = None
    #: (sequence, {field name: travelling value}) of later updates not applied here.
    pending: list = dataclass_field(default_factory=list)
    #: Field name -> sequence of the consumed later change that wrote it.
    fields: dict = dataclass_field(default_factory=dict)
    #: (sequence, m2m change) of consumed later many-to-many changes.
    m2m: list = dataclass_field(default_factory=list)

    def stale_fields(self, names, existing, before: dict | None) -> dict[str, int]:
        """name -> later sequence, for the fields of ``names`` a later change settles:
        writing the earlier value would only be undone.

        A later change applied here settles what it wrote. A later change not applied
        yet settles a field only where this change could not apply anyway, its
        before-state no longer holding, while the row holds the later change's value:
        every mark was reset after both were applied. Where the before-state holds,
        the later change may never apply as it stands (held by a conflict, say), so
        this change applies, as it would one transaction at a time (found by the
        model-based convergence test).
        """
        stale = {name: self.fields[name] for name in names if name in self.fields}
        model = type(existing)
        for sequence, written in self.pending:
            for name in names:
                if name not in written or name in stale:
                    continue
                field = model._meta.get_field(name)
                if before is not None and holds(field, before[name], existing):
                    continue
                if holds(field, written[name], existing):
                    stale[name] = sequence
        return stale

    def settled_links(self, field_name: str) -> dict[str, int]:
        """Target key text -> later sequence, for links of ``field_name`` a later applied
        many-to-many change of the same owner settled."""
        settled: dict[str, int] = {}
        for sequence, change in self.m2m:
            if change.get("field") != field_name:
                continue
            for key in change.get("keys", ()):
                settled.setdefault(ser.dumps(key), sequence)
        return settled


def later_changes(tx, alias: str) -> Later:
    """The ``Later`` of ``tx``: one indexed query on (tx_name, tx_pk, producer, sequence)."""
    later = Later()
    rows = IncomingTransaction.objects.using(alias).filter(
        tx_name=tx.tx_name, tx_pk=tx.tx_pk, producer=tx.producer, sequence__gt=tx.sequence,
        is_error=False).order_by("sequence").values_list("sequence", "is_consumed", "action",
                                                         "tx", "id")
    for sequence, consumed, action, text, row_id in rows:
        try:
            payload = ser.loads(atrest.reveal(text, row_id))
        except (ValueError, atrest.Unreadable):
            continue
        if not isinstance(payload, dict):
            continue
        written = _written(payload)
        if consumed:
            later.consumed = later.consumed or sequence
            if action == "D":
                later.deleted = later.deleted or sequence
            if "m2m" in payload:
                later.m2m.append((sequence, payload["m2m"]))
            for name in written:
                later.fields.setdefault(name, sequence)
        elif action == "U" and written:
            later.pending.append((sequence, {name: payload["fields"][name] for name in written
                                             if name in payload.get("fields", {})}))
    return later


def _written(payload: dict) -> list[str]:
    """The fields an update writes: those it changed (all of them for a payload without a
    before-state, written by an older version)."""
    if "m2m" in payload or not isinstance(payload.get("fields"), dict):
        return []
    before = payload.get("before")
    return list(before if isinstance(before, dict) else payload["fields"])


def deleted_here(model, pk, alias: str) -> bool:
    """Whether this node deleted the row with primary key ``pk`` (replayed or locally)."""
    if pk is None:
        return False
    rows = {"tx_name": model._meta.label_lower, "tx_pk": str(pk), "action": "D"}
    return (IncomingTransaction.objects.using(alias).filter(is_consumed=True, **rows).exists()
            or OutgoingTransaction.objects.using(alias).filter(**rows).exists())


def insert_resolution(tx, alias: str) -> str | None:
    """How this node settled the insert of ``tx``'s row (its producer and ``tx_pk``) when
    that insert met another row here: a ``Conflict`` resolution, or None if it met none."""
    inserts = IncomingTransaction.objects.using(alias).filter(
        tx_name=tx.tx_name, tx_pk=tx.tx_pk, producer=tx.producer, action="I").values("id")
    return Conflict.objects.using(alias).filter(tx_id__in=inserts).values_list(
        "resolution", flat=True).first()


def _decide(policy: str, tx, current_hlc: int | None) -> str:
    if policy == ConflictPolicy.SERVER_WINS:
        return Resolution.SERVER_KEPT
    if policy == ConflictPolicy.CLIENT_WINS:
        return Resolution.INCOMING_APPLIED
    if policy == ConflictPolicy.NEWER_WINS:
        newer = current_hlc is None or tx.hlc > current_hlc
        return Resolution.INCOMING_APPLIED if newer else Resolution.SERVER_KEPT
    return Resolution.PENDING


def check(model, existing, payload: dict, alias: str, tx, before: dict,
          differing: dict) -> tuple[bool, str]:
    """Decide a change whose ``differing`` fields are not as the producer saw them.

    Returns (whether the incoming values of the differing fields win, the text
    for the message); the text is empty when nothing differs. ``existing`` is
    None when this node deleted the row the change is about. ``before`` is the
    before-state compared (``UNKNOWN`` values for a change that did not know
    this node's row). A conflict held for a decision raises ``ApplyStopped(HELD)``
    carrying its unsaved ledger row. A decision taken earlier (``resolve()``, or
    a replay rolled back after the ledger row was written) is acted on.
    """
    recorded = Conflict.objects.using(alias).filter(tx_id=tx.id).first()
    if recorded is not None and recorded.resolution != Resolution.PENDING:
        incoming = recorded.resolution == Resolution.INCOMING_APPLIED
        return incoming, f"conflict #{recorded.pk} resolved: {recorded.get_resolution_display()}"
    label = model._meta.label_lower
    if not differing:
        if recorded is not None:
            recorded.resolution, recorded.resolved_by = Resolution.INCOMING_APPLIED, "replay:matched"
            recorded.resolved_datetime = timezone.now()
            recorded.save(using=alias)
        return True, ""
    if recorded is not None:
        raise ApplyStopped(HELD, f"conflict #{recorded.pk} is waiting for a decision")
    policy = policy_for(model)
    pk = existing.pk if existing is not None else payload.get("pk") or tx.tx_pk
    current_hlc = row_hlc(model, pk, payload["nk"], alias)
    resolution = _decide(policy, tx, current_hlc)
    conflict = Conflict(
        tx_id=tx.id, model=label, key=ser.dumps(payload["nk"]),
        action=tx.action, producer=tx.producer, policy=policy,
        base=ser.dumps({k: None if v is UNKNOWN else v for k, v in before.items()}),
        incoming=ser.dumps(payload.get("fields") or payload.get("m2m") or {}),
        current=ser.dumps({} if existing is None else ser.row_fields(existing)),
        incoming_hlc=tx.hlc, current_hlc=current_hlc, resolution=resolution,
        resolved_datetime=None if resolution == Resolution.PENDING else timezone.now(),
        resolved_by="" if resolution == Resolution.PENDING else f"policy:{policy}")
    gone = "" if existing is not None else "row deleted on this node; "
    text = f"on {gone}{', '.join(sorted(differing))} ({policy}): "
    if resolution == Resolution.PENDING:
        raise ApplyStopped(HELD, text + "held for a decision", ledger=conflict)
    conflict.save(using=alias)
    text = f"conflict #{conflict.pk} {text}"
    if resolution == Resolution.INCOMING_APPLIED:
        return True, text + "incoming values applied"
    return False, text + "this node's values kept"


KEEP = {"server": Resolution.SERVER_KEPT, "incoming": Resolution.INCOMING_APPLIED}


def resolve(conflict: Conflict, keep: str, by: str = "") -> Conflict:
    """Decide a conflict held under the ``manual`` policy (or re-decide an unreplayed one).

    ``keep="server"`` keeps this node's values of the conflicting fields (a
    delete keeps the row, an insert keeps this node's row); ``keep="incoming"``
    writes the incoming values over them. Either way the change's fields that
    conflict with nothing apply. The decision is saved on the ledger row's own
    database; the next replay there acts on it. ``by`` names who decided.
    """
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
