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
travel alone in the next file).

Import is all or nothing per file: the file is checked while it is read inside
one database transaction on the target, and any fault (a truncated archive, a
bad CRC, a SHA-256 or manifest mismatch, a malformed row) rolls the whole file
back with a ``SyncError`` that names the file and the fault. Files may be
imported in any order, again, or overlapping: a transaction already on the
target (same id) is counted and skipped, and a (producer, sequence) held under
another id is refused. Each batch is written exactly as a direct copy writes
one (``copy._copy_batch``), so the two transports cannot drift apart.
"""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import uuid
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Iterable

import orjson
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from .. import conf, trust
from ..trust import crypto_files
from ..exceptions import SyncError
from .copy import IDENTITY_FIELDS, CopyResult, _copy_batch, keyset_pages

logger = logging.getLogger("syncrouter.transfer")

FORMAT = "syncrouter-transactions"
VERSION = 1
MANIFEST = "manifest.json"
CONTENT = "transactions.jsonl"


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


def pending(alias: str, flag: str = "is_consumed_server") -> list:
    """Querysets of what the node on ``alias`` still has to send on.

    Its own captured changes not yet marked ``flag``, and on a middleman or
    community node also the incoming transactions it has not forwarded.
    """
    from ..models import IncomingTransaction, OutgoingTransaction

    querysets = [OutgoingTransaction.objects.using(alias).filter(**{flag: False})]
    if conf.node_for_alias(alias).role in ("middleman", "community"):
        querysets.append(IncomingTransaction.objects.using(alias).filter(**{flag: False}))
    return querysets


def _line(row) -> bytes:
    record = {name: getattr(row, name) for name in IDENTITY_FIELDS}
    record["hops"] = orjson.loads(row.hops or "[]")
    return orjson.dumps(record) + b"\n"


def export_transactions(
    path: str | os.PathLike, querysets: Iterable, *, batch_size: int | None = None,
    mark: bool = False, progress: Callable[[int], None] | None = None,
    recipient: str | None = None,
) -> Manifest:
    """Write the transactions of ``querysets`` (all on one alias) to the batch file ``path``.

    The file is written under a temporary name and renamed when complete, so a
    crash never leaves a half file under the real name. It is encrypted to the
    node ``recipient`` (see ``trust.crypto_files``). Returns its manifest.
    """
    querysets = list(querysets)
    alias = querysets[0].db
    seal = crypto_files.sealer(alias, recipient)
    node = conf.node_for_alias(alias)
    manifest = Manifest(batch_id=str(uuid.uuid4()), node=node.name, role=node.role,
                        created=timezone.now().isoformat())
    path = Path(path)
    digest = hashlib.sha256()
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or None)
    os.close(handle)
    plain = temp  # the archive; ``temp`` becomes its encrypted copy when sealed
    try:
        with zipfile.ZipFile(temp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            with archive.open(CONTENT, "w", force_zip64=True) as content:
                for queryset in querysets:
                    for rows in keyset_pages(queryset, batch_size or conf.batch_size()):
                        data = b"".join(_line(row) for row in rows)
                        digest.update(data)
                        content.write(data)
                        for row in rows:
                            manifest.add(row.producer, row.sequence)
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
            _mark_exported(path, querysets, manifest, batch_size or conf.batch_size(),
                           plain if seal else path)
    finally:
        if seal:
            Path(plain).unlink(missing_ok=True)
    return manifest


def _mark_exported(path: Path, querysets: list, manifest: Manifest, size: int,
                   archive_path) -> None:
    """Mark exactly the rows in the file, read back from its plain archive in batches
    of ids, all or none."""
    now = timezone.now()
    alias = querysets[0].db
    models = {queryset.model for queryset in querysets}
    with transaction.atomic(using=alias), zipfile.ZipFile(archive_path) as archive, \
            archive.open(CONTENT) as content:
        for _, chunk in _numbered_chunks(content, size):
            ids = [orjson.loads(line)["id"] for line in chunk]
            for model in models:
                model.objects.using(alias).filter(id__in=ids).update(
                    is_consumed_server=True, consumed_datetime=now,
                    consumer=f"file:{path.name}", batch_id=manifest.batch_id)


def _numbered_chunks(lines, size: int):
    """(number of the chunk's first line, lines) for chunks of up to ``size`` lines."""
    chunk, first = [], 1
    for line in lines:
        chunk.append(line)
        if len(chunk) == size:
            yield first, chunk
            first, chunk = first + size, []
    if chunk:
        yield first, chunk


def read_manifest(path: str | os.PathLike, archive_path=None) -> dict:
    """The manifest of batch file ``path``, checked for format and version; read from
    ``archive_path`` when that holds its decrypted archive."""
    try:
        with zipfile.ZipFile(archive_path or path) as archive:
            manifest = orjson.loads(archive.read(MANIFEST))
    except (OSError, zipfile.BadZipFile, KeyError, orjson.JSONDecodeError) as exc:
        raise SyncError(f"{path}: not a complete syncrouter batch file ({exc}).") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise SyncError(f"{path}: {MANIFEST} does not describe a {FORMAT} file.")
    if manifest.get("version") != VERSION:
        raise SyncError(f"{path}: format version {manifest.get('version')!r} is not supported "
                        f"(this syncrouter reads version {VERSION}).")
    return manifest


def _incoming(line: bytes, where: str) -> SimpleNamespace:
    """One line of the file as a row for ``_copy_batch`` (which builds the model
    instance itself), or a ``SyncError`` naming the line."""
    try:
        record = orjson.loads(line)
        record.setdefault("signature", "")  # files written before signatures existed
        values = {name: record[name] for name in IDENTITY_FIELDS}
        values["id"] = uuid.UUID(values["id"])
        values["db_transaction_id"] = uuid.UUID(values["db_transaction_id"])
        values["timestamp"] = parse_datetime(values["timestamp"])
        if values["timestamp"] is None:
            raise ValueError(f"timestamp {record['timestamp']!r} is not a date and time")
        if not isinstance(values["sequence"], int) or not isinstance(record["hops"], list):
            raise TypeError("sequence must be an integer and hops a list")
    except (KeyError, ValueError, TypeError, AttributeError) as exc:  # JSONDecodeError too
        raise SyncError(f"{where}: malformed transaction ({type(exc).__name__}: {exc}).") from None
    return SimpleNamespace(**values, hops=orjson.dumps(record["hops"]).decode())


def _insert(rows: list, target: str, hop: str) -> CopyResult:
    """Write the rows the target lacks, the way a direct copy writes a batch (COPY on
    PostgreSQL); a line repeated inside the file counts as already present."""
    unique = list({row.id: row for row in rows}.values())
    result = _copy_batch(unique, target, hop)
    return CopyResult(result.copied, result.already_present + len(rows) - len(unique))


def import_transactions(
    path: str | os.PathLike, using: str, *, batch_size: int | None = None,
    progress: Callable[[CopyResult], None] | None = None,
) -> CopyResult:
    """Load batch file ``path`` into ``IncomingTransaction`` on alias ``using``, all or nothing.

    Returns ``CopyResult(copied, already_present)``. Memory stays bounded by
    ``batch_size``: the file is streamed and checked as it is inserted, and a
    fault found at any point rolls the whole file back.
    """
    with crypto_files.readable(path, using) as archive_path:
        return _import(path, archive_path, using, batch_size, progress)


def _import(path, archive_path: Path, using: str, batch_size: int | None,
            progress: Callable[[CopyResult], None] | None) -> CopyResult:
    manifest = read_manifest(path, archive_path)
    crypto_files.check_manifest(archive_path, path, using, manifest)
    size = batch_size or conf.batch_size()
    hop = conf.node_for_alias(using).name
    found = Manifest(batch_id="", node="", role="", created="")
    digest = hashlib.sha256()
    copied = present = 0
    try:
        with transaction.atomic(using=using), zipfile.ZipFile(archive_path) as archive, \
                archive.open(CONTENT) as content:
            for first, lines in _numbered_chunks(content, size):
                rows = []
                for number, line in enumerate(lines, first):
                    digest.update(line)
                    row = _incoming(line, f"{path}: {CONTENT} line {number}")
                    found.add(row.producer, row.sequence)
                    rows.append(row)
                try:
                    result = _insert(trust.screen(rows, using, f"file {path}"), using, hop)
                except (SyncError, IntegrityError) as exc:
                    raise SyncError(f"{path}: {exc} Nothing from this file was imported.") \
                        from None
                copied, present = copied + result.copied, present + result.already_present
                if progress:
                    progress(CopyResult(copied, present))
            _compare(path, manifest, found, digest.hexdigest())
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise SyncError(f"{path}: damaged or truncated batch file ({exc}); nothing imported.") \
            from None
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
