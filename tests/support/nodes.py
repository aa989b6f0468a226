"""The database aliases the tests use and the pairs of nodes a test runs on."""
from dataclasses import dataclass

from tests.support import pg

DATABASES = ["client", "server"] + (["pgclient", "pgserver"] if pg.AVAILABLE else [])
PAIRS = {
    "sqlite-sqlite": ("client", "server"),
    "sqlite-postgres": ("client", "pgserver"),
    "postgres-postgres": ("pgclient", "pgserver"),
}


@dataclass(frozen=True)
class Nodes:
    client: str
    server: str
