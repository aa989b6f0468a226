"""What a model needs to be found on another node: its natural key."""
from __future__ import annotations

from django.db import models

from .exceptions import SyncError


def missing_natural_key_parts(model: type[models.Model]) -> list[str]:
    """What ``model`` lacks to be found by natural key on another node."""
    missing = []
    if not callable(getattr(model, "natural_key", None)):
        missing.append(f"the model method {model.__name__}.natural_key()")
    if not callable(getattr(model._default_manager, "get_by_natural_key", None)):
        missing.append(
            f"the manager method {model.__name__}.{model._default_manager.name}.get_by_natural_key()"
        )
    return missing


def require_natural_key(model: type[models.Model]) -> None:
    missing = missing_natural_key_parts(model)
    if missing:
        raise SyncError(
            f"{model._meta.label_lower} cannot be synchronised: it needs {' and '.join(missing)}."
        )
