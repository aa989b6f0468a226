"""Batch files under trust: encrypted to their recipient, signed manifests, signed rows."""
import io
import zipfile

import orjson
import pytest
from django.test import override_settings

from syncrouter import conf
from syncrouter.exceptions import SyncError
from syncrouter.models import RefusedTransaction
from syncrouter.transfer.files import (
    CONTENT,
    MANIFEST,
    export_transactions,
    import_transactions,
    pending,
)
from syncrouter.trust import crypto_files, devices, keys
from tests.support import factories
from tests.support.replay import TRANSACTIONAL, replay
from tests.support.trust import enrol, inbox, node_named, trusted  # noqa: F401
from tests.testapp.models import Household

pytestmark = TRANSACTIONAL


@pytest.fixture
def exported(trusted, tmp_path):
    """Three households exported from the client, encrypted to the server."""
    for identifier in ("H1", "H2", "H3"):
        factories.household(trusted.client, identifier)
    enrol(trusted.client, trusted.server, role="community")  # the recipient, on the exporter
    path = tmp_path / "batch.zip"
    export_transactions(path, pending(trusted.client),
                        recipient=conf.node_for_alias(trusted.server).name)
    return path


def test_encrypted_file_imports_on_its_recipient(trusted, exported):
    assert crypto_files.is_encrypted(exported)
    data = exported.read_bytes()
    # Unreadable without the key (markers long enough not to occur in random bytes).
    assert b"household" not in data and b"transactions.jsonl" not in data
    assert import_transactions(exported, trusted.server).copied == 3
    assert {m.outcome for m in replay(trusted.server).values()} == {"inserted"}
    assert import_transactions(exported, trusted.server).already_present == 3


def test_one_flipped_byte_anywhere_refuses_the_file(trusted, exported):
    data = bytearray(exported.read_bytes())
    header_end = data.index(b"\n", len(crypto_files.MAGIC)) + 1
    for offset in (header_end + 2, header_end + 40, len(data) // 2, len(data) - 1):
        damaged = bytearray(data)
        damaged[offset] ^= 0x01
        exported.write_bytes(bytes(damaged))
        with pytest.raises(SyncError, match=r"chunk 0 (fails authentication|is shorter)"):
            import_transactions(exported, trusted.server)
    exported.write_bytes(bytes(data[:-10]))
    with pytest.raises(SyncError, match="fails authentication|cut short"):
        import_transactions(exported, trusted.server)
    assert not inbox(trusted.server).exists()


def test_a_file_for_another_node_cannot_be_read(trusted, tmp_path):
    """A file meant for central, carried through a community server."""
    factories.household(trusted.client, "H1")
    central = keys.NodeKeys.generate()
    devices.trust(trusted.client, "central", central.public.token, role="central")
    path = tmp_path / "for-central.zip"
    export_transactions(path, pending(trusted.client), recipient="central")
    with pytest.raises(SyncError, match=r"encrypted for 'central' .* this node cannot read it"):
        import_transactions(path, trusted.server)
    assert not inbox(trusted.server).exists()


def test_export_needs_a_known_recipient(trusted, tmp_path):
    with pytest.raises(SyncError, match="name the node the file is for"):
        export_transactions(tmp_path / "x.zip", pending(trusted.client))
    with pytest.raises(SyncError, match="'nobody': it is not enrolled"):
        export_transactions(tmp_path / "x.zip", pending(trusted.client), recipient="nobody")
    assert not list(tmp_path.glob("*.zip"))


def _plain_file(trusted, tmp_path):
    for identifier in ("H1", "H2", "H3"):
        factories.household(trusted.client, identifier)
    path = tmp_path / "plain.zip"
    with override_settings(SYNCROUTER_ENCRYPT_FILES=False):
        export_transactions(path, pending(trusted.client))
    return path


def _rewrite(path, change):
    """Rewrite the archive's members through ``change(name, data) -> data``."""
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, change(name, data))
    path.write_bytes(buffer.getvalue())


def test_unencrypted_file_refused_where_encryption_is_required(trusted, tmp_path):
    path = _plain_file(trusted, tmp_path)
    with pytest.raises(SyncError, match="not encrypted"):
        import_transactions(path, trusted.server)


def test_altered_member_with_recomputed_checksum_is_refused(trusted, tmp_path):
    """The issue's attack: a row altered, the manifest's SHA-256 recomputed."""
    import hashlib

    path = _plain_file(trusted, tmp_path)
    altered = {}

    def change(name, data):
        if name == CONTENT:
            altered["content"] = data.replace(b'\\"H2\\"', b'\\"HX\\"')
            return altered["content"]
        if name == MANIFEST:
            manifest = orjson.loads(data)
            manifest["sha256"] = hashlib.sha256(altered["content"]).hexdigest()
            return orjson.dumps(manifest, option=orjson.OPT_INDENT_2)
        return data

    _rewrite(path, change)
    with override_settings(SYNCROUTER_ENCRYPT_FILES=False):
        with pytest.raises(SyncError, match="manifest's signature does not hold"):
            import_transactions(path, trusted.server)
        assert not inbox(trusted.server).exists()

        # Had the attacker the exporter's key for the manifest, the row's own
        # signature (its producer's key) still refuses the altered row alone.
        def resign(name, data):
            if name == crypto_files.MANIFEST_SIGNATURE:
                with zipfile.ZipFile(path) as archive:
                    return crypto_files.manifest_signature(trusted.client,
                                                           archive.read(MANIFEST))
            return data

        _rewrite(path, resign)
        assert import_transactions(path, trusted.server).copied == 2
    refused = RefusedTransaction.objects.using(trusted.server).get()
    assert refused.sequence == 2 and "bad signature" in refused.reason
    assert refused.source == f"file {path}"
    replay(trusted.server)
    assert set(Household.objects.using(trusted.server).values_list(
        "household_identifier", flat=True)) == {"H1", "H3"}


def test_a_revoked_laptops_later_file(trusted, tmp_path):
    name = conf.node_for_alias(trusted.client).name
    factories.household(trusted.client, "H1")
    with override_settings(SYNCROUTER_ENCRYPT_FILES=False):
        export_transactions(tmp_path / "early.zip", pending(trusted.client))
        import_transactions(tmp_path / "early.zip", trusted.server)
        devices.revoke(trusted.server, name)
        factories.household(trusted.client, "H2")
        export_transactions(tmp_path / "later.zip", pending(trusted.client))
        result = import_transactions(tmp_path / "later.zip", trusted.server)
    assert tuple(result) == (0, 1)
    assert list(inbox(trusted.server).values_list("sequence", flat=True)) == [1]
    assert RefusedTransaction.objects.using(trusted.server).get().reason == (
        f"refused: device {name!r} was revoked after #1; this is #2")


def test_the_manifest_of_an_unknown_exporter(trusted, tmp_path):
    with node_named(trusted.client, "stranger"):
        path = _plain_file(trusted, tmp_path)
    with override_settings(SYNCROUTER_ENCRYPT_FILES=False):
        with pytest.raises(SyncError, match="exported by 'stranger', which is not enrolled"):
            import_transactions(path, trusted.server)
