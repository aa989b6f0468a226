"""At-rest payload envelopes (``trust.atrest``) without a database: generated texts,
key sequences and keyring histories, and the attacks on one envelope."""
import os
import uuid

import pytest
from django.test import override_settings
from hypothesis import given, settings as hsettings, strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
)

from syncrouter.checks import check_payload_keys
from syncrouter.exceptions import SyncError
from syncrouter.trust import atrest, keys, sign_outbox_rows, signing

pytestmark = pytest.mark.django_db(databases=[])

KEY_IDS = ["k1", "k2", "k3"]
ENV = {key_id: f"SYNCROUTER_TEST_PAYLOAD_KEY_{key_id.upper()}" for key_id in KEY_IDS}
KEYS = {key_id: atrest.KEY_PREFIX + atrest.b64(bytes([n]) * 32)
        for n, key_id in enumerate(KEY_IDS, 1)}


@pytest.fixture(autouse=True, scope="module")
def key_environment():
    """Three payload keys in environment variables, as a deployment may hold them."""
    old = {name: os.environ.get(name) for name in ENV.values()}
    os.environ.update({ENV[key_id]: KEYS[key_id] for key_id in KEY_IDS})
    yield
    for name, value in old.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def ring(current, key_ids=KEY_IDS):
    return override_settings(SYNCROUTER_PAYLOAD_KEYS={k: f"env:{ENV[k]}" for k in key_ids},
                             SYNCROUTER_PAYLOAD_KEY=current)


texts = st.text(max_size=400)
ids = st.uuids()


@hsettings(max_examples=150, deadline=None)
@given(text=texts, row_id=ids, key_ids=st.lists(st.sampled_from(KEY_IDS + [None]),
                                                 min_size=1, max_size=5))
def test_any_text_survives_any_sequence_of_keys(text, row_id, key_ids):
    """Encrypted under a first key, re-encrypted (or made plain) under each next one."""
    with ring(key_ids[0]):
        stored = atrest.protect(text, row_id)
        assert atrest.key_of(stored) == key_ids[0]
    for key_id in key_ids[1:]:
        with ring(key_id):
            new = atrest.rekey(stored, row_id)
            assert (new is None) == (atrest.key_of(stored) == key_id)
            stored = stored if new is None else new
            assert atrest.key_of(stored) == key_id
            assert atrest.reveal(stored, row_id) == text
    if key_ids[-1] is None:
        assert stored == text


@hsettings(max_examples=150, deadline=None)
@given(text=texts, row_id=ids, other=ids, position=st.integers(min_value=0),
       bit=st.integers(min_value=0, max_value=6))
def test_a_changed_or_moved_envelope_never_reveals_another_text(text, row_id, other, position,
                                                                 bit):
    with ring("k1"):
        stored = atrest.protect(text, row_id)
        index = len(atrest.PREFIX) + position % (len(stored) - len(atrest.PREFIX))
        changed = stored[:index] + chr(ord(stored[index]) ^ (1 << bit)) + stored[index + 1:]
        try:
            # Base64's last character has unused bits: a flip there may decode the same.
            assert atrest.reveal(changed, row_id) == text
        except atrest.Unreadable as exc:
            assert str(row_id) in str(exc)
        if other != row_id:
            with pytest.raises(atrest.Tampered, match=f"transaction {other}.*another row"):
                atrest.reveal(stored, other)


def test_plain_json_is_left_as_it_is():
    row_id = uuid.uuid4()
    text = '{"model": "testapp.household", "nk": ["H1"]}'
    with ring(None):
        assert atrest.protect(text, row_id) == text
        assert atrest.reveal(text, row_id) == text
    with ring("k2"):  # older rows stay readable after the feature is switched on
        assert atrest.reveal(text, row_id) == text
        assert atrest.rekey(text, row_id).startswith(f"{atrest.PREFIX}k2:")
    assert not atrest.enabled()


def test_errors_name_the_row_and_the_key():
    row_id = uuid.uuid4()
    with ring("k3"):
        stored = atrest.protect("{}", row_id)
    with ring(None, ["k1"]), pytest.raises(atrest.KeyUnavailable) as missing:
        atrest.reveal(stored, row_id)
    assert missing.value.key_id == "k3" and str(row_id) in str(missing.value)
    assert "not in SYNCROUTER_PAYLOAD_KEYS" in str(missing.value)
    with ring(None), pytest.raises(atrest.Tampered, match="damaged"):
        atrest.reveal(f"{atrest.PREFIX}k1:abc", row_id)
    with ring("k4", ["k1"]), pytest.raises(SyncError, match="'k4', which is not a key"):
        atrest.protect("{}", row_id)
    with override_settings(SYNCROUTER_PAYLOAD_KEYS={"k:1": "env:X"}), \
            pytest.raises(SyncError, match="not valid"):
        atrest.keyring()


def test_key_sources_are_checked(tmp_path):
    path = tmp_path / "k1.key"
    with override_settings(SYNCROUTER_PAYLOAD_KEYS={"k1": str(path)}, SYNCROUTER_PAYLOAD_KEY="k1"):
        with pytest.raises(atrest.KeyUnavailable, match="new-payload-key k1"):
            atrest.protect("{}", uuid.uuid4())
        text, where = atrest.new_key("k1")
        assert where == str(path) and path.stat().st_mode & 0o777 == 0o600
        assert path.read_text().strip() == text
        with pytest.raises(SyncError, match="already holds payload key 'k1'"):
            atrest.new_key("k1")
        path.chmod(0o644)
        with pytest.raises(atrest.KeyUnavailable, match="may be read by other users"):
            atrest.protect("{}", uuid.uuid4())
        path.chmod(0o600)
        path.write_text("syncrouter-payload-key-v1:c2hvcnQ")
        with pytest.raises(SyncError, match="holds 5 bytes, not 32"):
            atrest.protect("{}", uuid.uuid4())


class KeyringHistory(RuleBasedStateMachine):
    """A node's keyring over time: keys added, the current key switched (or switched off),
    rows written and re-encrypted, keys removed. Every row stays readable while its key is
    in the keyring, and one whose key was removed says which key it needs."""

    rows = Bundle("rows")

    def __init__(self):
        super().__init__()
        self.keys = ["k1"]
        self.current = "k1"
        self.stored: dict[uuid.UUID, tuple[str, str]] = {}  # id -> (plaintext, stored)
        self.apply()

    def apply(self):
        if hasattr(self, "override"):
            self.override.disable()
        self.override = ring(self.current, self.keys)
        self.override.enable()

    def teardown(self):
        self.override.disable()

    @rule(target=rows, text=texts)
    def write(self, text):
        row_id = uuid.uuid4()
        self.stored[row_id] = (text, atrest.protect(text, row_id))
        return row_id

    @rule(key_id=st.sampled_from(KEY_IDS))
    def add_key(self, key_id):
        if key_id not in self.keys:
            self.keys.append(key_id)
            self.apply()

    @rule(data=st.data())
    def switch(self, data):
        self.current = data.draw(st.sampled_from(self.keys + [None]))
        self.apply()

    @rule(row_id=rows)
    def rotate_one(self, row_id):
        text, stored = self.stored[row_id]
        if atrest.key_of(stored) in self.keys + [None]:
            new = atrest.rekey(stored, row_id)
            self.stored[row_id] = (text, stored if new is None else new)

    @precondition(lambda self: len(self.keys) > 1)
    @rule(data=st.data())
    def remove_key(self, data):
        key_id = data.draw(st.sampled_from([k for k in self.keys if k != self.current]))
        self.keys.remove(key_id)
        self.apply()

    @rule(row_id=consumes(rows))
    def forget(self, row_id):
        del self.stored[row_id]

    @invariant()
    def readable_while_the_key_is_there(self):
        for row_id, (text, stored) in self.stored.items():
            key_id = atrest.key_of(stored)
            if key_id is None or key_id in self.keys:
                assert atrest.reveal(stored, row_id) == text
            else:
                with pytest.raises(atrest.KeyUnavailable, match=f"'{key_id}'"):
                    atrest.reveal(stored, row_id)


KeyringHistory.TestCase.settings = hsettings(max_examples=60, stateful_step_count=25,
                                             deadline=None)
test_keyring_history = KeyringHistory.TestCase


def test_check_reports_a_current_key_that_cannot_be_read(tmp_path):
    with override_settings(SYNCROUTER_PAYLOAD_KEYS={"k1": str(tmp_path / "k1.key")},
                           SYNCROUTER_PAYLOAD_KEY="k1"):
        errors = check_payload_keys()
        assert [e.id for e in errors] == ["syncrouter.E007"]
        assert "new-payload-key k1" in errors[0].msg
        atrest.new_key("k1")
        assert check_payload_keys() == []
    with ring(None):
        assert check_payload_keys() == []


def test_rows_read_back_encrypted_are_signed_over_their_plaintext(tmp_path):
    """A seal step signs outbox rows it reads back from the table, payloads encrypted:
    the signature must hold for the plaintext, which is what receivers verify."""
    row_id = uuid.uuid4()
    plain = '{"model": "testapp.household", "nk": ["H1"]}'
    with ring("k1"), override_settings(SYNCROUTER_SIGN=True, SYNCROUTER_KEY_DIR=tmp_path):
        node_keys, _ = keys.create("client")
        values = {"id": row_id, "producer": "field-laptop-1", "hostname": "h", "sequence": 1,
                  "db_transaction_id": uuid.uuid4(), "hlc": 1 << 16, "tx_name":
                  "testapp.household", "tx_pk": "1", "action": "I",
                  "tx": atrest.protect(plain, row_id), "signature": ""}
        columns = list(values)
        row = list(values.values())
        sign_outbox_rows("client", [row], columns)
        signed = dict(zip(columns, row))
        assert signed["tx"] == values["tx"]  # the stored payload is left as it is
        signing.verify({**signed, "tx": plain}, node_keys.public)
