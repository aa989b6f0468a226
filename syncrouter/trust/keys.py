"""A node's own keys: Ed25519 to sign what it captures, X25519 to open files sent to it.

Two key pairs rather than one: an Ed25519 key converted to X25519 would need
arithmetic that the ``cryptography`` library does not offer, and syncrouter does
no cryptography of its own.

Formats (both one line, so either fits in a file or an environment variable):

* private: ``syncrouter-key-v1:<Ed25519 seed>:<X25519 private key>``, each 32
  bytes in URL-safe base64;
* public: ``sr1:<Ed25519 public key + X25519 public key>`` (64 bytes, URL-safe
  base64), what ``keys show`` prints and ``keys trust`` takes. Its fingerprint
  is the SHA-256 of those 64 bytes, in hex.

Where a node's private key is read from: ``SYNCROUTER_NODES[alias]["key"]``, a
file path or ``"env:VARIABLE"``; by default the file ``<SYNCROUTER_KEY_DIR>/<node
name>.key``. Key files are written with mode 0600 in a 0700 directory, and a file
that others may read is refused, as ssh refuses one.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from django.core.signals import setting_changed

from .. import conf
from ..exceptions import SyncError

PRIVATE_PREFIX = "syncrouter-key-v1"
PUBLIC_PREFIX = "sr1:"
_RAW = serialization.Encoding.Raw


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class PublicKeys:
    """A node's two public keys, as enrolled on the nodes that receive from it."""

    signing: Ed25519PublicKey
    encryption: X25519PublicKey

    @cached_property
    def raw(self) -> bytes:
        return (self.signing.public_bytes(_RAW, serialization.PublicFormat.Raw)
                + self.encryption.public_bytes(_RAW, serialization.PublicFormat.Raw))

    @property
    def token(self) -> str:
        return PUBLIC_PREFIX + b64(self.raw)

    @cached_property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()

    @cached_property
    def key_id(self) -> str:
        """The short id a signature names its key by: the fingerprint's first 16 hex digits."""
        return self.fingerprint[:16]


def parse_public(token: str) -> PublicKeys:
    """``PublicKeys`` from an ``sr1:`` token, or ``SyncError`` saying what is wrong with it."""
    token = token.strip()
    if not token.startswith(PUBLIC_PREFIX):
        raise SyncError(f"Not a syncrouter public key (expected '{PUBLIC_PREFIX}...' as "
                        f"printed by 'manage.py syncrouter keys show'): {token[:40]!r}")
    try:
        raw = unb64(token[len(PUBLIC_PREFIX):])
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 64:
        raise SyncError(f"Public key {token[:40]!r}... is damaged: it must hold 64 bytes "
                        f"(two 32-byte keys), it holds {len(raw)}.")
    return PublicKeys(Ed25519PublicKey.from_public_bytes(raw[:32]),
                      X25519PublicKey.from_public_bytes(raw[32:]))


@dataclass(frozen=True)
class NodeKeys:
    """A node's private keys, and the public ones it hands out for enrolment."""

    signing: Ed25519PrivateKey
    encryption: X25519PrivateKey

    @classmethod
    def generate(cls) -> "NodeKeys":
        return cls(Ed25519PrivateKey.generate(), X25519PrivateKey.generate())

    @cached_property
    def public(self) -> PublicKeys:
        return PublicKeys(self.signing.public_key(), self.encryption.public_key())

    def dumps(self) -> str:
        raw = serialization.PrivateFormat.Raw
        none = serialization.NoEncryption()
        return ":".join((PRIVATE_PREFIX, b64(self.signing.private_bytes(_RAW, raw, none)),
                         b64(self.encryption.private_bytes(_RAW, raw, none))))

    @classmethod
    def loads(cls, text: str, where: str) -> "NodeKeys":
        parts = text.strip().split(":")
        try:
            if len(parts) != 3 or parts[0] != PRIVATE_PREFIX:
                raise ValueError(f"expected '{PRIVATE_PREFIX}:<key>:<key>'")
            return cls(Ed25519PrivateKey.from_private_bytes(unb64(parts[1])),
                       X25519PrivateKey.from_private_bytes(unb64(parts[2])))
        except (ValueError, binascii.Error) as exc:
            raise SyncError(f"The private key in {where} is not a syncrouter key: {exc}") \
                from None


def key_source(alias: str, name: str | None = None) -> str:
    """Where the private key of the node behind ``alias`` is read: a path or ``env:NAME``.

    With ``name``, the key of the node of that name instead: rows captured under a
    name the alias no longer has are signed with that name's key when sealed later.
    """
    node_name = conf.node_for_alias(alias).name
    declared = conf.get("SYNCROUTER_NODES").get(alias, {}).get("key")
    if declared and name in (None, node_name):
        return str(declared)
    directory = conf.get("SYNCROUTER_KEY_DIR") or Path.home() / ".syncrouter" / "keys"
    return str(Path(directory) / f"{name or node_name}.key")


_loaded: dict[str, NodeKeys | None] = {}  # by source
_by_alias: dict[tuple, NodeKeys] = {}  # the capture path's shortcut past key_source()


def _forget(**kwargs) -> None:
    _loaded.clear()
    _by_alias.clear()


setting_changed.connect(_forget, dispatch_uid="syncrouter.trust.keys")


def load(alias: str) -> NodeKeys | None:
    """The private keys of the node behind ``alias``, or None if it has none yet.

    Read once per process and source. Raises ``SyncError`` for a key file that
    others may read or that does not hold a key.
    """
    return _load(key_source(alias))


def _load(source: str) -> NodeKeys | None:
    if source not in _loaded:
        _loaded[source] = _read(source)
    return _loaded[source]


def _read(source: str) -> NodeKeys | None:
    text = read_secret(source)
    return None if text is None else NodeKeys.loads(text, describe_source(source))


def describe_source(source: str) -> str:
    """``source`` (a path or ``env:NAME``) as error messages name it."""
    return f"environment variable {source[4:]}" if source.startswith("env:") else source


def read_secret(source: str) -> str | None:
    """The text of a key source, a file path or ``env:NAME``; None if it is absent.

    Raises ``SyncError`` for a file that other users may read, as ssh refuses one.
    """
    if source.startswith("env:"):
        return os.environ.get(source[4:]) or None
    try:
        mode = os.stat(source).st_mode
    except FileNotFoundError:
        return None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SyncError(f"Key file {source} may be read by other users (mode "
                        f"{stat.S_IMODE(mode):04o}); run 'chmod 600 {source}'. "
                        "It was not used.")
    return Path(source).read_text(encoding="ascii")


def write_secret(path: Path, text: str) -> None:
    """Store ``text`` in the file ``path`` with mode 0600 (its directory 0700), atomically
    (written under a temporary name, then renamed)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}")
    handle = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(handle, "w", encoding="ascii") as out:
        out.write(text + "\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(temp, path)


def require(alias: str, name: str | None = None) -> NodeKeys:
    """``load(alias)`` (the key of node ``name``: see ``key_source``), or ``SyncError``
    telling how to create the keys."""
    keys = _by_alias.get((alias, name))
    if keys is not None:
        return keys
    source = key_source(alias, name)
    keys = _load(source)
    if keys is None:
        raise SyncError(
            f"Node {name or conf.node_for_alias(alias).name!r} (alias {alias!r}) has no key "
            f"at {source}: it cannot sign what it captures. Create one with 'manage.py "
            f"syncrouter keys init --alias {alias}' (or set SYNCROUTER_SIGN = False, and let "
            "the receivers accept unsigned transactions: see the README's security model).")
    _by_alias[alias, name] = keys
    return keys


def create(alias: str, replace: bool = False) -> tuple[NodeKeys, str]:
    """Generate keys for the node behind ``alias`` and store them; (keys, where).

    A file is created with mode 0600 (its directory 0700) and never overwritten
    unless ``replace``. For an ``env:`` source nothing is stored: the caller
    prints the key for the operator to put in the environment.
    """
    source = key_source(alias)
    keys = NodeKeys.generate()
    if not source.startswith("env:"):
        path = Path(source)
        if path.exists() and not replace:
            raise SyncError(f"{path} already holds a key; it was kept (pass --replace to make "
                            "a new one; the nodes that trust the old key must enrol the new).")
        write_secret(path, keys.dumps())
    _loaded[source] = keys
    for cached in [key for key in _by_alias if key[0] == alias]:
        del _by_alias[cached]
    return keys, source
