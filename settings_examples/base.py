"""What every node shares. Each role module imports this and adds its databases.

Connection details come from the environment so one code base serves every
machine; the defaults suit a laptop with everything on localhost.
"""
import os
from pathlib import Path

BASE_DIR = Path(os.environ.get("SYNCROUTER_DATA_DIR", Path.home() / "syncrouter-data"))
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "change-me")
DEBUG = False
ALLOWED_HOSTS = ["localhost", "127.0.0.1"]
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "syncrouter",
    # your study apps here; their registered models are what gets synced
]
# Every read and write goes to SYNCROUTER_LOCAL_ALIAS; other aliases are reached
# only by explicit .using() (copy, replay, the syncrouter command).
DATABASE_ROUTERS = ["syncrouter.router.SyncRouter"]
ALLOW_MODEL_SERIALIZATION = True
SYNCROUTER_BATCH_SIZE = 500
# Trust (README, "Security model"): this node's key pair lives here (manage.py syncrouter
# keys init); capture signs, receivers verify and apply write rules, files are encrypted.
SYNCROUTER_KEY_DIR = BASE_DIR / "keys"
SYNCROUTER_SIGN = True
SYNCROUTER_VERIFY = True
SYNCROUTER_ACCEPT_UNSIGNED = os.environ.get("SYNCROUTER_ACCEPT_UNSIGNED") == "1"  # upgrades


def sqlite(name: str) -> dict:
    return {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE_DIR / f"{name}.sqlite3"}


def postgres(prefix: str, name: str) -> dict:
    """A PostgreSQL alias configured by ``<PREFIX>_HOST``, ``_PORT``, ``_USER``, ``_PASSWORD``.

    A short connect timeout: a node that is out of reach should say so in
    seconds (``manage.py syncrouter sync`` exits 3) rather than hang. TLS that
    checks the server's certificate and name (``sslmode=verify-full``) against the
    CA in ``<PREFIX>_SSLROOTCERT`` (libpq's default: ``~/.postgresql/root.crt``):
    clinical data crosses the network only encrypted, to the server it meant.
    """
    env = os.environ.get
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": env(f"{prefix}_NAME", name),
        "HOST": env(f"{prefix}_HOST", "127.0.0.1"),
        "PORT": env(f"{prefix}_PORT", "5432"),
        "USER": env(f"{prefix}_USER", "syncrouter"),
        "PASSWORD": env(f"{prefix}_PASSWORD", ""),
        "OPTIONS": {"connect_timeout": 10,
                    "sslmode": env(f"{prefix}_SSLMODE", "verify-full"),
                    **({"sslrootcert": env(f"{prefix}_SSLROOTCERT")}
                       if env(f"{prefix}_SSLROOTCERT") else {})},
    }
