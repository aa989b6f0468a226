"""Demo settings: three field laptops, a middleman laptop, the community server and the
central server, every node an SQLite file."""
import os
from pathlib import Path

DATA = Path(os.environ.get("SYNCROUTER_DEMO_DIR", Path(__file__).resolve().parent.parent
                           / "demo-data"))
SECRET_KEY = "demo-only"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "syncrouter",
                  "tests.testapp.apps.TestAppConfig"]
LAPTOPS = ["laptop1", "laptop2", "laptop3"]
DATABASES = {"default": {}} | {
    alias: {"ENGINE": "django.db.backends.sqlite3", "NAME": str(DATA / f"{alias}.sqlite3")}
    for alias in LAPTOPS + ["middleman", "server", "central"]}
DATABASE_ROUTERS = ["syncrouter.router.SyncRouter"]
SYNCROUTER_LOCAL_ALIAS = "laptop1"
SYNCROUTER_NODES = {alias: {"name": f"field-{alias}", "role": "client"} for alias in LAPTOPS}
SYNCROUTER_NODES["middleman"] = {"name": "middleman-laptop", "role": "middleman"}
SYNCROUTER_NODES["server"] = {"name": "community-server", "role": "community"}
SYNCROUTER_NODES["central"] = {"name": "central-server", "role": "central"}
SYNCROUTER_CONFLICT_POLICY = "manual"
# Every node signs what it captures and believes only the nodes it enrolled; the
# scenario makes the keys (demo-data/keys) and enrols them before the field work.
SYNCROUTER_KEY_DIR = DATA / "keys"
