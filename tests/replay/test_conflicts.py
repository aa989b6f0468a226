"""Conflicts (guarantee 6): every pair of changes from two producers, clocks a day apart.

Producer laptop-a replays before laptop-b (producers replay in name order), so
b's change is the one that meets a's. Each producer makes exactly one change,
so each is its own unit even inside the test-wide transaction.
"""
import uuid

import pytest
from django.test import override_settings

from syncrouter import serialization as ser
from syncrouter.exceptions import SyncError
from syncrouter.models import Conflict, IncomingTransaction
from syncrouter.replay.conflicts import resolve
from syncrouter.state import replaying
from tests.support import factories
from tests.support.replay import TRANSACTIONAL, incoming, outcomes, producer, push, replay
from tests.testapp.models import Household

DAY_MS = 24 * 3600 * 1000
BASE_PK = uuid.UUID("00000000-0000-4000-8000-000000000001")


def _view(alias, with_base: bool) -> None:
    """Put H001 on ``alias`` as a producer saw it before its change (not captured)."""
    with replaying(alias):
        Household.objects.using(alias).filter(household_identifier="H001").delete()
        if with_base:
            Household.objects.using(alias).create(id=BASE_PK, household_identifier="H001",
                                                  village="Base")


def _change(alias, action: str, village: str) -> None:
    if action == "I":
        factories.household(alias, "H001", village=village)
        return
    hh = Household.objects.using(alias).get(household_identifier="H001")
    if action == "U":
        hh.village = village
        hh.save()
    else:
        hh.delete()


def play(nodes, monkeypatch, a: str, b: str, skew_ms: int = 0) -> dict:
    """Base row on the server if a change needs one; then a's and b's changes, replayed."""
    if {a, b} & {"U", "D"}:
        for alias in (nodes.client, nodes.server):
            _view(alias, with_base=True)
    for name, action, skew in (("laptop-a", a, 0), ("laptop-b", b, skew_ms)):
        _view(nodes.client, with_base=action != "I")
        with producer(nodes.client, name, monkeypatch, skew):
            _change(nodes.client, action, name[-1].upper())
    push(nodes)
    return replay(nodes.server)


def expected(a: str, b: str, policy: str, skew_ms: int) -> tuple[str | None, dict]:
    """(final village of H001 or None, {producer: resolution}) the policy calls for."""
    b_wins = policy == "client_wins" or (policy == "newer_wins" and skew_ms > 0)
    b_resolution = {"manual": "pending"}.get(policy, "incoming_applied" if b_wins else "server_kept")
    a_applied = policy in ("client_wins", "newer_wins")  # a is newer than the base
    if (a, b) == ("D", "I"):
        return "B", {}  # the row was gone: a new row, nothing overwritten
    if (a, b) == ("D", "D"):
        return None, {}  # both wanted it gone
    if a == "I" and b != "I":  # a's insert met the base row under another pk
        a_resolution = {"manual": "pending"}.get(
            policy, "incoming_applied" if a_applied else "server_kept")
        b_value = "B" if b == "U" else None
        if not a_applied:
            return b_value, {"laptop-a": a_resolution}  # b's change matches the base
        return (b_value if b_wins else "A"), {"laptop-a": a_resolution,
                                              "laptop-b": b_resolution}
    after_a = None if a == "D" else "A"
    b_value = None if b == "D" else "B"
    return (b_value if b_wins else after_a), {"laptop-b": b_resolution}


CASES = [(a, b, policy, skew) for a in "IUD" for b in "IUD"
         for policy, skew in (("server_wins", 0), ("client_wins", 0), ("manual", 0),
                              ("newer_wins", DAY_MS), ("newer_wins", -DAY_MS))]


@pytest.mark.parametrize("a,b,policy,skew_ms", CASES,
                         ids=[f"{a}{b}-{p}{'+' if s > 0 else '-' if s else ''}"
                              for a, b, p, s in CASES])
def test_every_pair_is_in_the_ledger_and_resolved_by_policy(nodes, monkeypatch, a, b, policy,
                                                           skew_ms):
    with override_settings(SYNCROUTER_CONFLICT_POLICY=policy):
        messages = play(nodes, monkeypatch, a, b, skew_ms)
    village, resolutions = expected(a, b, policy, skew_ms)
    row = Household.objects.using(nodes.server).filter(household_identifier="H001").first()
    assert (row.village if row else None) == village, messages
    ledger = {c.producer: c for c in Conflict.objects.using(nodes.server)}
    assert {p: c.resolution for p, c in ledger.items()} == resolutions, messages
    for name, conflict in ledger.items():
        tx = incoming(nodes.server, name, 1)
        assert (conflict.tx_id, conflict.incoming_hlc, conflict.policy) == (tx.id, tx.hlc, policy)
        assert messages[(name, 1)].outcome == "conflict"
        assert f"conflict #{conflict.pk}" in messages[(name, 1)].text
        assert tx.is_consumed == (policy != "manual")
        if policy == "newer_wins" and name == "laptop-b":
            assert (conflict.incoming_hlc > conflict.current_hlc) == (skew_ms > 0)
    unledgered = {k: m.outcome for k, m in messages.items() if k[0] not in ledger}
    assert "conflict" not in unledgered.values() and "deferred" not in unledgered.values()


@TRANSACTIONAL  # laptop-b's two saves are two client transactions
def test_manual_conflict_waits_for_resolve_then_replays_as_decided(nodes, monkeypatch):
    with override_settings(SYNCROUTER_CONFLICT_POLICY="manual"):
        first = play(nodes, monkeypatch, "U", "U")
        with producer(nodes.client, "laptop-b"):
            hh = Household.objects.using(nodes.client).get(household_identifier="H001")
            hh.gps_lat = -20.0
            hh.save()
        push(nodes)
        second = replay(nodes.server)
        assert outcomes(second) == {("laptop-b", 1): "conflict", ("laptop-b", 2): "deferred"}
        assert second[("laptop-b", 2)].text == "waits for laptop-b#1 (same key, earlier)"
        conflict = Conflict.objects.using(nodes.server).get()
        assert conflict.resolution == "pending"
        assert ser.loads(conflict.incoming)["village"] == "B"
        assert ser.loads(conflict.current)["village"] == "A"
        assert f"conflict #{conflict.pk}" in first[("laptop-b", 1)].text

        resolve(conflict, keep="incoming", by="dr.moyo")
        third = replay(nodes.server)
    assert outcomes(third) == {("laptop-b", 1): "conflict", ("laptop-b", 2): "updated"}
    assert "resolved: incoming change applied" in third[("laptop-b", 1)].text
    row = Household.objects.using(nodes.server).get()
    assert (row.village, row.gps_lat) == ("B", -20.0)
    conflict.refresh_from_db()
    assert (conflict.resolution, conflict.resolved_by) == ("incoming_applied", "dr.moyo")
    with pytest.raises(SyncError, match="already replayed"):
        resolve(conflict, keep="server")
    assert not IncomingTransaction.objects.using(nodes.server).filter(is_consumed=False).exists()


def test_resolve_keep_server_consumes_without_applying(nodes, monkeypatch):
    with override_settings(SYNCROUTER_CONFLICT_POLICY="manual"):
        play(nodes, monkeypatch, "U", "D")
        conflict = Conflict.objects.using(nodes.server).get()
        with pytest.raises(SyncError, match="keep must be 'server' or 'incoming'"):
            resolve(conflict, keep="client")
        resolve(conflict, keep="server")
        messages = replay(nodes.server)
    assert messages[("laptop-b", 1)].outcome == "conflict"
    assert Household.objects.using(nodes.server).get().village == "A"
    assert incoming(nodes.server, "laptop-b", 1).is_consumed


def test_model_policy_overrides_the_default(nodes, monkeypatch):
    with override_settings(SYNCROUTER_CONFLICT_POLICY="manual",
                           SYNCROUTER_CONFLICT_POLICIES={"testapp.household": "server_wins"}):
        play(nodes, monkeypatch, "U", "U")
    assert Conflict.objects.using(nodes.server).get().resolution == "server_kept"
    with override_settings(SYNCROUTER_CONFLICT_POLICY="sometimes"):
        IncomingTransaction.objects.using(nodes.server).update(is_consumed=False)
        Conflict.objects.using(nodes.server).all().delete()
        messages = replay(nodes.server)
    assert messages[("laptop-b", 1)].outcome == "error"
    assert "Conflict policy 'sometimes' for testapp.household" in messages[("laptop-b", 1)].text


def test_admin_action_decides_through_resolve(nodes, monkeypatch):
    from django.contrib import admin
    from django.contrib.auth.models import Permission, User
    from django.contrib.messages.storage.cookie import CookieStorage
    from django.test import RequestFactory

    from syncrouter.admin import ConflictAdmin

    with override_settings(SYNCROUTER_CONFLICT_POLICY="manual"):
        play(nodes, monkeypatch, "U", "D")
    model_admin = ConflictAdmin(Conflict, admin.site)
    request = RequestFactory().post("/")
    request._messages = CookieStorage(request)
    request.user = User.objects.using(nodes.server).create(username="dr.moyo")
    assert not model_admin.has_resolve_permission(request)
    request.user.user_permissions.add(Permission.objects.db_manager(
        nodes.server).get_by_natural_key("change_conflict", "syncrouter", "conflict"))
    request.user = User.objects.using(nodes.server).get(pk=request.user.pk)  # fresh perm cache
    assert model_admin.has_resolve_permission(request)
    model_admin.keep_server_row(request, Conflict.objects.using(nodes.server).all())
    conflict = Conflict.objects.using(nodes.server).get()
    assert (conflict.resolution, conflict.resolved_by) == ("server_kept", "dr.moyo")
    assert not model_admin.has_change_permission(request, conflict)
