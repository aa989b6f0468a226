import pytest

from tests.support import pg
from tests.support.nodes import DATABASES, PAIRS, Nodes


def pytest_configure(config):
    if pg.IN_CI and not pg.AVAILABLE:
        raise pytest.UsageError(f"{pg.REASON}. CI=true: PostgreSQL tests may not skip.")


def pytest_collection_modifyitems(items):
    """Every test may use every alias (pytest-django wraps each in a transaction)."""
    for item in items:
        if "django_db" not in item.keywords:
            item.add_marker(pytest.mark.django_db(databases=DATABASES))


@pytest.fixture(params=list(PAIRS))
def nodes(request) -> Nodes:
    client, server = PAIRS[request.param]
    if "pg" in client + server and not pg.AVAILABLE:
        pytest.skip(pg.REASON)
    from tests.support.factories import load_symptoms

    load_symptoms(client)
    load_symptoms(server)
    return Nodes(client, server)
