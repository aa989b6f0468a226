"""File transport: export to a batch file, import idempotently and all-or-nothing."""
import zipfile

import orjson
import pytest
from django.db import OperationalError, connections
from django.test.utils import CaptureQueriesContext

from syncrouter import serialization as ser
from syncrouter.exceptions import SyncError
from syncrouter.models import IncomingTransaction, OutgoingTransaction
from syncrouter.transfer.files import (
    CONTENT,
    MANIFEST,
    export_transactions,
    import_transactions,
    pending,
    read_manifest,
)
from tests.support import factories
from tests.support.checksum import node_checksums


def outbox(alias):
    return OutgoingTransaction.objects.using(alias)


def inbox(alias):
    return IncomingTransaction.objects.using(alias)


def rewrite(path, edit):
    """Rewrite batch file ``path`` with ``edit(lines, manifest)`` applied (a forger's tool)."""
    with zipfile.ZipFile(path) as archive:
        lines = archive.read(CONTENT).splitlines(keepends=True)
        manifest = orjson.loads(archive.read(MANIFEST))
    edit(lines, manifest)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(CONTENT, b"".join(lines))
        archive.writestr(MANIFEST, orjson.dumps(manifest))


def test_round_trip_keeps_identity_and_replays_to_the_same_data(nodes, tmp_path):
    factories.study(nodes.client, 2, 2, 1)
    path = tmp_path / "batch.zip"
    manifest = export_transactions(path, pending(nodes.client))
    source = {row.id: row for row in outbox(nodes.client)}
    assert manifest.count == len(source) == read_manifest(path)["count"]
    assert manifest.producers == {"field-laptop-1" if nodes.client == "client"
                                  else "field-laptop-pg": [1, len(source), len(source)]}
    assert outbox(nodes.client).filter(is_consumed_server=False).count() == len(source)

    assert import_transactions(path, nodes.server) == (len(source), 0)
    hop = "community-lite" if nodes.server == "server" else "community-pg"
    for row in inbox(nodes.server):
        original = source[row.id]
        assert (row.producer, row.sequence, row.hlc, row.tx, row.db_transaction_id,
                row.timestamp, row.action) == (
            original.producer, original.sequence, original.hlc, original.tx,
            original.db_transaction_id, original.timestamp, original.action)
        assert ser.loads(row.hops) == ser.loads(original.hops) + [hop]

    inbox(nodes.server).filter(is_consumed=False).deserialize(check_hostname=False)
    assert node_checksums(nodes.server) == node_checksums(nodes.client)


def test_files_import_in_any_order_repeated_and_overlapping(nodes, tmp_path):
    factories.study(nodes.client, 1, 1, 1, prefix="A")
    first = tmp_path / "first.zip"
    export_transactions(first, pending(nodes.client))
    factories.study(nodes.client, 1, 1, 1, prefix="B")
    second = tmp_path / "second.zip"  # unmarked, so it carries the first file's rows too
    export_transactions(second, pending(nodes.client))
    total = outbox(nodes.client).count()

    assert import_transactions(second, nodes.server, batch_size=3) == (total, 0)
    assert import_transactions(first, nodes.server) == (0, read_manifest(first)["count"])
    assert import_transactions(second, nodes.server) == (0, total)
    assert inbox(nodes.server).count() == total
    assert set(inbox(nodes.server).values_list("id", flat=True)) == set(
        outbox(nodes.client).values_list("id", flat=True))


@pytest.fixture
def lite():
    """The SQLite pair, client -> server, with the list data loaded."""
    factories.load_symptoms("client")
    factories.load_symptoms("server")


def test_mark_marks_exactly_the_exported_rows(lite, tmp_path):
    factories.study("client", 1, 1, 1)
    path = tmp_path / "sent.zip"
    manifest = export_transactions(path, pending("client"), mark=True, batch_size=2)
    assert not outbox("client").filter(is_consumed_server=False).exists()
    assert set(outbox("client").values_list("consumer", "batch_id")) == {
        ("file:sent.zip", manifest.batch_id)}
    assert export_transactions(tmp_path / "empty.zip", pending("client")).count == 0


def test_mark_is_all_or_nothing(lite, tmp_path):
    """A failure while marking leaves nothing marked: no client database transaction
    half marked, its other half sent alone in the next file."""
    factories.study("client", 1, 1, 1)  # 5 transactions, marked 2 at a time
    updates = 0

    def fail_second_update(execute, sql, params, many, context):
        nonlocal updates
        if sql.startswith("UPDATE"):
            updates += 1
            if updates == 2:
                raise OperationalError("disk I/O error")
        return execute(sql, params, many, context)

    with connections["client"].execute_wrapper(fail_second_update), \
            pytest.raises(OperationalError):
        export_transactions(tmp_path / "sent.zip", pending("client"), mark=True, batch_size=2)
    assert not outbox("client").filter(is_consumed_server=True).exists()


def test_community_export_carries_unforwarded_incoming(lite, tmp_path):
    factories.study("client", 1, 1, 1)
    received = pending("client")[0].copy_to_incoming_transaction("server")
    assert len(pending("server")) == 2  # own outbox and inbox, on a community node
    manifest = export_transactions(tmp_path / "fwd.zip", pending("server"))
    assert manifest.count == received.copied
    lines = zipfile.ZipFile(tmp_path / "fwd.zip").read(CONTENT).splitlines()
    assert orjson.loads(lines[0])["hops"] == ["field-laptop-1", "community-lite"]


@pytest.fixture
def batch(lite, tmp_path):
    factories.study("client", 2, 1, 1)
    path = tmp_path / "batch.zip"
    export_transactions(path, pending("client"))
    return path


def drop_last_line(lines, manifest):
    """Remove a row and make the hash agree, leaving the count and ranges stale."""
    import hashlib

    del lines[-1]
    manifest["sha256"] = hashlib.sha256(b"".join(lines)).hexdigest()


def alter_a_row(lines, manifest):
    row = orjson.loads(lines[0])
    row["tx_name"] = "auth.user"
    lines[0] = orjson.dumps(row) + b"\n"


def break_a_row(lines, manifest):
    import hashlib

    row = orjson.loads(lines[6])
    del row["hlc"]
    lines[6] = orjson.dumps(row) + b"\n"
    manifest["sha256"] = hashlib.sha256(b"".join(lines)).hexdigest()


@pytest.mark.parametrize("damage, problem", [
    (lambda path: path.write_bytes(path.read_bytes()[:-200]), "not a complete syncrouter"),
    (lambda path: path.write_bytes(b"PK" + b"\0" * 100), "not a complete syncrouter"),
    (lambda path: rewrite(path, alter_a_row), "SHA-256"),
    (lambda path: rewrite(path, drop_last_line), "the manifest counts"),
    (lambda path: rewrite(path, break_a_row), "line 7: malformed transaction (KeyError: 'hlc')"),
    (lambda path: rewrite(path, lambda lines, m: m.update(version=2)), "format version 2"),
], ids=["truncated", "not-zip", "altered", "row-removed", "row-malformed", "version"])
def test_damaged_file_is_refused_whole(batch, damage, problem):
    damage(batch)
    with pytest.raises(SyncError) as refused:
        import_transactions(batch, "server", batch_size=3)  # two batches in before the fault
    assert str(batch) in str(refused.value)
    assert problem in str(refused.value)
    assert not inbox("server").exists()


def test_bad_crc_is_refused(batch):
    """Flip a byte inside the compressed data: zip's CRC (or inflate) catches it."""
    with zipfile.ZipFile(batch) as archive:
        info = archive.getinfo(CONTENT)
    data = bytearray(batch.read_bytes())
    data[info.header_offset + 30 + len(CONTENT) + info.compress_size // 2] ^= 0xFF
    batch.write_bytes(bytes(data))
    with pytest.raises(SyncError, match="damaged or truncated|malformed|not JSON") as refused:
        import_transactions(batch, "server", batch_size=3)
    assert str(batch) in str(refused.value)
    assert not inbox("server").exists()


def test_reused_sequence_under_another_id_is_refused(batch):
    import uuid

    row = outbox("client").get(sequence=5)
    IncomingTransaction.objects.using("server").create(
        **{f: getattr(row, f) for f in ("tx", "tx_name", "tx_pk", "producer", "hostname",
                                        "sequence", "db_transaction_id", "hlc", "action",
                                        "timestamp")}, id=uuid.uuid4())
    with pytest.raises(SyncError, match=rf"{batch}: .*field-laptop-1#5") as refused:
        import_transactions(batch, "server", batch_size=2)
    assert "Nothing from this file was imported" in str(refused.value)
    assert inbox("server").count() == 1


def test_export_and_import_do_not_query_per_row(lite, tmp_path):
    factories.study("client", 4, 2, 2)
    total = outbox("client").count()
    path = tmp_path / "many.zip"
    with CaptureQueriesContext(connections["client"]) as exported:
        export_transactions(path, pending("client"), batch_size=20)
    with CaptureQueriesContext(connections["server"]) as imported:
        assert import_transactions(path, "server", batch_size=20).copied == total
    batches = -(-total // 20)
    assert total >= 60
    assert len(exported) <= batches + 4  # + 1: the refusal ledger, read once; + 1: the seal
    assert len(imported) <= 6 * batches + 4 < total / 2  # a few per batch, none per row
