"""Write rules: which devices may insert, update or delete which models, and which rows.

A signature proves who wrote a row, not that they were allowed to. Rules are
checked at replay, on the receiving node, against the producer's role in the
device registry::

    from syncrouter.trust.rules import WriteRule

    SYNCROUTER_WRITE_RULES = [
        WriteRule("laptops-write-visits", models=["myapp.*"], roles=["client", "middleman"],
                  actions="IU", check="myapp.rules.own_site_only"),
        WriteRule("servers-write-all", models=["myapp.*"], roles=["community", "central"]),
    ]

For a row of model M the rules naming M (``"app.model"``, ``"app.*"`` or
``"*"``) are tried in order, the configured ones before ``DEFAULT_RULES``; the
first whose ``roles`` and ``producers`` match the producer decides: the action
must be in its ``actions`` and its ``check`` (a callable or a dotted path,
called as ``check(row, payload, model, alias, device)``) must return None,
else the row is refused with the rule's name and the reason. If rules name M
but none matches the producer, the row is refused. A model that no rule names
may be written by every trusted device. Many-to-many changes are updates of
their owner's model.

``DEFAULT_RULES`` protect Django's ``auth`` models when they are registered for
sync: servers (``community``, ``central``) may write them; field devices may
insert and update users but never make one staff or superuser, change anyone's
groups or permissions, or touch a user who is staff or superuser on the
receiving node (the laptop that rewrote the server admin's password); every
other ``auth`` model is refused from them.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from django.utils.module_loading import import_string

from .. import conf
from ..exceptions import SyncError

ACTIONS = {"I": "insert", "U": "update", "D": "delete"}
#: Role assumed for a producer the registry does not know (only with unsigned rows).
UNKNOWN_ROLE = "client"


@dataclass(frozen=True)
class WriteRule:
    name: str
    models: tuple[str, ...]
    roles: tuple[str, ...] | None = None
    producers: tuple[str, ...] | None = None
    actions: str = "IUD"
    check: Callable | str | None = None

    def __post_init__(self):
        for attribute in ("models", "roles", "producers"):
            value = getattr(self, attribute)
            if isinstance(value, str):
                object.__setattr__(self, attribute, (value,))
            elif value is not None:
                object.__setattr__(self, attribute, tuple(value))
        unknown = set(self.actions) - set(ACTIONS)
        if unknown or set(self.roles or ()) - set(conf.ROLES):
            raise SyncError(f"Write rule {self.name!r}: actions must be letters of 'IUD' and "
                            f"roles among {', '.join(conf.ROLES)}.")

    def names(self, label: str) -> bool:
        app = label.split(".")[0]
        return any(pattern in ("*", label, f"{app}.*") for pattern in self.models)

    def matches(self, producer: str, role: str) -> bool:
        return ((self.roles is None or role in self.roles)
                and (self.producers is None or producer in self.producers))

    def checker(self) -> Callable | None:
        return import_string(self.check) if isinstance(self.check, str) else self.check


def _existing(model, payload: dict, alias: str):
    """This node's row under the payload's (old) natural key, or None."""
    key = payload.get("old_nk", payload.get("nk"))
    manager = model._default_manager.db_manager(alias)
    try:
        return manager.get_by_natural_key(*(key if isinstance(key, list) else [key]))
    except (model.DoesNotExist, model.MultipleObjectsReturned, TypeError, ValueError):
        return None


PRIVILEGES = ("is_superuser", "is_staff")
PRIVILEGED_RELATIONS = ("groups", "user_permissions")


def no_privileges(row, payload: dict, model, alias: str, device) -> str | None:
    """Refuse a user row that grants or touches privileges (see the module docstring)."""
    change = payload.get("m2m")
    if change and change.get("field") in PRIVILEGED_RELATIONS:
        return f"may not change {model._meta.label_lower}.{change['field']} (privileges)"
    fields = payload.get("fields") or {}
    granted = [name for name in PRIVILEGES if fields.get(name)]
    if granted:
        return f"may not set {', '.join(granted)} on a user"
    existing = _existing(model, payload, alias)
    held = [name for name in PRIVILEGES if getattr(existing, name, False)]
    if held:
        return (f"may not change user {existing.get_username()!r}, who has "
                f"{' and '.join(held)} on this node")
    return None


DEFAULT_RULES = (
    WriteRule("auth-from-servers", models=("auth.*",), roles=("community", "central")),
    WriteRule("auth-users-from-field", models=("auth.user",), roles=("client", "middleman"),
              actions="IU", check=no_privileges),
)


def configured() -> list[WriteRule]:
    """``SYNCROUTER_WRITE_RULES`` (rules or dicts of their fields), then the defaults."""
    rules = [rule if isinstance(rule, WriteRule) else WriteRule(**rule)
             for rule in conf.get("SYNCROUTER_WRITE_RULES")]
    return rules + list(DEFAULT_RULES)


def refusal(row, payload: dict, model, alias: str, device,
            rules: Iterable[WriteRule] | None = None) -> str | None:
    """Why the rules refuse ``row`` from ``device`` (an ``Enrolled`` or None), or None."""
    label = model._meta.label_lower
    naming = [rule for rule in (configured() if rules is None else rules) if rule.names(label)]
    if not naming:
        return None
    producer = row.producer
    role = device.role if device is not None else UNKNOWN_ROLE
    for rule in naming:
        if not rule.matches(producer, role):
            continue
        verb = "change many-to-many of" if "m2m" in payload else ACTIONS.get(row.action, "?")
        if row.action not in rule.actions:
            return (f"write rule {rule.name!r}: {producer} (role {role}) may not {verb} "
                    f"{label}")
        check = rule.checker()
        reason = check(row, payload, model, alias, device) if check else None
        return f"write rule {rule.name!r}: {producer} (role {role}) {reason}" if reason else None
    return (f"no write rule lets {producer} (role {role}) write {label} (rules for it: "
            f"{', '.join(rule.name for rule in naming)})")
