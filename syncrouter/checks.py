"""System checks: misconfiguration found at ``manage.py check`` rather than at the first write."""
from django.conf import settings
from django.core import checks

from . import conf, history
from .capture import patches
from .exceptions import SyncError
from .registry import missing_natural_key_parts, site_sync_models
from .replay import repairs
from .trust import keys


@checks.register()
def check_registered_models(app_configs=None, **kwargs):
    errors = []
    for model in site_sync_models:
        missing = missing_natural_key_parts(model)
        if missing:
            errors.append(checks.Error(
                f"{model._meta.label_lower} is registered for sync but lacks "
                f"{' and '.join(missing)}.",
                hint="Rows are found on other nodes by natural key; see Django's "
                     "'natural keys' documentation.",
                obj=model, id="syncrouter.E001"))
    return errors


@checks.register()
def check_history(app_configs=None, **kwargs):
    """A ``SyncModelMixin`` model whose history cannot travel was registered without it."""
    return [checks.Error(problem, hint=f"Set {history.OPT_OUT} = False on the model to leave "
                                       "its history out.", obj=model, id="syncrouter.E005")
            for model, problem in site_sync_models.history_problems.items()]


@checks.register()
def check_payload_repairs(app_configs=None, **kwargs):
    """Every payload repair hook can be imported and belongs to a registered model."""
    errors = []
    declared = conf.get(repairs.SETTING)
    for label in declared:
        if site_sync_models.get(label) is None:
            errors.append(checks.Error(
                f"{repairs.SETTING} names {label!r}, which is not a model registered for sync.",
                id="syncrouter.E006"))
    for model in site_sync_models:
        try:
            repairs.hooks_for(model)
        except SyncError as exc:
            errors.append(checks.Error(str(exc), obj=model, id="syncrouter.E006"))
    return errors


@checks.register()
def check_settings(app_configs=None, **kwargs):
    errors = []
    alias = conf.local_alias()
    if alias not in settings.DATABASES:
        errors.append(checks.Error(
            f"SYNCROUTER_LOCAL_ALIAS is {alias!r}, which is not in DATABASES.",
            hint="Set SYNCROUTER_LOCAL_ALIAS to this node's own database alias.",
            id="syncrouter.E002"))
    if "syncrouter.router.SyncRouter" not in getattr(settings, "DATABASE_ROUTERS", []):
        errors.append(checks.Warning(
            "syncrouter.router.SyncRouter is not in DATABASE_ROUTERS.",
            hint="Without it writes go to 'default' rather than this node's alias.",
            id="syncrouter.W001"))
    if conf.get("SYNCROUTER_RAW_SQL") not in ("warn", "raise", "off"):
        errors.append(checks.Error(
            f"SYNCROUTER_RAW_SQL is {conf.get('SYNCROUTER_RAW_SQL')!r}; use 'warn', 'raise' or "
            "'off'.", id="syncrouter.E003"))
    for alias in conf.get("SYNCROUTER_NODES"):
        try:
            conf.node_for_alias(alias)
        except SyncError as exc:
            errors.append(checks.Error(str(exc), id="syncrouter.E004"))
    return errors


@checks.register()
def check_trust(app_configs=None, **kwargs):
    """A node that signs needs its key before the first write; say so at ``check``."""
    if not conf.get("SYNCROUTER_SIGN") or not conf.capture_enabled():
        return []
    alias = conf.local_alias()
    if alias not in settings.DATABASES:
        return []
    try:
        missing = keys.load(alias) is None
    except SyncError as exc:
        return [checks.Error(str(exc), id="syncrouter.E005")]
    if missing:
        return [checks.Warning(
            f"Node {conf.node_for_alias(alias).name!r} has no key at {keys.key_source(alias)}; "
            "every captured write will fail until it has one.",
            hint=f"manage.py syncrouter keys init --alias {alias}", id="syncrouter.W002")]
    return []


@checks.register()
def check_payload_keys(app_configs=None, **kwargs):
    """The payload keyring is well formed and the key that encrypts new rows can be read:
    otherwise every captured write fails."""
    from .trust import atrest

    try:
        ring = atrest.keyring()
        if ring.current is not None:
            ring.cipher(ring.current)
    except SyncError as exc:
        return [checks.Error(str(exc), hint="See SYNCROUTER_PAYLOAD_KEYS in the README.",
                             id="syncrouter.E007")]
    return []


@checks.register(checks.Tags.database)
def check_payload_keys_in_use(app_configs=None, databases=None, **kwargs):
    """No stored payload needs a key that was taken out of the keyring (``check --database``
    and ``migrate`` run this: it reads the outbox and inbox)."""
    from django.db import DatabaseError

    from .trust import rotation

    errors = []
    for alias in databases or ():
        try:
            missing = rotation.missing_keys(alias)
        except (DatabaseError, SyncError):  # not migrated yet, or E007
            continue
        for key_id, count in sorted(missing.items()):
            errors.append(checks.Error(
                f"{count} stored payloads on {alias!r} are encrypted under payload key "
                f"{key_id!r}, which is not in SYNCROUTER_PAYLOAD_KEYS: they cannot be read.",
                hint=f"Put key {key_id!r} back in SYNCROUTER_PAYLOAD_KEYS and run 'manage.py "
                     f"syncrouter keys rotate-payloads --alias {alias}' before removing it.",
                id="syncrouter.E008"))
    return errors


def check_patched_django(app_configs=None, **kwargs):
    """The Django methods capture wraps still take the parameters the wrappers read."""
    return [checks.Error(problem, hint="Use a Django release this syncrouter version supports "
                         "(see the README's Install section).", id="syncrouter.E009")
            for problem in patches.shape_problems()]
