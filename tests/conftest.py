from dataclasses import dataclass

import pytest

from tests import pg

DATABASES = ["client", "server"] + (["pgclient", "pgserver"] if pg.AVAILABLE else [])
PAIRS = {
    "sqlite-sqlite": ("client", "server"),
    "sqlite-postgres": ("client", "pgserver"),
    "postgres-postgres": ("pgclient", "pgserver"),
}


def pytest_configure(config):
    if pg.IN_CI and not pg.AVAILABLE:
        raise pytest.UsageError(f"{pg.REASON}. CI=true: PostgreSQL tests may not skip.")


def pytest_collection_modifyitems(items):
    """Every test may use every alias (pytest-django wraps each in a transaction)."""
    for item in items:
        if "django_db" not in item.keywords:
            item.add_marker(pytest.mark.django_db(databases=DATABASES))


@dataclass(frozen=True)
class Nodes:
    client: str
    server: str


@pytest.fixture(params=list(PAIRS))
def nodes(request) -> Nodes:
    client, server = PAIRS[request.param]
    if "pg" in client + server and not pg.AVAILABLE:
        pytest.skip(pg.REASON)
    from tests.factories import load_symptoms

    load_symptoms(client)
    load_symptoms(server)
    return Nodes(client, server)
