"""Re-encryption of stored payloads under the current payload key, and which keys rows need.

``rotate`` walks the outbox and the inbox of one alias in primary-key order
and rewrites, batch by batch, each payload not stored under the current key
(``SYNCROUTER_PAYLOAD_KEY``; with none set, it stores them plain: the way to
switch at-rest encryption off). Each batch commits alone, and a row holds its
old envelope or its new one, never neither, so a rotation killed at any point
leaves every row readable with the keys it had, and running it again finishes
the rest. A row that cannot be decrypted is left as it is and counted.

Nothing but this rewrites ``tx``: the pipeline only inserts it and reads it,
and copy, replay and export read any key of the keyring, so they may run
during a rotation.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from django.db.models import Count, F, Value
from django.db.models.functions import StrIndex, Substr

from . import atrest


@dataclass
class Rotation:
    """What a rotation did on one table."""

    table: str
    rekeyed: int = 0
    #: key id -> rows left as they are because they cannot be decrypted here
    unreadable: dict[str, int] = field(default_factory=dict)
    #: the first reason of each key id in ``unreadable``
    reasons: dict[str, str] = field(default_factory=dict)


def _tables():
    from ..models import IncomingTransaction, OutgoingTransaction

    return (OutgoingTransaction, IncomingTransaction)


def usage(alias: str) -> dict[str, dict[str | None, int]]:
    """Table name -> {key id (None: plain JSON) -> rows stored under it} on ``alias``."""
    start = len(atrest.PREFIX) + 1
    rest = Substr("tx", start)
    found = {}
    for model in _tables():
        rows = model.objects.using(alias)
        counts: dict[str | None, int] = {}
        plain = rows.exclude(tx__startswith=atrest.PREFIX).count()
        if plain:
            counts[None] = plain
        sealed = rows.filter(tx__startswith=atrest.PREFIX).annotate(
            end=StrIndex(rest, Value(":"))).annotate(
            key=Substr("tx", start, F("end") - 1)).values("key").annotate(n=Count("id"))
        for group in sealed.order_by("key"):
            counts[group["key"]] = group["n"]
        found[model._meta.db_table] = counts
    return found


def missing_keys(alias: str) -> dict[str, int]:
    """Key id -> rows on ``alias`` stored under a key that is not in the keyring."""
    sources = atrest.keyring().sources
    missing: dict[str, int] = {}
    for counts in usage(alias).values():
        for key_id, count in counts.items():
            if key_id is not None and key_id not in sources:
                missing[key_id] = missing.get(key_id, 0) + count
    return missing


def rotate(alias: str, batch_size: int = 500,
           progress: Callable[[Rotation], None] | None = None) -> list[Rotation]:
    """Store every payload on ``alias`` under the current key; one ``Rotation`` per table.

    ``progress`` is called with the running ``Rotation`` after each committed batch.
    """
    current = atrest.keyring().current
    done = []
    for model in _tables():
        result = Rotation(model._meta.db_table)
        rows = model.objects.using(alias)
        rows = (rows.exclude(tx__startswith=f"{atrest.PREFIX}{current}:") if current
                else rows.filter(tx__startswith=atrest.PREFIX))
        last = None
        while True:
            page = rows.filter(id__gt=last) if last is not None else rows
            page = list(page.order_by("id").values_list("id", "tx")[:batch_size])
            if not page:
                break
            last = page[-1][0]
            changed = []
            for row_id, text in page:
                try:
                    new = atrest.rekey(text, row_id)
                except atrest.Unreadable as exc:
                    result.unreadable[exc.key_id] = result.unreadable.get(exc.key_id, 0) + 1
                    result.reasons.setdefault(exc.key_id, str(exc))
                    continue
                if new is not None:
                    changed.append(model(id=row_id, tx=new))
            model.objects.using(alias).bulk_update(changed, ["tx"])  # one transaction
            result.rekeyed += len(changed)
            if progress:
                progress(result)
        done.append(result)
    return done
