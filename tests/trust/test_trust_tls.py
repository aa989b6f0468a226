"""TLS for direct PostgreSQL connections, as settings_examples configure them.

A PostgreSQL server of the test's own (a throw-away cluster on a free port, with
``ssl=on``) presents a certificate for ``localhost`` signed by a CA made here. The
connection settings of ``settings_examples.base.postgres`` (``sslmode=verify-full``)
connect with that CA, and refuse a server whose certificate another CA signed or
that is reached under a name the certificate does not carry.
"""
import datetime
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support import pg

pytestmark = pytest.mark.django_db(databases=[])


def _certificate(subject: str, key, issuer=None, issuer_key=None, ca=False):
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (x509.CertificateBuilder().subject_name(name)
               .issuer_name(issuer.subject if issuer else name).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


def _write(path, data: bytes, owner: str | None = None) -> str:
    with open(path, "wb") as out:
        out.write(data)
    os.chmod(path, 0o600)
    if owner:
        shutil.chown(path, owner, owner)
    return str(path)


def _pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def tls_server():
    """(port, CA path, other CA path) of a TLS-only PostgreSQL cluster started for the test."""
    if not pg.AVAILABLE:
        pytest.skip(pg.REASON)
    binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not binaries:
        pytest.fail("PostgreSQL is available but its initdb was not found")
    bin_dir = os.path.dirname(binaries[-1])
    ca_key, other_key, server_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca = _certificate("syncrouter test CA", ca_key, ca=True)
    other = _certificate("another CA", other_key, ca=True)
    server = _certificate("localhost", server_key, issuer=ca, issuer_key=ca_key)
    # pytest's tmp_path lies under a directory only root may enter; the server runs as
    # the postgres user.
    work = Path(tempfile.mkdtemp(prefix="syncrouter-tls-"))
    shutil.chown(work, "postgres", "postgres")
    data = work / "data"
    run_as = ["runuser", "-u", "postgres", "--"]
    subprocess.run(run_as + [f"{bin_dir}/initdb", "-D", str(data), "-A", "trust", "-U",
                             "postgres"], check=True, capture_output=True, timeout=120)
    cert = _write(work / "server.crt", server.public_bytes(serialization.Encoding.PEM),
                  "postgres")
    key = _write(work / "server.key", _pem(server_key), "postgres")
    with open(data / "pg_hba.conf", "w") as hba:
        hba.write("hostssl all all 127.0.0.1/32 trust\n")
    port = _free_port()
    options = (f"-p {port} -k {work} -c listen_addresses=127.0.0.1 -c ssl=on "
               f"-c ssl_cert_file={cert} -c ssl_key_file={key}")
    subprocess.run(run_as + [f"{bin_dir}/pg_ctl", "-D", str(data), "-o", options, "-w",
                             "-l", str(work / "log"), "start"],
                   check=True, capture_output=True, timeout=120)
    try:
        yield (port, _write(work / "ca.crt", ca.public_bytes(serialization.Encoding.PEM)),
               _write(work / "other.crt", other.public_bytes(serialization.Encoding.PEM)))
    finally:
        subprocess.run(run_as + [f"{bin_dir}/pg_ctl", "-D", str(data), "-m", "immediate",
                                 "stop"], capture_output=True, timeout=120)
        shutil.rmtree(work, ignore_errors=True)


def _connect(settings: dict, host: str | None = None):
    options = dict(settings["OPTIONS"])
    options.pop("connect_timeout")
    return psycopg.connect(host=host or settings["HOST"], port=settings["PORT"],
                           user=settings["USER"], dbname=settings["NAME"],
                           connect_timeout=5, **options)


def test_settings_examples_connect_with_verify_full(tls_server, monkeypatch):
    from settings_examples.base import postgres

    port, ca, other = tls_server
    for name, value in {"TLSTEST_HOST": "localhost", "TLSTEST_PORT": str(port),
                        "TLSTEST_USER": "postgres", "TLSTEST_SSLROOTCERT": ca}.items():
        monkeypatch.setenv(name, value)
    settings = postgres("TLSTEST", "postgres")
    assert settings["OPTIONS"]["sslmode"] == "verify-full"
    with _connect(settings) as connection:
        assert connection.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = "
                                  "pg_backend_pid()").fetchone() == (True,)

    monkeypatch.setenv("TLSTEST_SSLROOTCERT", other)  # a server this CA did not certify
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        _connect(postgres("TLSTEST", "postgres"))
    monkeypatch.setenv("TLSTEST_SSLROOTCERT", ca)  # the right CA, the wrong name
    with pytest.raises(psycopg.OperationalError, match="does not match|server certificate"):
        _connect(postgres("TLSTEST", "postgres"), host="127.0.0.1")
