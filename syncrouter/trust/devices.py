"""The device registry of a receiving node: whom it believes, in which role, until when.

``manage.py syncrouter keys trust|revoke|list`` call the functions here. The
checks read a ``Registry``, a snapshot of the table kept per alias for a few
seconds (``TTL``), so a replay of a million rows does not query the table for
each one; a change made in this process drops the snapshot at once, one made by
another process (the ``keys`` command while ``sync --watch`` runs) is seen
within ``TTL`` seconds.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from django.db.models import Max
from django.db.models.signals import post_delete, post_save
from django.utils import timezone

from .. import conf
from ..exceptions import SyncError
from ..models import Device, IncomingTransaction
from .keys import PublicKeys, parse_public

TTL = 2.0


@dataclass(frozen=True)
class Enrolled:
    """One registry row, with its public keys parsed."""

    name: str
    role: str
    keys: PublicKeys
    revoked_after: int | None


class Registry:
    """The devices enrolled on one alias, by name and by key id."""

    def __init__(self, devices):
        self.by_name: dict[str, Enrolled] = {}
        self.by_key_id: dict[str, Enrolled] = {}
        for device in devices:
            keys = parse_public(device.public_key)
            enrolled = Enrolled(device.name, device.role, keys, device.revoked_after)
            self.by_name[device.name] = enrolled
            self.by_key_id[keys.key_id] = enrolled


_snapshots: dict[str, tuple[float, Registry]] = {}


def forget(**kwargs) -> None:
    _snapshots.clear()


def registry(alias: str) -> Registry:
    """The registry of ``alias``, read at most every ``TTL`` seconds."""
    now = time.monotonic()
    snapshot = _snapshots.get(alias)
    if snapshot is None or now - snapshot[0] > TTL:
        snapshot = _snapshots[alias] = (now, Registry(Device.objects.using(alias).all()))
    return snapshot[1]


post_save.connect(forget, sender="syncrouter.Device", dispatch_uid="syncrouter.trust.save")
post_delete.connect(forget, sender="syncrouter.Device", dispatch_uid="syncrouter.trust.delete")


def trust(alias: str, name: str, public_key: str, role: str = "client",
          replace: bool = False):
    """Enrol node ``name`` with its ``sr1:`` public key on ``alias``; returns the Device.

    Enrolling a name again with the same key changes its role (and lifts no
    revocation); with another key it needs ``replace`` (a device whose key was
    rotated): rows it signed with the old key are refused from then on.
    """
    if role not in conf.ROLES:
        raise SyncError(f"Role {role!r} is not one of {', '.join(conf.ROLES)}.")
    keys = parse_public(public_key)
    if name == conf.node_for_alias(alias).name:
        raise SyncError(f"{name!r} is this node's own name on alias {alias!r}; a node never "
                        "receives its own transactions and does not enrol itself.")
    other = Device.objects.using(alias).filter(fingerprint=keys.fingerprint).exclude(
        name=name).first()
    if other is not None:
        raise SyncError(f"That key is already enrolled as {other.name!r}; one key belongs "
                        "to one node.")
    device = Device.objects.using(alias).filter(name=name).first()
    if device is not None and device.fingerprint != keys.fingerprint and not replace:
        raise SyncError(f"{name!r} is enrolled with another key ({device.fingerprint[:16]}); "
                        "pass --replace to enrol the new one.")
    device = device or Device(name=name)
    device.public_key, device.fingerprint, device.role = keys.token, keys.fingerprint, role
    device.save(using=alias)
    return device


def revoke(alias: str, name: str, after: int | None = None):
    """Revoke ``name`` on ``alias``: its transactions with a sequence above ``after`` are
    refused. ``after`` defaults to the highest sequence of it that this node has
    already received, so what arrived before the revocation stays valid."""
    device = Device.objects.using(alias).filter(name=name).first()
    if device is None:
        raise SyncError(f"No device named {name!r} is enrolled on alias {alias!r}.")
    if after is None:
        after = IncomingTransaction.objects.using(alias).filter(producer=name).aggregate(
            highest=Max("sequence"))["highest"] or 0
    if after < 0:
        raise SyncError(f"--after must be 0 or more, not {after}.")
    device.revoked_after, device.revoked_datetime = after, timezone.now()
    device.save(using=alias)
    return device


def devices(alias: str) -> list:
    return list(Device.objects.using(alias).all())
