"""Signing groups, canonical bytes and key storage, with generated cases (Hypothesis)."""
import os
import stat
import uuid

import pytest
from django.core.management import call_command
from django.test import override_settings
from hypothesis import HealthCheck, given, settings, strategies as st

from syncrouter.exceptions import SyncError
from syncrouter.models import RefusedTransaction
from syncrouter.trust import devices, keys, signing
from syncrouter.trust.verify import screen
from tests.support import factories
from tests.support.replay import TRANSACTIONAL
from tests.support.trust import ON, flip, node_named, outbox, trusted  # noqa: F401

KEYS = keys.NodeKeys.generate()
OTHER = keys.NodeKeys.generate()

texts = st.text(min_size=1, max_size=40)
rows = st.fixed_dictionaries({
    "id": st.uuids(), "hostname": texts, "sequence": st.integers(1, 2**62),
    "db_transaction_id": st.uuids(), "hlc": st.integers(0, 2**63 - 1), "tx_name": texts,
    "tx_pk": texts, "action": st.sampled_from("IUD"), "tx": st.text(max_size=300)})


def signed(group: list[dict], producer: str = "laptop-1") -> list[dict]:
    group = [{**row, "producer": producer} for row in group]
    for row, signature in zip(group, signing.sign_rows(KEYS, producer, group)):
        row["signature"] = signature
    return group


@given(st.lists(rows, min_size=1, max_size=signing.MAX_GROUP + 20))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                      HealthCheck.data_too_large])
def test_every_row_of_a_group_verifies_alone(group):
    public = KEYS.public
    for row in signed(group):
        signing.verify(row, public)


@given(st.lists(rows, min_size=1, max_size=40), st.data())
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_changed_field_or_signature_byte_is_refused(group, data):
    group = signed(group)
    row = data.draw(st.sampled_from(group))
    field = data.draw(st.sampled_from(signing.SIGNED_FIELDS + ("signature",)))
    offset = data.draw(st.integers(0, 400))
    changed = dict(row)
    changed[field] = flip(row[field], offset)
    if changed[field] == row[field] or (field == "id" and str(changed[field]) == str(row[field])):
        return
    with pytest.raises((signing.BadSignature, ValueError)):
        signing.verify(changed, KEYS.public)
    signing.verify(row, KEYS.public)  # the original still holds


@given(st.lists(rows, min_size=2, max_size=30), st.data())
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_rows_cannot_move_between_positions_or_groups(group, data):
    group = signed(group)
    first, second = data.draw(st.permutations(range(len(group))))[:2]
    moved = {**group[first], "signature": group[second]["signature"]}
    with pytest.raises(signing.BadSignature):
        signing.verify(moved, KEYS.public)
    with pytest.raises(signing.BadSignature):
        signing.verify(group[first], OTHER.public)


def test_canonical_bytes_are_versioned_and_stable():
    """The encoding is a format: a change needs a new version tag, not a silent edit."""
    row = {"id": uuid.UUID(int=1), "producer": "p", "hostname": "h", "sequence": 7,
           "db_transaction_id": uuid.UUID(int=2), "hlc": 9, "tx_name": "a.b", "tx_pk": "1",
           "action": "I", "tx": "{}"}
    data = signing.canonical(row)
    assert data.startswith(b"syncrouter-tx-v1\x00\x00\x00\x10")
    assert signing.canonical({**row, "id": str(row["id"]), "sequence": 7}) == data
    assert signing.canonical({**row, "id": row["id"].hex}) == data
    assert len(data) == 16 + 10 * 4 + 16 + 1 + 1 + 1 + 16 + 1 + 3 + 1 + 1 + 2


def test_public_key_tokens():
    token = KEYS.public.token
    assert keys.parse_public(token).fingerprint == KEYS.public.fingerprint
    for bad in ("ssh-ed25519 AAAA", token[:-4], "sr1:!!!!"):
        with pytest.raises(SyncError):
            keys.parse_public(bad)


def test_key_file_mode_and_environment(tmp_path, monkeypatch):
    with override_settings(SYNCROUTER_KEY_DIR=tmp_path / "keys"):
        created, where = keys.create("client")
        assert stat.S_IMODE(os.stat(where).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(tmp_path / "keys").st_mode) == 0o700
        with pytest.raises(SyncError, match="already holds a key"):
            keys.create("client")
        os.chmod(where, 0o644)
        keys._forget()
        with pytest.raises(SyncError, match=r"may be read by other users \(mode 0644\)"):
            keys.load("client")
    monkeypatch.setenv("LAPTOP_KEY", created.dumps())
    nodes = {"client": {"name": "field-laptop-1", "role": "client", "key": "env:LAPTOP_KEY"}}
    with override_settings(SYNCROUTER_NODES=nodes):
        assert keys.require("client").public.token == created.public.token
    with override_settings(SYNCROUTER_NODES={"client": {"key": "env:MISSING_KEY"}}):
        with pytest.raises(SyncError, match="has no key at env:MISSING_KEY"):
            keys.require("client")


@TRANSACTIONAL
def test_keys_commands(tmp_path, capsys):
    with override_settings(**ON, SYNCROUTER_KEY_DIR=tmp_path / "keys"):
        call_command("syncrouter", "keys", "init", "--alias", "client")
        shown = capsys.readouterr().out
        token = next(line.split()[-1] for line in shown.splitlines()
                     if line.startswith("public key:"))
        assert "fingerprint:" in shown
        call_command("syncrouter", "keys", "trust", "field-laptop-1", token, "--role", "client",
                     "--alias", "server")
        call_command("syncrouter", "keys", "revoke", "field-laptop-1", "--after", "5",
                     "--alias", "server")
        call_command("syncrouter", "keys", "list", "--alias", "server")
        listed = capsys.readouterr().out
        assert "field-laptop-1" in listed and "  5  " in listed
        device = devices.devices("server")[0]
        assert (device.role, device.revoked_after) == ("client", 5)
        with pytest.raises(Exception, match="this node's own name"):
            call_command("syncrouter", "keys", "trust", "community-lite", token,
                         "--alias", "server")
        with pytest.raises(Exception, match="already enrolled as 'field-laptop-1'"):
            call_command("syncrouter", "keys", "trust", "laptop-x", token, "--alias", "server")


@TRANSACTIONAL
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_screen_refuses_exactly_the_tampered_rows(trusted, data):
    """Generated attacks on a captured batch: any subset of rows, any signed field."""
    if not outbox(trusted.client).exists():
        factories.study(trusted.client, households=1, members=2, visits=2)
    rows = list(outbox(trusted.client).order_by("sequence"))
    victims = data.draw(st.sets(st.integers(0, len(rows) - 1), max_size=4))
    for index in victims:
        field = data.draw(st.sampled_from(signing.SIGNED_FIELDS + ("signature",)))
        setattr(rows[index], field, flip(getattr(rows[index], field), data.draw(
            st.integers(0, 300))))
    kept = screen(rows, trusted.server, "test")
    assert [row.sequence for row in kept] == [
        row.sequence for index, row in enumerate(rows) if index not in victims]
    assert RefusedTransaction.objects.using(trusted.server).filter(
        source="test").count() >= len(victims) > 0 or not victims
    RefusedTransaction.objects.using(trusted.server).all().delete()
