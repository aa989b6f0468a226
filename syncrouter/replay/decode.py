"""Read a payload of any version this node knows, and resolve what only this node can.

``upgrade`` brings a payload to the current shape once, right after it is parsed,
so that the rest of replay reads one shape. ``object_id`` turns the travelling
object id of a generic foreign key (``capture.generic``) into this node's id.
"""
from __future__ import annotations

import json

from django.db import models

from .. import serialization as ser
from ..enums import ReplayOutcome
from .messages import ApplyStopped


def upgrade(payload: dict) -> dict:
    """``payload`` in the current shape; ``ValueError`` for a version this node cannot read.

    Version 1 differs in one way the current reader would misread: a JSON field
    value that is itself a one-key object under ``serialization.JSON_TEXT`` was
    that object, not a tag. It is wrapped so that it reads back as itself.
    """
    version = payload.get("v", 1)
    if type(version) is not int or not 1 <= version <= ser.VERSION:
        raise ValueError(f"payload version {version!r}: this node reads versions 1 to "
                         f"{ser.VERSION} (upgrade syncrouter here to replay it)")
    if version == 1:
        for part in ("fields", "before"):
            values = payload.get(part)
            if isinstance(values, dict):
                for name, value in values.items():
                    if isinstance(value, dict) and len(value) == 1 and ser.JSON_TEXT in value:
                        values[name] = {ser.JSON_TEXT: json.dumps(value)}
    return payload


def object_id(model: type[models.Model], gfk, value, row: dict, alias: str):
    """This node's object id for the travelling ``value`` of ``gfk``: a list is the
    natural key of the target, found by the content type ``row`` names; anything else
    is the id itself (a target whose key travels, or a version 1 payload)."""
    if type(value) is not list:
        return value
    from django.contrib.contenttypes.models import ContentType

    from .apply import find

    label = f"{model._meta.label_lower}.{gfk.name}"
    type_key = row.get(gfk.ct_field)
    content_type = find(ContentType, type_key, alias) if isinstance(type_key, list) else None
    target = content_type.model_class() if content_type is not None else None
    if target is None:
        raise ApplyStopped(ReplayOutcome.ERROR, f"{label}: object id {value} names its target by natural key, "
                               f"but its content type {type_key!r} is not a model on this "
                               "node.")
    found = find(target, value, alias)
    if found is None:
        raise ApplyStopped(ReplayOutcome.DEFERRED, f"waits for {target._meta.label_lower} {value} (target of "
                                  f"{label}), not on this node yet")
    return found.pk
