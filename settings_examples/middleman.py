"""A middleman laptop: collects from field laptops it visits, forwards to the community server.

The field laptop's database is reached as the alias ``laptop`` (its SQLite file
on a mounted share or cable, ``FIELD_LAPTOP_DB``). At the laptop:

    manage.py syncrouter pull --source laptop           # into this node's inbox
    manage.py syncrouter replay --target middleman      # optional: see the data here

Back in reach of the community server:

    manage.py syncrouter push --target server           # forwards the inbox unchanged
"""
import os

from .base import *  # noqa: F401,F403
from .base import postgres, sqlite

DATABASES = {
    "default": {},
    "middleman": sqlite("middleman"),
    "laptop": {"ENGINE": "django.db.backends.sqlite3",
               "NAME": os.environ.get("FIELD_LAPTOP_DB", "/media/laptop/client.sqlite3")},
    "server": postgres("COMMUNITY_DB", "community"),
}
SYNCROUTER_LOCAL_ALIAS = "middleman"
SYNCROUTER_NODES = {
    "middleman": {"name": os.environ.get("SYNCROUTER_NODE_NAME", "middleman-01"),
                  "role": "middleman"},
    "laptop": {"name": os.environ.get("FIELD_LAPTOP_NAME", "laptop-01"), "role": "client"},
    "server": {"name": "community", "role": "community"},
}
