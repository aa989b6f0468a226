"""``django.db.models`` as the seeds were written for it (Django 1.x): a relation
without ``on_delete`` cascades, as it did before Django 2.0 made it required."""
from django.db import models as _models
from django.db.models import *  # noqa: F401,F403


def ForeignKey(to, on_delete=_models.CASCADE, **kwargs):  # noqa: N802
    return _models.ForeignKey(to, on_delete, **kwargs)


def OneToOneField(to, on_delete=_models.CASCADE, **kwargs):  # noqa: N802
    return _models.OneToOneField(to, on_delete, **kwargs)
