"""tests/settings.py plus the nodes of the field chain, and one database that is never up.

client (field laptop) -> middleman (SQLite) -> community (SQLite) -> FILE -> central
(PostgreSQL when available, else SQLite). ``pgclient`` serves as a second field laptop.
``offline`` points at a closed port: the command tests use it for "target unreachable".

Used by ``tests/transfer/test_chain.py`` and ``tests/management/test_commands.py`` in a subprocess
(pytest-django runs one settings module per session).
"""
from tests.settings import *  # noqa: F401,F403
from tests.settings import DATABASES, SYNCROUTER_NODES, pg, sqlite

DATABASES = {
    **DATABASES,
    "middleman": sqlite("middleman"),
    "community": sqlite("community"),
    "central": pg.settings_for("syncrouter_central") if pg.AVAILABLE else sqlite("central"),
    "offline": {**pg.settings_for("syncrouter_offline"), "HOST": "127.0.0.1", "PORT": "9",
                "OPTIONS": {"connect_timeout": 2}},
}
SYNCROUTER_NODES = {
    **SYNCROUTER_NODES,
    "middleman": {"name": "middleman-laptop", "role": "middleman"},
    "community": {"name": "community-server", "role": "community"},
    "central": {"name": "central-server", "role": "central"},
    "offline": {"name": "unplugged", "role": "community"},
}
