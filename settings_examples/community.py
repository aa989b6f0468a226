"""The community server: receives from laptops and middlemen, replays, sends files on.

    manage.py syncrouter replay                       # apply what arrived
    manage.py syncrouter status                       # gaps, deferred, errors per producer
    manage.py syncrouter export /media/usb/to-central.zip
"""
import os

from .base import *  # noqa: F401,F403
from .base import postgres

DATABASES = {
    "default": {},
    "community": postgres("COMMUNITY_DB", "community"),
}
SYNCROUTER_LOCAL_ALIAS = "community"
SYNCROUTER_NODES = {
    "community": {"name": os.environ.get("SYNCROUTER_NODE_NAME", "community"),
                  "role": "community"},
}
