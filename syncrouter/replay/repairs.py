"""Payload repair hooks: mend a transaction's payload before replay decodes it.

A deployment sometimes receives payloads the replaying node cannot decode as
they are: an old client sent a datetime for what is now a date field, a field
was renamed, a choice value was retired. Without a hook such a row stays in
error until someone edits it by hand. The older tools ran every payload
through ``custom_json_parsers`` (functions of the JSON text); syncrouter
runs per model hooks on the parsed payload, declared on the model or in
settings, in that order::

    class Crf(SyncModelMixin, models.Model):
        sync_payload_repairs = [repairs.datetime_to_date("visit_date")]

    SYNCROUTER_PAYLOAD_REPAIRS = {"myapp.crf": ["myapp.repairs.fix_outcome"]}

A hook is a callable (or its dotted path) taking the payload dict (the format
``serialization`` describes) and keywords ``model`` and ``transaction`` (the
incoming row), and returning the payload to replay, which may be the same dict
changed in place. It runs on every replay of the row, before the fast path and
the row-by-row path decode anything, and changes only what is replayed: the
stored transaction keeps the producer's payload, so it is forwarded unchanged.
A hook that raises, or returns something that is not a payload of the same
model, puts the row in error naming the hook.

Rows already in error are not replayed again on their own: after adding a hook,
clear their error flag (``IncomingTransaction.objects.filter(is_error=True,
tx_name=...).update(is_error=False)``) and replay.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from functools import cache

from django.core.signals import setting_changed
from django.db import models
from django.utils.module_loading import import_string

from .. import conf
from ..enums import ReplayOutcome
from ..exceptions import SyncError

logger = logging.getLogger("syncrouter.replay")

SETTING = "SYNCROUTER_PAYLOAD_REPAIRS"
#: The model attribute that lists a model's own hooks.
ATTRIBUTE = "sync_payload_repairs"

Repair = Callable[..., dict]


def name_of(hook) -> str:
    return f"{getattr(hook, '__module__', '?')}.{getattr(hook, '__qualname__', repr(hook))}"


@cache
def hooks_for(model: type[models.Model]) -> tuple[Repair, ...]:
    """The repair hooks of ``model``: its own, then those of the setting.

    Raises ``SyncError`` naming the declaration that cannot be imported.
    """
    declared = [(f"{model.__name__}.{ATTRIBUTE}", hook)
                for hook in getattr(model, ATTRIBUTE, ())]
    declared += [(f"{SETTING}[{model._meta.label_lower!r}]", hook)
                 for hook in conf.get(SETTING).get(model._meta.label_lower, ())]
    hooks = []
    for where, hook in declared:
        if isinstance(hook, str):
            try:
                hook = import_string(hook)
            except ImportError as exc:
                raise SyncError(f"{where}: cannot import {hook!r}: {exc}") from None
        if not callable(hook):
            raise SyncError(f"{where}: {hook!r} is not callable.")
        hooks.append(hook)
    return tuple(hooks)


def _forget(**kwargs) -> None:
    hooks_for.cache_clear()


setting_changed.connect(_forget, dispatch_uid="syncrouter.replay.repairs")


def repair(model: type[models.Model], payload: dict, row) -> tuple[dict, str | None, str]:
    """(payload to replay, None, "") or (payload, "error", why)."""
    try:
        hooks = hooks_for(model)
    except SyncError as exc:
        return payload, ReplayOutcome.ERROR, f"payload repair: {exc}"
    label = payload.get("model")
    for hook in hooks:
        try:
            repaired = hook(payload, model=model, transaction=row)
        except Exception as exc:  # the hook's failure is this row's error, named
            logger.warning("Payload repair %s failed on %s#%s", name_of(hook), row.producer,
                           row.sequence, exc_info=True)
            return payload, ReplayOutcome.ERROR, (f"payload repair {name_of(hook)} failed: "
                                      f"{type(exc).__name__}: {exc}")
        if not isinstance(repaired, dict) or "nk" not in repaired \
                or repaired.get("model") != label:
            return payload, ReplayOutcome.ERROR, (f"payload repair {name_of(hook)} returned "
                                      f"{type(repaired).__name__}, not a payload of {label}")
        payload = repaired
    return payload, None, ""


def datetime_to_date(*field_names: str) -> Repair:
    """A hook that keeps the date part of a datetime sent for a date field
    ("2026-05-01T10:30:00+02:00" becomes "2026-05-01", the producer's calendar
    day), in the new values and the before-state: the case the older tools'
    ``datetime_to_date_parser`` repaired."""

    def repair_dates(payload: dict, **context) -> dict:
        for state in (payload.get("fields"), payload.get("before")):
            if not isinstance(state, dict):
                continue
            for name in field_names:
                value = state.get(name)
                if isinstance(value, str) and len(value) > 10 and value[10] in "T ":
                    state[name] = value[:10]
        return payload

    repair_dates.__qualname__ = f"datetime_to_date({', '.join(map(repr, field_names))})"
    return repair_dates
