"""Batch files: encrypted to their recipient, manifest signed by the exporting node.

**Encryption.** An exported archive is encrypted to the X25519 key of the node
it is meant for (enrolled on the exporting node with ``keys trust``), so a lost
USB stick is unreadable, and so is a file meant for the central server to a
community server that holds it on the way. Nothing here is home-made: X25519
key agreement with a fresh ephemeral key, HKDF-SHA256, and AES-256-GCM in the
STREAM construction (Hoang, Reyhanitabar, Rogaway and Vizár, 2015; the one age
and Tink use for files): the archive is cut into 1 MiB chunks, each sealed
with a nonce made of a random prefix, the chunk's number and a last-chunk
flag, and the file's header as associated data. A changed, reordered,
dropped or appended byte anywhere fails authentication, and a file cut short
lacks its last chunk; either way the whole file is refused, naming the chunk.

File layout: the line ``SYNCROUTER-ENC1``, one JSON line (recipient name and
key fingerprint, the ephemeral public key, the nonce prefix, the chunk size),
then per chunk a 4-byte big-endian length and the sealed chunk.

**Manifest signature.** ``manifest.sig`` holds the exporting node's Ed25519
signature over ``manifest.json`` (``v1.<key id>.<signature>``), so the
manifest's claims (the rows' count, ranges and SHA-256) have a key behind them.
Each row keeps its producer's own signature as well; the manifest signature
is about the file, the row signatures about the data.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .. import conf
from ..exceptions import SyncError
from . import devices, keys

MAGIC = b"SYNCROUTER-ENC1\n"
CHUNK = 1 << 20
INFO = b"syncrouter-file-v1"
MANIFEST_SIGNATURE = "manifest.sig"


def _key(shared: bytes, ephemeral: bytes, recipient: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=ephemeral + recipient,
                info=INFO).derive(shared)


def _nonce(prefix: bytes, number: int, last: bool) -> bytes:
    return prefix + number.to_bytes(4, "big") + (b"\x01" if last else b"\x00")


def encrypt(source: Path, target: Path, recipient: str, public: keys.PublicKeys) -> None:
    """Write ``source`` to ``target`` encrypted to ``recipient``'s ``public`` keys."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    ephemeral = X25519PrivateKey.generate()
    ephemeral_raw = ephemeral.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    recipient_raw = public.raw[32:]
    aead = AESGCM(_key(ephemeral.exchange(public.encryption), ephemeral_raw, recipient_raw))
    prefix = secrets.token_bytes(7)
    header = orjson.dumps({"recipient": recipient, "fingerprint": public.fingerprint,
                           "ephemeral": keys.b64(ephemeral_raw), "prefix": keys.b64(prefix),
                           "chunk": CHUNK}) + b"\n"
    with open(source, "rb") as plain, open(target, "wb") as out:
        out.write(MAGIC + header)
        number, chunk = 0, plain.read(CHUNK)
        while True:
            following = plain.read(CHUNK)
            sealed = aead.encrypt(_nonce(prefix, number, not following), chunk, header)
            out.write(len(sealed).to_bytes(4, "big") + sealed)
            if not following:
                break
            number, chunk = number + 1, following
        out.flush()
        os.fsync(out.fileno())


def is_encrypted(path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(len(MAGIC)) == MAGIC


def decrypt(source, target: Path, own: keys.NodeKeys, own_name: str) -> None:
    """Write the archive inside encrypted ``source`` to ``target``; ``SyncError`` naming
    the fault (another recipient, a chunk that fails authentication, a cut file)."""
    with open(source, "rb") as sealed, open(target, "wb") as out:
        sealed.read(len(MAGIC))
        header = sealed.readline()
        try:
            meta = orjson.loads(header)
            ephemeral, prefix = keys.unb64(meta["ephemeral"]), keys.unb64(meta["prefix"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            raise SyncError(f"{source}: the encryption header is damaged; nothing "
                            "imported.") from None
        if meta.get("fingerprint") != own.public.fingerprint:
            raise SyncError(
                f"{source}: encrypted for {meta.get('recipient')!r} (key "
                f"{str(meta.get('fingerprint'))[:16]}), not for this node {own_name!r} (key "
                f"{own.public.key_id}); this node cannot read it. Nothing imported.")
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

        try:
            shared = own.encryption.exchange(X25519PublicKey.from_public_bytes(ephemeral))
        except ValueError:
            raise SyncError(f"{source}: the encryption header is damaged; nothing "
                            "imported.") from None
        aead = AESGCM(_key(shared, ephemeral, own.public.raw[32:]))
        number = 0
        while True:
            length = sealed.read(4)
            if len(length) < 4:
                raise SyncError(f"{source}: the file ends after chunk {number} without its "
                                "last chunk (cut short); nothing imported.")
            chunk = sealed.read(int.from_bytes(length, "big"))
            if len(chunk) != int.from_bytes(length, "big"):
                raise SyncError(f"{source}: chunk {number} is shorter than its length says "
                                "(cut short or altered); nothing imported.")
            try:
                out.write(aead.decrypt(_nonce(prefix, number, False), chunk, header))
            except InvalidTag:
                try:
                    out.write(aead.decrypt(_nonce(prefix, number, True), chunk, header))
                except InvalidTag:
                    raise SyncError(f"{source}: chunk {number} fails authentication: the "
                                    "file was altered or damaged; nothing imported.") from None
                if sealed.read(1):
                    raise SyncError(f"{source}: data follows the last chunk (appended to); "
                                    "nothing imported.")
                return
            number += 1


def sealer(alias: str, recipient: str | None) -> Callable[[Path], Path] | None:
    """What export does to the finished archive of ``alias``: encrypt it to
    ``recipient`` (a device enrolled on ``alias``) in a new file beside it, whose
    path it returns; or None, when files travel plain.

    Raises ``SyncError`` before anything is written when encryption is on
    (``SYNCROUTER_ENCRYPT_FILES``) and no known recipient is named.
    """
    if recipient is None:
        if conf.get("SYNCROUTER_ENCRYPT_FILES"):
            raise SyncError("Batch files are encrypted to their recipient: name the node the "
                            "file is for (export --to NAME, a device enrolled with 'keys "
                            "trust'), or set SYNCROUTER_ENCRYPT_FILES = False.")
        return None
    device = devices.registry(alias).by_name.get(recipient)
    if device is None:
        raise SyncError(f"Cannot encrypt to {recipient!r}: it is not enrolled on alias "
                        f"{alias!r} ('manage.py syncrouter keys trust {recipient} PUBKEY').")

    def seal(path: Path) -> Path:
        handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        os.close(handle)
        try:
            encrypt(path, Path(temp), recipient, device.keys)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        return Path(temp)

    return seal


@contextlib.contextmanager
def readable(path, using: str) -> Iterator[Path]:
    """The plain archive of batch file ``path``: itself, or a private temporary copy
    decrypted with the keys of the node behind ``using`` (removed afterwards)."""
    try:
        encrypted = is_encrypted(path)
    except OSError as exc:
        raise SyncError(f"{path}: cannot read the file ({exc}).") from None
    if not encrypted:
        if conf.get("SYNCROUTER_ENCRYPT_FILES") and conf.get("SYNCROUTER_VERIFY"):
            raise SyncError(f"{path}: not encrypted, and this node accepts only encrypted "
                            "batch files (SYNCROUTER_ENCRYPT_FILES); nothing imported.")
        yield Path(path)
        return
    own = keys.require(using)
    handle, temp = tempfile.mkstemp(prefix="syncrouter-import-", suffix=".zip")
    os.close(handle)
    try:
        decrypt(path, Path(temp), own, conf.node_for_alias(using).name)
        yield Path(temp)
    finally:
        Path(temp).unlink(missing_ok=True)


def manifest_signature(alias: str, manifest: bytes) -> bytes | None:
    """``manifest.sig`` for the node behind ``alias``, or None when it does not sign."""
    if not conf.get("SYNCROUTER_SIGN"):
        return None
    own = keys.require(alias)
    signature = own.signing.sign(hashlib.sha256(manifest).digest())
    return f"v1.{own.public.key_id}.{keys.b64(signature)}".encode("ascii")


def check_manifest(archive: Path, path, using: str, manifest: dict) -> None:
    """Refuse a file whose manifest the exporting node did not sign (when verifying)."""
    if not conf.get("SYNCROUTER_VERIFY"):
        return
    node = manifest.get("node")
    with zipfile.ZipFile(archive) as opened:
        names = set(opened.namelist())
        if MANIFEST_SIGNATURE not in names:
            if conf.get("SYNCROUTER_ACCEPT_UNSIGNED"):
                return
            raise SyncError(f"{path}: the manifest is not signed by its exporting node "
                            f"{node!r}; nothing imported.")
        body, signature = opened.read("manifest.json"), opened.read(MANIFEST_SIGNATURE)
    device = devices.registry(using).by_name.get(node)
    if device is None:
        raise SyncError(f"{path}: exported by {node!r}, which is not enrolled on this node; "
                        "nothing imported.")
    parts = signature.decode("ascii", "replace").split(".")
    try:
        if len(parts) != 3 or parts[0] != "v1" or parts[1] != device.keys.key_id:
            raise InvalidSignature
        device.keys.signing.verify(keys.unb64(parts[2]),
                                   hashlib.sha256(body).digest())
    except (InvalidSignature, ValueError):
        raise SyncError(f"{path}: the manifest's signature does not hold for {node!r}: the "
                        "manifest or its signature was altered; nothing imported.") from None
