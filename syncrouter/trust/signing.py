"""Signatures over transactions: canonical bytes, signing groups, verification.

**What is signed.** ``canonical(values)`` encodes, in this order, the fields that
decide what a transaction does: ``id``, ``producer``, ``hostname``, ``sequence``,
``db_transaction_id``, ``hlc``, ``tx_name``, ``tx_pk``, ``action`` and the payload
``tx`` exactly as captured (in plain: at-rest encryption, ``atrest``, comes after
signing and is undone before verifying, so signatures outlive key rotation). Not
signed: ``timestamp`` (informative only, and its text differs between backends), ``hops`` (each hop appends itself) and the
bookkeeping columns (consumed marks, errors). Encoding version 1: the ASCII tag
``syncrouter-tx-v1``, then each field as a 4-byte big-endian length and its
bytes; UUIDs as their 16 bytes, integers in decimal ASCII, text in UTF-8.

**How rows are signed.** One Ed25519 signature covers up to ``MAX_GROUP`` rows
that are signed together (one ``record_many`` at capture: a ``save()``, or every
row of a bulk write): the signed message is the tag ``syncrouter-sig-v1``, the
producer, the row count and the root of a Merkle tree over the rows' canonical
bytes (the Merkle Tree Hash of RFC 6962 section 2.1, SHA-256 with 0x00/0x01
prefixes for leaves and nodes). Each row keeps the signature and its own audit
path, so every row can still be checked alone, anywhere, after any split into
batches or files; a verifier that sees many rows of one group checks the
Ed25519 signature once (``verify`` caches good signatures) and each row with a
few SHA-256 hashes. Measured, verification was the cost that mattered: Ed25519
verification takes about three times as long as signing.

The ``signature`` column holds ``v1.<key id>.<count>.<index>.<signature>.<path>``
(signature and path in URL-safe base64; the key id is the first 16 hex digits
of the signer's fingerprint, so a refusal can name whose key signed a row).
"""
from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .keys import NodeKeys, PublicKeys, b64, unb64

TAG = b"syncrouter-tx-v1"
SIGNATURE_TAG = b"syncrouter-sig-v1"
VERSION = "v1"
#: Rows under one signature: a bound on each row's audit path (8 hashes).
MAX_GROUP = 256
#: The fields ``canonical`` encodes, in order.
SIGNED_FIELDS = ("id", "producer", "hostname", "sequence", "db_transaction_id", "hlc",
                 "tx_name", "tx_pk", "action", "tx")
_UUIDS = ("id", "db_transaction_id")
_INTEGERS = ("sequence", "hlc")


class BadSignature(ValueError):
    """A row's signature does not hold; the message names what failed."""


class WrongKey(BadSignature):
    """The signature names another key than the producer's; ``key_id`` is the one it names."""

    def __init__(self, key_id: str, expected: str):
        super().__init__(f"signed with key {key_id}, not with the producer's key {expected}")
        self.key_id = key_id


def _canonical_b64(raw: bytes, text: str) -> bool:
    """Whether ``text`` is the one spelling of ``raw`` that ``b64`` writes.

    Decoding ignores the unused low bits of a final partial group, so other
    spellings decode to the same bytes; only that group needs checking.
    """
    partial = len(raw) % 3
    return not partial or b64(raw[-partial:]) == text[-(partial + 1):]


def uuid_bytes(value) -> bytes:
    if isinstance(value, uuid.UUID):
        return value.bytes
    return uuid.UUID(str(value)).bytes


def canonical(values: Mapping) -> bytes:
    """The version-1 canonical bytes of a transaction, from its field values.

    ``values`` maps each name in ``SIGNED_FIELDS`` to the value as stored or
    read back (UUIDs as ``uuid.UUID`` or text, integers as ``int``).
    """
    parts = [TAG]
    for name in SIGNED_FIELDS:
        value = values[name]
        if name in _UUIDS:
            data = uuid_bytes(value)
        elif name in _INTEGERS:
            data = str(int(value)).encode("ascii")
        else:
            data = str(value).encode("utf-8")
        parts.append(len(data).to_bytes(4, "big"))
        parts.append(data)
    return b"".join(parts)


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(count: int) -> int:
    """The largest power of two smaller than ``count`` (RFC 6962's k)."""
    return 1 << ((count - 1).bit_length() - 1)


def _root_and_paths(leaves: Sequence[bytes]) -> tuple[bytes, list[list[bytes]]]:
    """Merkle Tree Hash of ``leaves`` and each leaf's audit path, lowest sibling first
    (RFC 6962, 2.1.1)."""
    paths: list[list[bytes]] = [[] for _ in leaves]

    def tree(low: int, high: int) -> bytes:
        if high - low == 1:
            return leaves[low]
        middle = low + _split(high - low)
        left, right = tree(low, middle), tree(middle, high)
        for index in range(low, middle):
            paths[index].append(right)
        for index in range(middle, high):
            paths[index].append(left)
        return _node(left, right)

    return tree(0, len(leaves)), paths


def root_from_path(leaf: bytes, index: int, count: int, path: Sequence[bytes]) -> bytes:
    """The tree root that ``leaf`` at ``index`` of ``count`` proves with ``path``
    (the inclusion-proof check of RFC 9162, 2.1.3.2); ``BadSignature`` if the
    path has the wrong length for that position."""
    if not 0 <= index < count:
        raise BadSignature(f"row index {index} is outside its signing group of {count}")
    fn, sn, node = index, count - 1, leaf
    for sibling in path:
        if sn == 0:
            raise BadSignature("the audit path is longer than its group needs")
        if fn & 1 or fn == sn:
            node = _node(sibling, node)
            while not fn & 1 and fn:
                fn, sn = fn >> 1, sn >> 1
        else:
            node = _node(node, sibling)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise BadSignature("the audit path is shorter than its group needs")
    return node


def signed_message(producer: str, count: int, root: bytes) -> bytes:
    name = producer.encode("utf-8")
    return b"".join((SIGNATURE_TAG, len(name).to_bytes(4, "big"), name,
                     count.to_bytes(8, "big"), root))


def sign_rows(keys: NodeKeys, producer: str, rows: Sequence[Mapping]) -> list[str]:
    """Signatures for ``rows`` (field values by name, one producer), in order.

    Pure: it reads only the values given. The caller stores each string in the
    row's ``signature`` column; the seal step that assigns the final sequence and
    clock is the place to call it, or, where capture assigns them, ``record_many``.
    """
    signatures = []
    key_id = keys.public.key_id
    for start in range(0, len(rows), MAX_GROUP):
        group = rows[start:start + MAX_GROUP]
        root, paths = _root_and_paths([leaf_hash(canonical(row)) for row in group])
        signature = b64(keys.signing.sign(signed_message(producer, len(group), root)))
        signatures += [f"{VERSION}.{key_id}.{len(group)}.{index}.{signature}."
                       f"{b64(b''.join(path))}" for index, path in enumerate(paths)]
    return signatures


def parse(signature: str) -> tuple[str, int, int, bytes, list[bytes]]:
    """(key id, count, index, signature, path) of a ``signature`` column value."""
    parts = signature.split(".")
    if len(parts) != 6 or parts[0] != VERSION:
        raise BadSignature(f"the signature is not a syncrouter {VERSION} signature")
    try:
        count, index = int(parts[2]), int(parts[3])
        raw, path = unb64(parts[4]), unb64(parts[5])
    except ValueError:
        raise BadSignature("the signature is damaged (not base64 or numbers)") from None
    if len(raw) != 64 or len(path) % 32 or not 0 < count <= MAX_GROUP:
        raise BadSignature("the signature is damaged (wrong sizes)")
    if not (_canonical_b64(raw, parts[4]) and _canonical_b64(path, parts[5])
            and parts[2:4] == [str(count), str(index)]):
        # Base64 and integers have other spellings of the same bytes: only one is ours.
        raise BadSignature("the signature is damaged (not in its canonical spelling)")
    return parts[1], count, index, raw, [path[i:i + 32] for i in range(0, len(path), 32)]


@lru_cache(maxsize=8192)
def _verified(public: bytes, signature: bytes, message: bytes) -> bool:
    """Ed25519 verification, remembered: the rows of one group share one check."""
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except InvalidSignature:
        return False
    return True


def verify(row: Mapping, public: PublicKeys) -> None:
    """Check ``row``'s ``signature`` against the producer's public keys.

    Raises ``BadSignature`` naming what failed; returns None if it holds.
    """
    key_id, count, index, raw, path = parse(row["signature"])
    if key_id != public.key_id:
        raise WrongKey(key_id, public.key_id)
    root = root_from_path(leaf_hash(canonical(row)), index, count, path)
    if not _verified(public.raw[:32], raw, signed_message(row["producer"], count, root)):
        raise BadSignature("the signature does not match the transaction: a signed field "
                           "(id, producer, sequence, model, action, payload, clock, "
                           "db_transaction_id, hostname or tx_pk) or the signature itself "
                           "was changed after signing")


def values_of(row, names: Iterable[str] = SIGNED_FIELDS + ("signature",)) -> dict:
    """A row object's signed values (and signature) by name, for ``verify``."""
    return {name: getattr(row, name) for name in names}
