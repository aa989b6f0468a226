"""A field laptop: captures on its own SQLite file, pushes to the community server.

    manage.py syncrouter sync --watch          # push whenever the server is in reach
    manage.py syncrouter export /media/usb/laptop-01.zip   # or carry a file
"""
import os

from .base import *  # noqa: F401,F403
from .base import postgres, sqlite

DATABASES = {
    "default": {},  # empty: the router sends everything to "client"
    "client": sqlite("client"),
    "server": postgres("COMMUNITY_DB", "community"),
}
SYNCROUTER_LOCAL_ALIAS = "client"
SYNCROUTER_NODES = {
    "client": {"name": os.environ.get("SYNCROUTER_NODE_NAME", "laptop-01"), "role": "client"},
    "server": {"name": "community", "role": "community"},
}
