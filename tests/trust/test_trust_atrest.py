"""At-rest encryption of the outbox and inbox payloads through capture, copy, replay,
files, rotation and the admin, with signatures and verification on.

Every test runs on SQLite -> SQLite, SQLite -> PostgreSQL and PostgreSQL -> PostgreSQL.
"""
import io
import os
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import orjson
import pytest
from django.contrib import admin
from django.core.management import CommandError, call_command
from django.db import connections
from django.test import override_settings

from syncrouter import checks, conf, serialization as ser
from syncrouter.admin import IncomingTransactionAdmin
from syncrouter.models import IncomingTransaction, OutgoingTransaction, RefusedTransaction
from syncrouter.transfer.files import (
    CONTENT,
    ExportRefused,
    export_transactions,
    import_transactions,
    pending,
)
from syncrouter.trust import atrest, devices, rotation
from tests.support import factories
from tests.support.replay import TRANSACTIONAL, replay
from tests.support.trust import inbox, outbox, trusted  # noqa: F401
from tests.testapp.models import Household

pytestmark = TRANSACTIONAL

SECRET = "Secretville"
ROOT = Path(__file__).resolve().parents[2]


def on(*pairs: str):
    """Run a test on these pairs only (each vendor still met as client and as server)."""
    return pytest.mark.parametrize("nodes", pairs, indirect=True)


def keyring(sources: dict, current: str | None, without: tuple = ()):
    return override_settings(
        SYNCROUTER_PAYLOAD_KEYS={k: v for k, v in sources.items() if k not in without},
        SYNCROUTER_PAYLOAD_KEY=current)


@pytest.fixture
def keys(tmp_path):
    """Two payload key files, k1 and k2 (mode 0600), made by ``keys new-payload-key``."""
    sources = {key_id: str(tmp_path / "payload-keys" / f"{key_id}.key") for key_id in ("k1", "k2")}
    with keyring(sources, None):
        for key_id in sources:
            call_command("syncrouter", "keys", "new-payload-key", key_id, stdout=io.StringIO())
    assert all(os.stat(path).st_mode & 0o777 == 0o600 for path in sources.values())
    return sources


@pytest.fixture
def sealed(trusted, keys):
    """Signing, verification and at-rest encryption under k1. Yields ``nodes``."""
    with keyring(keys, "k1"):
        yield trusted


def push(nodes):
    return outbox(nodes.client).filter(is_consumed_server=False).copy_to_incoming_transaction(
        nodes.server)


def stored(alias: str) -> list[str]:
    """The raw ``tx`` column of both transaction tables, read past the ORM."""
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT tx FROM syncrouter_outgoingtransaction UNION ALL "
                       "SELECT tx FROM syncrouter_incomingtransaction")
        return [text for text, in cursor.fetchall()]


def tampered(text: str) -> str:
    """``text`` with one base64 character of its ciphertext changed for another."""
    middle = len(text) // 2
    return text[:middle] + ("B" if text[middle] == "A" else "A") + text[middle + 1:]


def name(alias: str) -> str:
    return conf.node_for_alias(alias).name


def rekey(alias: str, *options: str) -> str:
    out = io.StringIO()
    call_command("syncrouter", "keys", "rotate-payloads", "--alias", alias, *options,
                 stdout=out)
    return out.getvalue()


def test_round_trip_leaves_no_plaintext_in_either_database(sealed, keys):
    household = factories.household(sealed.client, "H1", village=SECRET)
    factories.member(sealed.client, household, "S1", first_name="Naledi")
    household.village = f"{SECRET} North"
    household.save()

    assert push(sealed).copied == 3
    outcomes = [m.outcome for m in replay(sealed.server).values()]

    assert outcomes == ["inserted", "inserted", "updated"]
    assert Household.objects.using(sealed.server).get().village == f"{SECRET} North"
    sent = dict(outbox(sealed.client).values_list("id", "tx"))
    assert dict(inbox(sealed.server).values_list("id", "tx")) == sent  # moved unchanged
    for alias in (sealed.client, sealed.server):
        texts = stored(alias)
        assert texts and all(text.startswith(f"{atrest.PREFIX}k1:") for text in texts)
        assert not any(SECRET in text or "Naledi" in text for text in texts)

    page = IncomingTransactionAdmin(IncomingTransaction, admin.site)  # staff see the plaintext
    row = inbox(sealed.server).get(sequence=1)
    assert SECRET in page.payload(row)
    with keyring(keys, "k2", without=("k1",)):
        assert page.payload(row) == "encrypted (key k1; not in this node's keyring)"


def test_a_changed_or_moved_ciphertext_is_refused_naming_the_row(sealed):
    for identifier in ("H1", "H2", "H3", "H4"):
        factories.household(sealed.client, identifier, village=SECRET)
    changed = outbox(sealed.client).get(sequence=1)
    outbox(sealed.client).filter(pk=changed.pk).update(tx=tampered(changed.tx))

    assert push(sealed).copied == 3  # refused at the copy, the rest goes on
    refusal = RefusedTransaction.objects.using(sealed.server).get()
    assert str(changed.id) in refusal.reason and "fails authentication" in refusal.reason
    assert SECRET not in refusal.row  # the record keeps the ciphertext

    second, third = inbox(sealed.server).get(sequence=2), inbox(sealed.server).get(sequence=3)
    inbox(sealed.server).filter(pk=third.pk).update(tx=second.tx)  # moved to another row
    messages = replay(sealed.server)

    producer = name(sealed.client)
    moved = messages[(producer, 3)]
    assert moved.outcome == "refused"
    assert str(third.id) in moved.text and "another row" in moved.text
    assert {messages[(producer, n)].outcome for n in (2, 4)} == {"inserted"}
    assert inbox(sealed.server).get(pk=third.pk).is_refused
    assert set(Household.objects.using(sealed.server).values_list(
        "household_identifier", flat=True)) == {"H2", "H4"}


@on("sqlite-sqlite", "postgres-postgres")
def test_plain_and_old_and_new_keys_replay_and_rotation_retires_the_old_key(sealed, keys):
    with keyring(keys, None):  # switched off: plain JSON, as before the feature
        first = factories.household(sealed.client, "H1", village=SECRET)
        plain = outbox(sealed.client).get().tx
        assert ser.loads(plain)["fields"]["village"] == SECRET
    factories.household(sealed.client, "H2")
    with keyring(keys, "k2"):
        first.village = "Lobatse"
        first.save()
        assert push(sealed).copied == 3
        assert [m.outcome for m in replay(sealed.server).values()] == [
            "inserted", "inserted", "updated"]
        assert rotation.usage(sealed.server)["syncrouter_incomingtransaction"] == {
            None: 1, "k1": 1, "k2": 1}

    with keyring(keys, "k2", without=("k1",)):  # taking k1 out too early is caught
        errors = checks.check_payload_keys_in_use(databases=[sealed.client, sealed.server])
        assert [(e.id, f"{e.msg}".split(" stored")[0]) for e in errors] == [
            ("syncrouter.E008", "1"), ("syncrouter.E008", "1")]
        assert "'k1'" in errors[0].msg and "rotate-payloads" in errors[0].hint

    with keyring(keys, "k2"):
        assert "1 plain, 1 under key 'k1', 1 under key 'k2'" in rekey(sealed.client, "--dry-run")
        output = rekey(sealed.client, "--batch-size", "1")
        assert "syncrouter_outgoingtransaction: 1 re-encrypted" in output
        assert "syncrouter_outgoingtransaction: 2 re-encrypted" in output
        rekey(sealed.server)
        assert "re-encrypted" not in rekey(sealed.server)  # again: nothing left to do

    with keyring(keys, "k2", without=("k1",)):
        assert checks.check_payload_keys_in_use(databases=[sealed.client, sealed.server]) == []
        for alias in (sealed.client, sealed.server):
            texts = stored(alias)
            assert all(text.startswith(f"{atrest.PREFIX}k2:") for text in texts)
            assert not any(SECRET in text for text in texts)
        row = inbox(sealed.server).get(sequence=1)
        assert ser.loads(atrest.reveal(row.tx, row.id))["fields"]["village"] == SECRET
        assert IncomingTransaction.objects.using(sealed.server).filter(is_error=True).count() == 0
        # Signatures cover the plaintext: they still hold after rotation.
        factories.household(sealed.client, "H3")
        push(sealed)
        assert [m.outcome for m in replay(sealed.server).values()] == ["inserted"]


@on("sqlite-sqlite", "postgres-postgres")
def test_a_payload_whose_key_is_missing_waits_and_holds_its_producer(sealed, keys):
    first = factories.household(sealed.client, "H1")
    with keyring(keys, "k2"):
        first.village = "Lobatse"
        first.save()
        factories.household(sealed.client, "H2")
    producer = name(sealed.client)
    # A PostgreSQL producer signs at the seal, over the plaintext: it needs its keys
    # until its rows are sealed. Reading the outbox seals it.
    assert OutgoingTransaction.objects.using(sealed.client).count() == 3

    with keyring(keys, "k2", without=("k1",)):
        assert push(sealed).copied == 3  # admitted unverified: replay checks it later
        assert not RefusedTransaction.objects.using(sealed.server).exists()
        messages = replay(sealed.server)
        assert messages[(producer, 1)].outcome == "deferred"
        assert "waits for its payload key" in messages[(producer, 1)].text
        assert "'k1', which is not in SYNCROUTER_PAYLOAD_KEYS" in messages[(producer, 1)].text
        for sequence in (2, 3):  # what #1 writes is unknown: its producer's later rows wait
            assert messages[(producer, sequence)].outcome == "deferred"
            assert "its payload cannot be read yet" in messages[(producer, sequence)].text
        assert not Household.objects.using(sealed.server).exists()

    with keyring(keys, "k2"):  # the key is back: the rows heal
        messages = replay(sealed.server)
        assert {n: messages[(producer, n)].outcome for n in (1, 2, 3)} == {
            1: "inserted", 2: "updated", 3: "inserted"}
        assert Household.objects.using(sealed.server).get(household_identifier="H1").village \
            == "Lobatse"


@on("sqlite-sqlite", "sqlite-postgres")
def test_files_carry_plain_payloads_and_import_stores_them_encrypted(sealed, keys, tmp_path):
    factories.household(sealed.client, "H1", village=SECRET)
    factories.household(sealed.client, "H2", village=SECRET)
    path = tmp_path / "batch.zip"
    with override_settings(SYNCROUTER_ENCRYPT_FILES=False):
        with keyring(keys, "k2", without=("k1",)):  # a row this node cannot read stays out
            with pytest.raises(ExportRefused, match="'k1'"):
                export_transactions(path, pending(sealed.client))
        export_transactions(path, pending(sealed.client))
        with zipfile.ZipFile(path) as archive:
            lines = archive.read(CONTENT).splitlines()
        assert [ser.loads(orjson.loads(line)["tx"])["fields"]["village"] for line in lines] == [
            SECRET, SECRET]
        with keyring(keys, "k2"):
            assert import_transactions(path, sealed.server).copied == 2
            assert import_transactions(path, sealed.server).already_present == 2
            texts = stored(sealed.server)
            assert all(text.startswith(f"{atrest.PREFIX}k2:") for text in texts)
            assert not any(SECRET in text for text in texts)
            assert [m.outcome for m in replay(sealed.server).values()] == ["inserted"] * 2
            devices.revoke(sealed.server, name(sealed.client), 0)  # now refused, recorded:
            import_transactions(path, sealed.server)
            recorded = RefusedTransaction.objects.using(sealed.server).values_list("row",
                                                                                   flat=True)
            assert len(recorded) == 2
            assert all(orjson.loads(row)["tx"].startswith(f"{atrest.PREFIX}k2:")
                       for row in recorded)


@on("postgres-postgres")
def test_rotation_command_reports_rows_it_cannot_read(sealed, keys):
    factories.household(sealed.client, "H1")
    factories.household(sealed.client, "H2")
    victim = outbox(sealed.client).get(sequence=2)
    outbox(sealed.client).filter(pk=victim.pk).update(tx=tampered(victim.tx))
    with keyring(keys, "k2"), pytest.raises(CommandError) as failed:
        rekey(sealed.client)
    assert failed.value.returncode == 1
    assert "1 rows of syncrouter_outgoingtransaction under key 'k1'" in str(failed.value)
    assert str(victim.id) in str(failed.value)
    assert atrest.key_of(outbox(sealed.client).get(sequence=1).tx) == "k2"
    assert outbox(sealed.client).get(sequence=2).tx == tampered(victim.tx)


ROWS = 12


@pytest.mark.parametrize("nodes, kill_at", [("sqlite-sqlite", 2), ("postgres-postgres", 9)],
                         indirect=["nodes"])
def test_rotation_killed_inside_a_batch_and_run_again_leaves_every_row_readable(
        sealed, keys, kill_at):
    """A real process, SIGKILLed while its ``kill_at``-th batch's UPDATE is uncommitted."""
    for n in range(ROWS):
        factories.household(sealed.client, f"H{n}", village=SECRET)
    push(sealed)
    alias = sealed.client
    with keyring(keys, "k2"):
        worker = _rotate_in_a_process(alias, keys, pause_at=kill_at)
        lines = []
        while not lines or not lines[-1].startswith("paused") and lines[-1]:
            lines.append(worker.stdout.readline())
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
        assert lines[-1] == f"paused {kill_at}\n", "".join(lines) + worker.stderr.read()
        counts = rotation.usage(alias)["syncrouter_outgoingtransaction"]
        assert counts == {"k1": ROWS - (kill_at - 1), "k2": kill_at - 1}  # its batch rolled back
        for row in outbox(alias):
            assert ser.loads(atrest.reveal(row.tx, row.id))["fields"]["village"] == SECRET
        worker = _rotate_in_a_process(alias, keys)
        out, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, out + err
        assert rotation.usage(alias) == {"syncrouter_outgoingtransaction": {"k2": ROWS},
                                         "syncrouter_incomingtransaction": {}}
        assert [m.outcome for m in replay(sealed.server).values()] == ["inserted"] * ROWS


def _rotate_in_a_process(alias: str, keys: dict, pause_at: int | None = None):
    database = connections[alias].settings_dict["NAME"]
    argv = [sys.executable, "-m", "tests.support.rotateworker", "--alias", alias, "--database",
            str(database), "--keys", orjson.dumps(keys).decode(), "--current", "k2"]
    if pause_at:
        argv += ["--pause-at", str(pause_at)]
    return subprocess.Popen(argv, cwd=ROOT, text=True, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
