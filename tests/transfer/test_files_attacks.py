"""Batch files as untrusted input (issue 15, item 6).

Files here are malformed but consistent: their SHA-256, counts and ranges agree
with what they hold, as a careless tool or a forger would make them. Each must
be refused with exit code 4 and a ``SyncError`` naming the file and the line,
never a database error, and nothing of it imported; the files after it are
imported all the same. Files built to exhaust memory (a zip bomb, a huge
manifest, one huge line, a directory of 70,000 members) are judged within a
few megabytes, measured in a process of their own.
"""
import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connections
from hypothesis import HealthCheck, given, settings, strategies as st

from syncrouter.exceptions import SyncError
from syncrouter.models import IncomingTransaction
from syncrouter.transfer.files import (
    CONTENT,
    MANIFEST,
    export_transactions,
    import_transactions,
    pending,
)
from tests.support import factories, pg
from tests.support.factories import incompressible

ROOT = Path(__file__).resolve().parents[2]
MiB = 2**20


def inbox(alias):
    return IncomingTransaction.objects.using(alias)


@pytest.fixture(params=["server", "pgserver"])
def target(request):
    """A SQLite and a PostgreSQL server importing what a SQLite laptop exported."""
    if request.param == "pgserver" and not pg.AVAILABLE:
        pytest.skip(pg.REASON)
    factories.load_symptoms("client")
    factories.load_symptoms(request.param)
    return request.param


@pytest.fixture
def good(tmp_path) -> Path:
    factories.load_symptoms("client")
    factories.study("client", 1, 1, 1)  # five transactions
    path = tmp_path / "good.zip"
    export_transactions(path, pending("client"))
    return path


def lines_of(path: Path) -> list[bytes]:
    with zipfile.ZipFile(path) as archive:
        return archive.read(CONTENT).splitlines(keepends=True)


def forge(path: Path, lines: list[bytes]) -> Path:
    """Write ``lines`` as a batch file whose manifest agrees with them: hash, count, and
    the ranges of every line that names a producer and a sequence."""
    producers: dict = {}
    for line in lines:
        try:
            record = json.loads(line)
            name, sequence = record["producer"], record["sequence"]
        except (ValueError, TypeError, KeyError):
            continue
        if isinstance(name, str) and type(sequence) is int:
            span = producers.setdefault(name, [sequence, sequence, 0])
            span[0], span[1], span[2] = min(span[0], sequence), max(span[1], sequence), span[2] + 1
    manifest = {"format": "syncrouter-transactions", "version": 1, "batch_id": "b",
                "node": "forger", "role": "community", "created": "2026-01-01T00:00:00+00:00",
                "count": len(lines), "sha256": hashlib.sha256(b"".join(lines)).hexdigest(),
                "producers": producers}
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(CONTENT, b"".join(lines))
        archive.writestr(MANIFEST, json.dumps(manifest))
    return path


def edited(path: Path, line: int, **values) -> list[bytes]:
    """The file's lines with ``values`` set in line ``line`` (1-based), written the way any
    JSON tool writes them (big integers and NUL characters included)."""
    lines = lines_of(path)
    record = json.loads(lines[line - 1])
    record.update(values)
    lines[line - 1] = json.dumps(record).encode() + b"\n"
    return lines


#: One malformed value of each kind reported to reach the database raw, in line 3.
MALFORMED = {
    "uuid": ({"id": "not-a-uuid"}, "malformed transaction (id: badly formed hexadecimal"),
    "datetime": ({"timestamp": "2026-13-45T25:61:00+00:00"}, "malformed transaction (timestamp: "),
    "datetime-overflow": ({"timestamp": "9999-12-31T23:59:59-14:00"},
                          "malformed transaction (timestamp: "),
    "int-overflow": ({"hlc": 2**63}, "malformed transaction (hlc: 9223372036854775808 is not an "
                                     "integer"),
    "wrong-type": ({"hops": {"a": 1}}, "malformed transaction (hops: not a list of node names"),
    "too-long": ({"hostname": "h" * 201}, "malformed transaction (hostname is 201 characters "
                                          "long; the inbox"),
    "nul": ({"tx_pk": "a\x00b"}, "malformed transaction (tx_pk holds a NUL character"),
    # Only the database knows: the batch is written again a producer transaction at a time.
    "index-entry": ({"tx_pk": incompressible(6000)}, "community-pg refused it "
                                                     "(OperationalError: index row"),
}
#: What a SQLite inbox stores.
SQLITE_TAKES = ("nul", "index-entry")


@pytest.mark.parametrize("kind", list(MALFORMED))
def test_a_malformed_value_is_refused_naming_file_and_line(good, target, kind, tmp_path):
    values, problem = MALFORMED[kind]
    path = forge(tmp_path / f"{kind}.zip", edited(good, 3, **values))
    if kind in SQLITE_TAKES and connections[target].vendor != "postgresql":
        assert import_transactions(path, target).copied == 5
        return
    with pytest.raises(SyncError) as refused:
        import_transactions(path, target, batch_size=2)  # a batch is in before line 3
    assert f"{path}: {CONTENT} line 3: {problem}" in str(refused.value)
    assert not inbox(target).exists()


def run(*args) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("syncrouter", *args, stdout=out, stderr=err)
    except CommandError as exc:
        return exc.returncode, out.getvalue(), err.getvalue() + str(exc)
    return 0, out.getvalue(), err.getvalue()


def test_import_refuses_each_bad_file_and_imports_the_files_after_them(good, target, tmp_path):
    bad = [forge(tmp_path / f"{n}-{kind}.zip", edited(good, 2, **values))
           for n, (kind, (values, _)) in enumerate(MALFORMED.items()) if kind not in SQLITE_TAKES]
    last = tmp_path / "z-good.zip"
    last.write_bytes(good.read_bytes())
    code, out, err = run("import", *map(str, bad), str(last), "--target", target)
    assert code == 4
    for path in bad:
        assert f"{path}: {CONTENT} line 2: malformed transaction (" in err
    assert f"{len(bad)} of {len(bad) + 1} files refused" in err
    assert all(str(path) in err.splitlines()[-1] for path in bad)
    assert f"{last}: 5 imported into {target}, 0 already there." in out
    assert inbox(target).count() == 5


# ---------------------------------------------------------------- generated files

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40)
    | st.sampled_from(["", "\x00", "x" * 3000, "2026-02-30T10:00:00+00:00",
                      "0001-01-01T00:00:00+01:00", "12345678-1234-5678-1234-567812345678",
                      "I", "U", "D", "[]"]),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=5)
FIELDS = ["id", "tx", "tx_name", "tx_pk", "producer", "hostname", "sequence",
          "db_transaction_id", "hlc", "action", "timestamp", "hops"]


@st.composite
def damage(draw, count: int):
    """A list of edits, each setting, removing or adding a field of a line, or replacing
    a whole line with bytes."""
    edits = []
    for _ in range(draw(st.integers(1, 3))):
        line = draw(st.integers(0, count - 1))
        kind = draw(st.sampled_from(["set", "set", "set", "remove", "add", "bytes"]))
        if kind == "bytes":
            edits.append((line, kind, draw(st.binary(max_size=60))))
        elif kind == "add":
            edits.append((line, kind, draw(st.text(min_size=1, max_size=8))))
        else:
            edits.append((line, kind, draw(st.sampled_from(FIELDS)),
                          draw(JSON_VALUES) if kind == "set" else None)[:4])
    return edits


def apply(lines: list[bytes], edits) -> list[bytes]:
    lines = list(lines)
    for line, kind, *rest in edits:
        if kind == "bytes":
            lines[line] = rest[0].replace(b"\n", b" ") + b"\n"
            continue
        try:
            record = json.loads(lines[line])
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        if kind == "set":
            record[rest[0]] = rest[1]
        elif kind == "remove":
            record.pop(rest[0], None)
        else:
            record[rest[0]] = 1
        lines[line] = json.dumps(record).encode() + b"\n"
    return lines


@given(st.data())
@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_generated_damage_is_imported_whole_or_refused_naming_the_file(good, target, tmp_path,
                                                                       data):
    """Any consistent file either imports whole or is refused with a SyncError naming it,
    leaving the inbox as it was; never another exception."""
    lines = lines_of(good)
    path = forge(tmp_path / "fuzzed.zip", apply(lines, data.draw(damage(len(lines)))))
    inbox(target).all().delete()
    try:
        result = import_transactions(path, target, batch_size=2)
    except SyncError as exc:
        assert str(path) in str(exc)
        assert not inbox(target).exists()
    else:
        assert result.copied + result.already_present == len(lines)
        assert inbox(target).count() == result.copied


# ---------------------------------------------------------------- memory attacks

def blocks(total: int, block: bytes):
    for _ in range(total // len(block)):
        yield block


def write_zip(path: Path, members: dict, compression=zipfile.ZIP_DEFLATED) -> Path:
    """A zip of ``members``: name -> bytes, or an iterable of byte blocks (streamed)."""
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, content in members.items():
            if isinstance(content, bytes):
                archive.writestr(name, content)
                continue
            with archive.open(name, "w", force_zip64=True) as member:
                for block in content:
                    member.write(block)
    return path


def attack_files(directory: Path, good: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, what its refusal says)."""
    manifest = zipfile.ZipFile(good).read(MANIFEST)
    content = zipfile.ZipFile(good).read(CONTENT)
    random_hex = os.urandom(6 * MiB).hex().encode()  # 12 MiB that deflate cannot shrink much
    return {
        # The reported one: 150 KB on disk, a 150 MB manifest.
        "huge manifest": (write_zip(directory / "manifest.zip", {
            CONTENT: content, MANIFEST: blocks(150 * MiB, b" " * MiB)}),
            f"{MANIFEST} declares 157,286,400 bytes"),
        "zip bomb": (write_zip(directory / "bomb.zip", {
            MANIFEST: manifest, CONTENT: blocks(400 * MiB, b"a" * MiB)}),
            "a ratio above 100 (a zip bomb?)"),
        "one huge line": (write_zip(directory / "line.zip", {
            MANIFEST: manifest, CONTENT: [random_hex, random_hex]}),
            f"{CONTENT} line 1 is longer than 1,048,576 bytes"),
        "70,000 members": (write_zip(directory / "members.zip", {
            f"m{n}": b"" for n in range(70_000)}, compression=zipfile.ZIP_STORED),
            "its end record declares 70,000"),
        "a third member": (write_zip(directory / "third.zip", {
            MANIFEST: manifest, CONTENT: content, "notes.txt": b"hello"}),
            "this one holds ['manifest.json', 'notes.txt', 'transactions.jsonl']"),
    }


def test_memory_stays_bounded_whatever_the_file(good, tmp_path):
    """Each attack file is refused by a process whose memory grows by a few MiB (the
    importer used to grow by 260-410 MB on a 150 KB file); a good file still imports."""
    attacks = attack_files(tmp_path, good)
    assert attacks["huge manifest"][0].stat().st_size < 400_000
    work = tmp_path / "db"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SYNCROUTER_TEST_DIR": str(work),
           "DJANGO_SETTINGS_MODULE": "tests.settings"}
    paths = [str(path) for path, _ in attacks.values()] + [str(good)]
    done = subprocess.run([sys.executable, "-m", "tests.support.importworker", "--max-line", str(MiB),
                           *paths], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    reports = {report["path"]: report for report in map(json.loads, done.stdout.splitlines())}
    for name, (path, problem) in attacks.items():
        report = reports[str(path)]
        assert report["error"] and problem in report["error"], (name, report["error"])
        assert report["traced"] < 3 * MiB, (name, report)
        if report["rss"] is not None:
            assert report["rss"] < 16 * MiB, (name, report)
    assert reports[str(good)]["error"] is None


# ---------------------------------------------------------------- export and interruptions

def test_export_leaves_out_what_no_importer_would_take(target, tmp_path, settings):
    """A transaction over SYNCROUTER_MAX_TRANSACTION_BYTES is left out with the rest of its
    database transaction, recorded and reported (exit 4); the file holds everything else
    and imports. Once the limit is raised, the next export carries it and forgets it."""
    from syncrouter.models import OutgoingTransaction, Refusal
    from syncrouter.transfer.files import ExportRefused
    from tests.testapp.models import Household

    factories.household("client", "H1")
    Household.objects.using("client").create(household_identifier="H2", village="v" * 5000)
    factories.household("client", "H3")
    settings.SYNCROUTER_MAX_TRANSACTION_BYTES = 4000
    path = tmp_path / "out.zip"
    name = OutgoingTransaction.objects.using("client").first().producer
    code, out, err = run("export", str(path))
    assert code == 4 and f"{path}: written with 2 transactions; 1 were left out" in err
    assert f"{name}#2: its line in a batch file is " in err and "carry at most 4,000" in err
    assert [(r.target, r.sequence) for r in Refusal.objects.using("client")] == [("file", 2)]
    assert import_transactions(path, target) == (2, 0)
    settings.SYNCROUTER_MAX_TRANSACTION_BYTES = MiB
    manifest = export_transactions(tmp_path / "next.zip", pending("client"))
    assert manifest.count == 3 and not Refusal.objects.using("client").exists()
    with pytest.raises(ExportRefused):  # the API raises too, after writing the file
        settings.SYNCROUTER_MAX_TRANSACTION_BYTES = 4000
        export_transactions(tmp_path / "again.zip", pending("client"))
    assert (tmp_path / "again.zip").exists()


def test_a_connection_lost_during_import_leaves_nothing_and_exits_3(good, target):
    """Not a refusal of the file: the import is interrupted, rolled back whole, and the
    command says to run it again (exit 3)."""
    from django.db import OperationalError

    inserts = 0

    def cut(execute, sql, params, many, context):
        nonlocal inserts
        if sql.lstrip().upper().startswith(("INSERT", "COPY")):
            inserts += 1
            if inserts == 2:
                raise OperationalError("server closed the connection unexpectedly")
        return execute(sql, params, many, context)

    with connections[target].execute_wrapper(cut):
        code, out, err = run("import", str(good), "--target", target, "--batch-size", "2")
    assert code == 3 and f"Import of {good} into {target!r} interrupted" in err
    assert "run the import again" in err
    assert not inbox(target).exists()
