"""The central server: imports the community servers' files and replays them.

    manage.py syncrouter import /media/usb/*.zip      # any order, repeats are harmless
    manage.py syncrouter replay
"""
from .base import *  # noqa: F401,F403
from .base import postgres

DATABASES = {
    "default": {},
    "central": postgres("CENTRAL_DB", "central"),
}
SYNCROUTER_LOCAL_ALIAS = "central"
SYNCROUTER_NODES = {"central": {"name": "central", "role": "central"}}
