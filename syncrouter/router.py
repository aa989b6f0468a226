"""SyncRouter: every read and write goes to this node's own database alias.

Sticky: a hint that carries an instance routes to the alias the instance came
from, so related managers on rows loaded from ``server`` and
``objects.using("server").create(fk=obj)`` stay on ``server``.
"""
from django.conf import settings

from . import conf


class SyncRouter:
    def _route(self, model, **hints):
        instance = hints.get("instance")
        if instance is not None and instance._state.db:
            return instance._state.db
        return conf.local_alias()

    db_for_read = _route
    db_for_write = _route

    def allow_relation(self, obj1, obj2, **hints):
        """Rows relate only within one database; unsaved rows defer to other routers."""
        if obj1._state.db and obj2._state.db:
            return obj1._state.db == obj2._state.db
        return None

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        """Every configured alias gets every table; an empty ``default`` ({}) gets none."""
        if not settings.DATABASES.get(db, {}).get("ENGINE"):
            return False
        return None
