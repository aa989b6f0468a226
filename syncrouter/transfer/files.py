"""File transport: move transactions where no network reaches (a USB stick, an e-mail).

A batch file is a zip archive of two members:

* ``transactions.jsonl``: one JSON object per transaction (its identity fields
  and ``hops``), in (producer, sequence) order;
* ``manifest.json``: format and version, the exporting node, the batch id, per
  producer the first and last sequence and the count, the total count, and the
  SHA-256 of ``transactions.jsonl``.

Zip rather than gzip so the manifest can be read (and a file judged) without
decompressing the data, and so any office machine can open it.

Export marks nothing by default. A file can be lost between the community
server and the central server, and nothing comes back to say it arrived; rows
left pending simply travel again in the next file, and import is idempotent, so
overlapping files cost a little space and lose nothing. ``mark=True`` (the
``--mark`` option) is for sites that keep the files themselves as the record:
it marks the exported rows ``is_consumed_server`` only after the file is
complete on disk, all in one database transaction, so a crash while marking
leaves no client database transaction half marked (its other half would
travel alone in the next file). A transaction no importer would take (a value
too long for the inbox, a line over ``SYNCROUTER_MAX_TRANSACTION_BYTES``) is
left out with the rest of its producer database transaction, recorded in the
``Refusal`` ledger, and reported by ``ExportRefused`` once the file holding
everything else is written: one bad row never makes every later file unreadable.

Import is all or nothing per file: the file is checked while it is read inside
one database transaction on the target, and any fault (a truncated archive, a
bad CRC, a SHA-256 or manifest mismatch, a malformed row) rolls the whole file
back with a ``SyncError`` that names the file and the fault. Files may be
imported in any order, again, or overlapping: a transaction already on the
target (same id) is counted and skipped, and a (producer, sequence) held under
another id is refused. Each batch is written exactly as a direct copy writes
one (``copy.write_batch``), so the two transports cannot drift apart.

A file is untrusted input, and it is judged within fixed bounds of memory
before and while it is read (``read_manifest``, ``_lines``, ``_incoming``):

* the archive's end record is read first: at most ``MAX_DIRECTORY_ENTRIES``
  members in ``MAX_DIRECTORY_BYTES`` of directory, before ``zipfile`` reads it;
* the two members by name, stored or deflated, unencrypted, the manifest
  declaring at most ``MAX_MANIFEST_BYTES``, and no member declaring more than
  ``MAX_RATIO`` times its compressed size once past ``RATIO_FROM`` bytes (a zip
  bomb); ``zipfile`` never inflates past a member's declared size;
* ``transactions.jsonl`` is inflated ``READ_SIZE`` bytes at a time and cut
  into lines of at most ``SYNCROUTER_MAX_TRANSACTION_BYTES``, gathered into
  batches of at most ``batch_size`` lines and ``BATCH_BYTES`` bytes;
* every value is checked for type, range and what the inbox can hold, and
  every line against the manifest as it is read (producer listed, sequence in
  range, count not exceeded), so what the reader keeps per file is bounded by
  the manifest. Each fault is a ``SyncError`` naming the file and the line,
  never a database error.
"""
from __future__ import annotations

import datetime
import hashlib
import logging
import os
import re
import struct
import tempfile
import uuid
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import orjson
from django.db import InterfaceError, OperationalError, connections, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from .. import conf, trust
from ..exceptions import SyncError
from ..models import IncomingTransaction, OutgoingTransaction
from ..trust import atrest, crypto_files
from .copy import (
    IDENTITY_FIELDS,
    Batch,
    CopyInterrupted,
    CopyResult,
    keyset_pages,
    value_problem,
    write_batch,
)
from .refusals import Ledger, Refused, describe
from .rows import mark_sent

logger = logging.getLogger("syncrouter.transfer")

FORMAT = "syncrouter-transactions"
VERSION = 1
MANIFEST = "manifest.json"
CONTENT = "transactions.jsonl"

#: What the end record may declare before ``zipfile`` reads the directory; past this the
#: file is refused unread, below it ``_check_members`` names what is wrong.
MAX_DIRECTORY_ENTRIES = 16
MAX_DIRECTORY_BYTES = 64 * 2**10
#: A manifest lists each producer in ~80 bytes: this is ~100,000 producers.
MAX_MANIFEST_BYTES = 8 * 2**20
#: Declared size over compressed size; exports measure 5 to 15.
MAX_RATIO = 100
#: Members smaller than this are not judged by their ratio (a tiny file compresses well).
RATIO_FROM = 2**20
#: Bytes inflated per read.
READ_SIZE = 2**16
#: A batch of lines ends past this many bytes, whatever ``batch_size`` says.
BATCH_BYTES = 8 * 2**20
#: Ledger target of the rows an export leaves out.
FILE_TARGET = "file"

_END = struct.Struct("<4s4H2LH")  # end of central directory record
_END64_LOCATOR = struct.Struct("<4sLQL")
_END64 = struct.Struct("<4sQ2H2L4Q")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_MAX_INT64 = 2**63 - 1


@dataclass
class Manifest:
    """What a batch file says it holds; ``producers`` maps name -> [first, last, count]."""

    batch_id: str
    node: str
    role: str
    created: str
    count: int = 0
    sha256: str = ""
    producers: dict[str, list[int]] = field(default_factory=dict)
    format: str = FORMAT
    version: int = VERSION

    def add(self, producer: str, sequence: int) -> None:
        span = self.producers.setdefault(producer, [sequence, sequence, 0])
        span[0], span[1], span[2] = min(span[0], sequence), max(span[1], sequence), span[2] + 1
        self.count += 1

    def as_dict(self) -> dict:
        return {"format": self.format, "version": self.version, "batch_id": self.batch_id,
                "node": self.node, "role": self.role, "created": self.created,
                "count": self.count, "sha256": self.sha256, "producers": self.producers}


class ExportRefused(SyncError):
    """The file was written without some transactions no importer would take.

    ``manifest`` describes the file; ``refused`` the transactions left out (they
    stay pending, are recorded in the ``Refusal`` ledger and are tried again by
    the next export).
    """

    def __init__(self, message: str, manifest: Manifest, refused: list[Refused]):
        super().__init__(message)
        self.manifest = manifest
        self.refused = refused


def pending(alias: str, flag: str = "is_consumed_server") -> list:
    """Querysets of what the node on ``alias`` still has to send on.

    Its own captured changes not yet marked ``flag``, and on a middleman or
    community node also the incoming transactions it has not forwarded.
    """
    querysets = [OutgoingTransaction.objects.using(alias).filter(**{flag: False})]
    if conf.node_for_alias(alias).role in ("middleman", "community"):
        querysets.append(IncomingTransaction.objects.using(alias).filter(**{flag: False}))
    return querysets


def _line(row) -> bytes:
    """The row as a line of the file, its payload in plain (the file is encrypted as a
    whole); ``atrest.Unreadable`` if the payload cannot be decrypted here."""
    record = {name: getattr(row, name) for name in IDENTITY_FIELDS}
    record["tx"] = atrest.reveal(row.tx, row.id)
    record["hops"] = orjson.loads(row.hops or "[]")
    return orjson.dumps(record) + b"\n"


def _lines_of(rows: list) -> tuple[dict, dict]:
    """(row id -> line, row id -> why the row cannot be written) for a page of rows."""
    lines, unreadable = {}, {}
    for row in rows:
        try:
            lines[row.id] = _line(row)
        except atrest.Unreadable as exc:
            unreadable[row.id] = str(exc)
    return lines, unreadable


def export_transactions(
    path: str | os.PathLike, querysets: Iterable, *, batch_size: int | None = None,
    mark: bool = False, progress: Callable[[int], None] | None = None,
    recipient: str | None = None,
) -> Manifest:
    """Write the transactions of ``querysets`` (all on one alias) to the batch file ``path``.

    The file is written under a temporary name and renamed when complete, so a
    crash never leaves a half file under the real name. It is encrypted to the
    node ``recipient`` (see ``trust.crypto_files``). Returns its manifest;
    raises ``ExportRefused`` (after writing the file) if some transactions were
    left out.
    """
    querysets = list(querysets)
    alias = querysets[0].db
    seal = crypto_files.sealer(alias, recipient)
    node = conf.node_for_alias(alias)
    manifest = Manifest(batch_id=str(uuid.uuid4()), node=node.name, role=node.role,
                        created=timezone.now().isoformat())
    size = batch_size or conf.batch_size()
    limit = conf.max_transaction_bytes()
    ledger = Ledger(alias, FILE_TARGET)
    through: list = []  # ids an earlier export refused that are no cause now
    refused: dict[int, Refused] = {}
    path = Path(path)
    digest = hashlib.sha256()
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or None)
    os.close(handle)
    plain = temp  # the archive; ``temp`` becomes its encrypted copy when sealed
    try:
        with zipfile.ZipFile(temp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            with archive.open(CONTENT, "w", force_zip64=True) as content:
                for queryset in querysets:
                    for rows in keyset_pages(queryset, size, whole_groups=True):
                        batch = Batch(rows, {})
                        lines, unreadable = _lines_of(rows)
                        batch.screen(lambda row: unreadable.get(row.id) or value_problem(
                            row, None) or _too_long(len(lines[row.id]), limit))
                        sent = batch.sendable()
                        data = b"".join(lines[row.id] for row in sent)
                        digest.update(data)
                        content.write(data)
                        for row in sent:
                            manifest.add(row.producer, row.sequence)
                        touched = batch.done()
                        causes = {cause.id for cause in touched}
                        through += [row.id for row in rows if row.id in ledger.outstanding
                                    and row.id not in causes]
                        refused.update((id(cause), cause) for cause in touched)
                        if progress:
                            progress(manifest.count)
            manifest.sha256 = digest.hexdigest()
            body = orjson.dumps(manifest.as_dict(), option=orjson.OPT_INDENT_2)
            archive.writestr(MANIFEST, body)
            signature = crypto_files.manifest_signature(alias, body)
            if signature:
                archive.writestr(crypto_files.MANIFEST_SIGNATURE, signature)
        if seal:
            temp = str(seal(Path(plain)))
        with open(temp, "rb") as written:
            os.fsync(written.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        Path(plain).unlink(missing_ok=True)
        raise
    logger.info("Exported %d transactions from %s to %s.", manifest.count, alias, path)
    try:
        if mark:
            _mark_exported(path, querysets, manifest, size, plain if seal else path)
    finally:
        if seal:
            Path(plain).unlink(missing_ok=True)
    causes = sorted(refused.values(), key=lambda cause: (cause.producer, cause.sequence))
    ledger.settle(through, causes)
    if causes:
        held = sum(cause.held_back for cause in causes)
        message = (f"{path}: written with {manifest.count} transactions; {len(causes)} were "
                   f"left out, with {held} more of their database transactions. They stay "
                   "pending and the next export tries them again:\n" + describe(causes))
        logger.warning("%s", message)
        raise ExportRefused(message, manifest, causes)
    return manifest


def _too_long(length: int, limit: int) -> str | None:
    if length <= limit:
        return None
    return (f"its line in a batch file is {length:,} bytes; files carry at most {limit:,} "
            "(SYNCROUTER_MAX_TRANSACTION_BYTES)")


def _mark_exported(path: Path, querysets: list, manifest: Manifest, size: int,
                   archive_path) -> None:
    """Mark exactly the rows in the file, read back from its plain archive in batches
    of ids, all or none."""
    now = timezone.now()
    alias = querysets[0].db
    models = {queryset.model for queryset in querysets}
    with transaction.atomic(using=alias), zipfile.ZipFile(archive_path) as archive, \
            archive.open(CONTENT) as content:
        for chunk in _batches(_lines(content, conf.max_transaction_bytes(), str(path)), size):
            ids = [orjson.loads(line)["id"] for _, line in chunk]
            for model in models:
                mark_sent(model, alias, ids, is_consumed_server=True, consumed_datetime=now,
                          consumer=f"file:{path.name}", batch_id=manifest.batch_id)


def _lines(content, limit: int, where: str) -> Iterator[tuple[int, bytearray]]:
    """(number, line) of a member, inflated ``READ_SIZE`` bytes at a time.

    A line longer than ``limit`` is refused as soon as that many bytes are held,
    so one huge line costs ``limit`` bytes of memory, not its length.
    """
    pending = bytearray()
    number = scanned = 0
    while block := content.read(READ_SIZE):
        pending += block
        start = 0
        while (end := pending.find(b"\n", max(start, scanned))) >= 0:
            if end + 1 - start > limit:
                break
            number += 1
            yield number, pending[start:end + 1]
            start = end + 1
        del pending[:start]
        scanned = len(pending)
        if len(pending) > limit:
            raise SyncError(f"{where}: {CONTENT} line {number + 1} is longer than {limit:,} "
                            "bytes (SYNCROUTER_MAX_TRANSACTION_BYTES); nothing imported.")
    if pending:
        yield number + 1, pending


def _batches(lines: Iterator[tuple[int, bytes]], size: int) -> Iterator[list]:
    """Lists of up to ``size`` numbered lines and about ``BATCH_BYTES`` bytes."""
    chunk, held = [], 0
    for item in lines:
        chunk.append(item)
        held += len(item[1])
        if len(chunk) == size or held >= BATCH_BYTES:
            yield chunk
            chunk, held = [], 0
    if chunk:
        yield chunk


def _refuse(path, reason: str) -> SyncError:
    return SyncError(f"{path}: {reason}; nothing imported.")


def _directory_size(path) -> tuple[int, int]:
    """(entries, central directory bytes) as the archive's end record declares them.

    Read before ``zipfile`` parses the directory, which it holds in memory
    whole: a forged end record may declare millions of entries.
    """
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - _END.size - 0xFFFF))
            tail = handle.read()
            at = tail.rfind(b"PK\x05\x06")
            if at < 0 or len(tail) - at < _END.size:
                raise _refuse(path, "not a complete syncrouter batch file (no zip end record)")
            *_, entries, directory, offset, _ = _END.unpack_from(tail, at)
            if entries != 0xFFFF and 0xFFFFFFFF not in (directory, offset):
                return entries, directory
            locator = tail[max(0, at - _END64_LOCATOR.size):at]
            if len(locator) != _END64_LOCATOR.size or not locator.startswith(b"PK\x06\x07"):
                raise _refuse(path, "damaged zip64 end record")
            handle.seek(_END64_LOCATOR.unpack(locator)[2])
            record = handle.read(_END64.size)
    except OSError as exc:
        raise _refuse(path, f"cannot read the file ({exc})") from None
    if len(record) != _END64.size or not record.startswith(b"PK\x06\x06"):
        raise _refuse(path, "damaged zip64 end record")
    fields = _END64.unpack(record)
    return fields[7], fields[8]


def _check_members(path, archive: zipfile.ZipFile) -> None:
    """The two members (and the manifest's signature, if any), by name, within the size
    and ratio limits; before reading any."""
    members = archive.infolist()
    names = sorted(info.filename for info in members)
    if names not in (sorted((MANIFEST, CONTENT)),
                     sorted((MANIFEST, CONTENT, crypto_files.MANIFEST_SIGNATURE))):
        raise _refuse(path, f"a batch file holds exactly {MANIFEST} and {CONTENT} (and "
                            f"{crypto_files.MANIFEST_SIGNATURE}), this one holds "
                            f"{names[:5]}{' ...' if len(names) > 5 else ''}")
    for info in members:
        if info.flag_bits & 0x1:
            raise _refuse(path, f"{info.filename} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise _refuse(path, f"{info.filename} uses compression method "
                                f"{info.compress_type}; batch files are deflated")
        if info.filename != CONTENT and info.file_size > MAX_MANIFEST_BYTES:
            raise _refuse(path, f"{MANIFEST} declares {info.file_size:,} bytes, more than "
                                f"the {MAX_MANIFEST_BYTES:,} a manifest may have")
        if info.file_size > RATIO_FROM and info.file_size > MAX_RATIO * info.compress_size:
            raise _refuse(path, f"{info.filename} declares {info.file_size:,} bytes from "
                                f"{info.compress_size:,} compressed, a ratio above "
                                f"{MAX_RATIO} (a zip bomb?)")


def open_archive(path) -> zipfile.ZipFile:
    """The batch file ``path`` as an open archive whose shape and sizes were checked."""
    entries, directory = _directory_size(path)
    if entries > MAX_DIRECTORY_ENTRIES or directory > MAX_DIRECTORY_BYTES:
        raise _refuse(path, f"a batch file has 2 members; its end record declares {entries:,} "
                            f"in {directory:,} bytes of directory")
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile, ValueError) as exc:
        raise _refuse(path, f"not a complete syncrouter batch file ({exc})") from None
    try:
        _check_members(path, archive)
    except SyncError:
        archive.close()
        raise
    return archive


def read_manifest(path: str | os.PathLike, archive_path=None) -> dict:
    """The manifest of batch file ``path``, checked for shape, format and version; read
    from ``archive_path`` when that holds its decrypted archive."""
    with open_archive(archive_path or path) as archive:
        try:
            with archive.open(MANIFEST) as member:
                manifest = orjson.loads(member.read(MAX_MANIFEST_BYTES + 1))
        except (OSError, zipfile.BadZipFile, zlib.error, EOFError,
                orjson.JSONDecodeError) as exc:
            raise _refuse(path, f"not a complete syncrouter batch file ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise SyncError(f"{path}: {MANIFEST} does not describe a {FORMAT} file.")
    if manifest.get("version") != VERSION:
        raise SyncError(f"{path}: format version {manifest.get('version')!r} is not supported "
                        f"(this syncrouter reads version {VERSION}).")
    problem = _manifest_problem(manifest)
    if problem:
        raise _refuse(path, f"{MANIFEST}: {problem}")
    return manifest


def _is_int(value, low: int = 0) -> bool:
    return type(value) is int and low <= value <= _MAX_INT64


def _manifest_problem(manifest: dict) -> str | None:
    count, producers = manifest.get("count"), manifest.get("producers")
    if not _is_int(count):
        return f"count {count!r} is not a count"
    if not isinstance(manifest.get("sha256"), str) or not _SHA256.fullmatch(manifest["sha256"]):
        return "sha256 is not a SHA-256 digest"
    if not isinstance(producers, dict):
        return "producers is not an object"
    for name, span in producers.items():
        if not (isinstance(span, list) and len(span) == 3 and all(_is_int(v, 1) for v in span)
                and span[0] <= span[1] and span[2] <= span[1] - span[0] + 1):
            return f"producer {name!r} has the range {span!r}, not [first, last, count]"
    if sum(span[2] for span in producers.values()) != count:
        return f"the producers' counts do not add up to count {count}"
    return None


def _uuid(value) -> uuid.UUID:
    if not isinstance(value, str):
        raise TypeError(f"{value!r} is not a UUID string")
    return uuid.UUID(value)


def _text(value) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{type(value).__name__} instead of a string")
    return value


def _name(value) -> str:
    if not _text(value):
        raise ValueError("empty")
    return value


def _integer(low: int) -> Callable[[object], int]:
    def parse(value) -> int:
        if not _is_int(value, low):
            raise ValueError(f"{value!r} is not an integer from {low} to {_MAX_INT64}")
        return value
    return parse


def _action(value) -> str:
    if value not in ("I", "U", "D"):
        raise ValueError(f"{value!r} is not one of I, U, D")
    return value


def _timestamp(value) -> datetime.datetime:
    if not isinstance(value, str) or len(value) > 64:
        raise TypeError(f"{str(value)[:64]!r} is not an ISO 8601 date and time")
    parsed = parse_datetime(value)
    if parsed is None or parsed.tzinfo is None:
        raise ValueError(f"{value!r} is not a date and time with a UTC offset")
    return parsed.astimezone(datetime.timezone.utc)  # OverflowError past year 9999


def _hops(value) -> str:
    if not isinstance(value, list) or not all(isinstance(hop, str) for hop in value):
        raise TypeError("not a list of node names")
    return orjson.dumps(value).decode()


#: How each field of a line is read; anything else in a line is refused.
_FIELDS: dict[str, Callable] = {
    "id": _uuid, "tx": _text, "tx_name": _name, "tx_pk": _text, "producer": _name,
    "hostname": _text, "sequence": _integer(1), "db_transaction_id": _uuid,
    "hlc": _integer(0), "action": _action, "timestamp": _timestamp, "hops": _hops,
    "signature": _text,
}


def _incoming(line: bytes, where: str, vendor: str) -> SimpleNamespace:
    """One line of the file as a row for ``write_batch``, or a ``SyncError`` naming the line."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise SyncError(f"{where}: not a JSON object ({exc}).") from None
    if not isinstance(record, dict):
        raise SyncError(f"{where}: malformed transaction (a JSON {type(record).__name__}, "
                        "not an object).")
    record.setdefault("signature", "")  # files written before signatures existed
    if record.keys() != _FIELDS.keys():
        missing = sorted(_FIELDS.keys() - record.keys())
        problem = (f"KeyError: {missing[0]!r}" if missing else
                   f"unknown fields {sorted(record.keys() - _FIELDS.keys())[:5]}")
        raise SyncError(f"{where}: malformed transaction ({problem}).")
    values = {}
    for name, read in _FIELDS.items():
        try:
            values[name] = read(record[name])
        except (ValueError, TypeError, OverflowError) as exc:
            raise SyncError(f"{where}: malformed transaction ({name}: {exc}).") from None
    row = SimpleNamespace(**values)
    problem = value_problem(row, vendor)
    if problem:
        raise SyncError(f"{where}: malformed transaction ({problem}).")
    return row


def _expected(manifest: dict, found: Manifest, row, where: str) -> None:
    """Refuse a line the manifest does not account for, as soon as it is read."""
    span = manifest["producers"].get(row.producer)
    if span is None:
        raise SyncError(f"{where}: producer {row.producer!r} is not in the manifest.")
    if not span[0] <= row.sequence <= span[1]:
        raise SyncError(f"{where}: {row.producer}#{row.sequence} is outside the manifest's "
                        f"range {span[0]}-{span[1]} for that producer.")
    if found.count >= manifest["count"]:
        raise SyncError(f"{where}: the manifest counts {manifest['count']} transactions, the "
                        "file holds more.")
    found.add(row.producer, row.sequence)


def _insert(rows: list, numbers: dict, target: str, hop: str, path) -> CopyResult:
    """Write the rows the target lacks, the way a direct copy writes a batch (COPY on
    PostgreSQL); a line repeated inside the file counts as already present. Any row
    the target refuses refuses the file."""
    unique = list({row.id: row for row in rows}.values())
    for row in unique:  # the file carries plain payloads: stored under this node's key
        row.tx = atrest.at_rest(row.tx, row.id)
    batch = write_batch(Batch(unique, {}), target, hop)
    if batch.refused:
        cause = min(batch.refused.values(), key=lambda cause: numbers[cause.id])
        raise SyncError(f"{path}: {CONTENT} line {numbers[cause.id]}: {cause.reason}. "
                        "Nothing from this file was imported.")
    return CopyResult(batch.result.copied,
                      batch.result.already_present + len(rows) - len(unique))


def import_transactions(
    path: str | os.PathLike, using: str, *, batch_size: int | None = None,
    progress: Callable[[CopyResult], None] | None = None,
) -> CopyResult:
    """Load batch file ``path`` into ``IncomingTransaction`` on alias ``using``, all or nothing.

    Returns ``CopyResult(copied, already_present)``. Memory stays bounded by
    ``batch_size`` and the limits above: the file is streamed and checked as it
    is inserted, and a fault found at any point rolls the whole file back. A
    lost connection raises ``CopyInterrupted`` (nothing of the file stays). An
    encrypted file is decrypted first (``trust.crypto_files``), and rows a
    device registry refuses are recorded there, not imported (``trust.screen``).
    """
    with crypto_files.readable(path, using) as archive_path:
        return _import(path, archive_path, using, batch_size, progress)


def _import(path, archive_path: Path, using: str, batch_size: int | None,
            progress: Callable[[CopyResult], None] | None) -> CopyResult:
    manifest = read_manifest(path, archive_path)
    crypto_files.check_manifest(archive_path, path, using, manifest)
    size = batch_size or conf.batch_size()
    hop = conf.node_for_alias(using).name
    vendor = connections[using].vendor
    found = Manifest(batch_id="", node="", role="", created="")
    digest = hashlib.sha256()
    copied = present = 0
    try:
        with transaction.atomic(using=using), open_archive(archive_path) as archive, \
                archive.open(CONTENT) as content:
            lines = _lines(content, conf.max_transaction_bytes(), str(path))
            for chunk in _batches(lines, size):
                rows, numbers = [], {}
                for number, line in chunk:
                    digest.update(line)
                    where = f"{path}: {CONTENT} line {number}"
                    row = _incoming(line, where, vendor)
                    _expected(manifest, found, row, where)
                    numbers.setdefault(row.id, number)
                    rows.append(row)
                result = _insert(trust.screen(rows, using, f"file {path}"), numbers, using,
                                 hop, path)
                copied, present = copied + result.copied, present + result.already_present
                if progress:
                    progress(CopyResult(copied, present))
            _compare(path, manifest, found, digest.hexdigest())
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise _refuse(path, f"damaged or truncated batch file ({exc})") from None
    except (OperationalError, InterfaceError) as exc:
        raise CopyInterrupted(f"Import of {path} into {using!r} interrupted: "
                              f"{type(exc).__name__}: {exc}. Nothing of the file was "
                              "imported; run the import again.", using, CopyResult(0, 0)) \
            from exc
    except OSError as exc:
        raise _refuse(path, f"cannot read the file ({exc})") from None
    logger.info("Imported %s into %s: %d new, %d already present.", path, using, copied, present)
    return CopyResult(copied, present)


def _compare(path, manifest: dict, found: Manifest, sha256: str) -> None:
    if manifest.get("sha256") != sha256:
        raise SyncError(f"{path}: SHA-256 of {CONTENT} is {sha256}, the manifest says "
                        f"{manifest.get('sha256')}; the file was altered or damaged. "
                        "Nothing imported.")
    if manifest.get("count") != found.count:
        raise SyncError(f"{path}: the manifest counts {manifest.get('count')} transactions, "
                        f"the file holds {found.count}. Nothing imported.")
    if manifest.get("producers") != found.producers:
        raise SyncError(f"{path}: per-producer ranges in the manifest "
                        f"({manifest.get('producers')}) do not match the file "
                        f"({found.producers}). Nothing imported.")
