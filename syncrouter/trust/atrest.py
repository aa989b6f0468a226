"""At-rest encryption of the payload column (``tx``) of the outbox and the inbox.

Off unless ``SYNCROUTER_PAYLOAD_KEY`` names a key of the keyring
``SYNCROUTER_PAYLOAD_KEYS`` (``{key id: source}``, a source being a file path
or ``"env:VARIABLE"``, read as node keys are: a file others may read is
refused). The nodes that read each other's payloads share the keyring, as the
older tools' nodes shared their key set, so a direct copy moves ciphertext
unchanged; a batch file carries the plaintext, the file being encrypted to its
recipient as a whole.

A stored payload is either plain JSON (rows from before the feature, or with it
off) or an envelope ``sr-at1:<key id>:<nonce and ciphertext, URL-safe base64>``:
AES-256-GCM from ``cryptography`` with a random 96-bit nonce, and as associated
data the format tag, the key id and the row's id. A ciphertext moved to another
row, or changed by one bit, fails authentication. JSON never starts with the
prefix, so the two kinds of text cannot be taken for each other.

Signatures cover the plaintext (sign, then ``protect``; ``reveal``, then
verify), so they hold across re-encryption and across nodes. Old keys stay in
the keyring, readable, until no row needs them: ``keys rotate-payloads``
re-encrypts stored rows under the current key, and the system check
``syncrouter.E008`` counts rows still under a key that was removed.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.core.signals import setting_changed

from .. import conf
from ..exceptions import SyncError
from .keys import b64, describe_source, read_secret, unb64, write_secret
from .signing import uuid_bytes

PREFIX = "sr-at1:"
KEY_PREFIX = "syncrouter-payload-key-v1:"
_AAD_TAG = b"syncrouter-atrest-v1\x00"
_NONCE = 12
_TAG = 16
KEY_ID = re.compile(r"[A-Za-z0-9_.-]{1,32}\Z")


class Unreadable(SyncError):
    """A stored payload cannot be revealed; the message names the row and the key id."""

    def __init__(self, message: str, row_id, key_id: str):
        super().__init__(message)
        self.row_id, self.key_id = row_id, key_id


class KeyUnavailable(Unreadable):
    """The payload's key is not in this node's keyring, or its source cannot be read.

    The row is sound: it becomes readable once the key is back in the keyring.
    """


class Tampered(Unreadable):
    """The envelope is damaged, or its ciphertext was changed or moved from another row."""


@dataclass
class Keyring:
    """The configured payload keys, each read from its source on first use."""

    sources: dict[str, str]
    current: str | None
    ciphers: dict[str, AESGCM] = field(default_factory=dict)

    def cipher(self, key_id: str, row_id=None) -> AESGCM:
        """The AES-GCM cipher of ``key_id``, or ``KeyUnavailable`` saying why not."""
        cipher = self.ciphers.get(key_id)
        if cipher is None:
            cipher = self.ciphers[key_id] = self._load(key_id, row_id)
        return cipher

    def _load(self, key_id: str, row_id) -> AESGCM:
        whose = f"the payload of transaction {row_id}" if row_id else "payloads"
        source = self.sources.get(key_id)
        if source is None:
            raise KeyUnavailable(
                f"{whose} is encrypted under payload key {key_id!r}, which is not in "
                f"SYNCROUTER_PAYLOAD_KEYS (it holds {sorted(self.sources) or 'no key'})",
                row_id, key_id)
        try:
            text = read_secret(source)
        except SyncError as exc:
            raise KeyUnavailable(f"payload key {key_id!r} cannot be used for {whose}: {exc}",
                                 row_id, key_id) from None
        where = describe_source(source)
        if text is None:
            raise KeyUnavailable(
                f"payload key {key_id!r} (for {whose}) is missing: nothing at {where}; "
                f"create it with 'manage.py syncrouter keys new-payload-key {key_id}'",
                row_id, key_id)
        return AESGCM(parse_key(text, where))


def parse_key(text: str, where: str) -> bytes:
    """The 32 bytes of a payload key's text, or ``SyncError`` naming ``where`` it came from."""
    text = text.strip()
    try:
        if not text.startswith(KEY_PREFIX):
            raise ValueError(f"expected '{KEY_PREFIX}<key>'")
        raw = unb64(text[len(KEY_PREFIX):])
        if len(raw) != 32:
            raise ValueError(f"the key holds {len(raw)} bytes, not 32")
    except ValueError as exc:
        raise SyncError(f"{where} does not hold a syncrouter payload key: {exc}") from None
    return raw


_keyring: Keyring | None = None


def _forget(**kwargs) -> None:
    global _keyring
    _keyring = None


setting_changed.connect(_forget, dispatch_uid="syncrouter.trust.atrest")


def keyring() -> Keyring:
    """This process's keyring, from the settings (read once, reset by ``setting_changed``)."""
    global _keyring
    if _keyring is None:
        sources = dict(conf.get("SYNCROUTER_PAYLOAD_KEYS") or {})
        current = conf.get("SYNCROUTER_PAYLOAD_KEY")
        for key_id in [*sources, *([current] if current else [])]:
            if not isinstance(key_id, str) or not KEY_ID.match(key_id):
                raise SyncError(f"Payload key id {key_id!r} is not valid: 1 to 32 letters, "
                                "digits, '.', '_' or '-'.")
        if current and current not in sources:
            raise SyncError(f"SYNCROUTER_PAYLOAD_KEY is {current!r}, which is not a key of "
                            f"SYNCROUTER_PAYLOAD_KEYS ({sorted(sources) or 'empty'}).")
        _keyring = Keyring(sources, current or None)
    return _keyring


def enabled() -> bool:
    """Whether new payloads are encrypted (``SYNCROUTER_PAYLOAD_KEY`` is set)."""
    return keyring().current is not None


def key_of(text: str) -> str | None:
    """The key id of a stored payload's envelope, or None for plain JSON."""
    if not text.startswith(PREFIX):
        return None
    return text[len(PREFIX):].split(":", 1)[0]


def _aad(key_id: str, row_id) -> bytes:
    return _AAD_TAG + key_id.encode("ascii") + b"\x00" + uuid_bytes(row_id)


def protect(text: str, row_id, key_id: str | None = None) -> str:
    """``text`` as stored for the row ``row_id``: an envelope under ``key_id`` (by
    default the current key), or ``text`` itself when no key is set."""
    ring = keyring()
    key_id = key_id or ring.current
    if key_id is None:
        return text
    nonce = os.urandom(_NONCE)
    sealed = ring.cipher(key_id).encrypt(nonce, text.encode("utf-8"), _aad(key_id, row_id))
    return f"{PREFIX}{key_id}:{b64(nonce + sealed)}"


def reveal(text: str, row_id) -> str:
    """The plaintext payload of the row ``row_id`` from its stored ``text``.

    Plain JSON comes back as it is. Raises ``KeyUnavailable`` (the key is not
    in the keyring) or ``Tampered`` (the envelope is damaged, or belongs to
    another row), each naming the row and the key id.
    """
    if not text.startswith(PREFIX):
        return text
    key_id, _, body = text[len(PREFIX):].partition(":")
    cipher = keyring().cipher(key_id, row_id)
    try:
        raw = unb64(body)
        if len(raw) < _NONCE + _TAG:
            raise ValueError("too short")
        return cipher.decrypt(raw[:_NONCE], raw[_NONCE:], _aad(key_id, row_id)).decode("utf-8")
    except ValueError:  # also binascii.Error and UnicodeDecodeError
        problem = "the envelope is damaged (not base64, or too short)"
    except InvalidTag:
        problem = ("it fails authentication: the ciphertext was changed, or was moved here "
                   "from another row")
    raise Tampered(f"the payload of transaction {row_id} cannot be decrypted under payload "
                   f"key {key_id!r}: {problem}", row_id, key_id)


def at_rest(text: str, row_id) -> str:
    """``text`` as this node stores it: an envelope as it is (as a copy moves it), plain
    text under the current key (when one is set)."""
    return text if text.startswith(PREFIX) else protect(text, row_id)


def rekey(text: str, row_id) -> str | None:
    """``text`` re-encrypted under the current key (or made plain when none is set);
    None when it is stored that way already. Raises as ``reveal`` does."""
    current = keyring().current
    if key_of(text) == current:
        return None
    return protect(reveal(text, row_id), row_id, current)


def new_key(key_id: str) -> tuple[str, str]:
    """Create the payload key ``key_id`` at its source in ``SYNCROUTER_PAYLOAD_KEYS``.

    Returns (key text, source). A file source is written with mode 0600 and never
    overwritten: rows encrypted under the key it holds would be lost. For an
    ``env:`` source nothing is stored: the caller prints the key for the operator.
    """
    source = keyring().sources.get(key_id)
    if source is None:
        raise SyncError(f"Payload key {key_id!r} is not in SYNCROUTER_PAYLOAD_KEYS; add "
                        f"{key_id!r}: '/path/to/{key_id}.key' (or 'env:VARIABLE') there first.")
    text = KEY_PREFIX + b64(AESGCM.generate_key(bit_length=256))
    if not source.startswith("env:"):
        path = Path(source)
        if path.exists():
            raise SyncError(f"{path} already holds payload key {key_id!r}; it was kept (rows "
                            "encrypted under it would be unreadable without it). Give a new "
                            "key a new id.")
        write_secret(path, text)
    _forget()
    return text, source
