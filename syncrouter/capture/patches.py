"""The Django methods capture wraps, and the parameters each wrapper reads.

The wrappers (``hooks``, ``queryset``, ``local``) pass every argument they do
not read on to Django unchanged, so a keyword a Django release adds reaches
Django. The parameters they do read must still be there under the same names:
``shape_problems`` compares the names below with the running Django's
signatures, and ``manage.py check`` reports a difference (``syncrouter.E009``)
before the first write meets it.
"""
from __future__ import annotations

import inspect

import django
from django.utils.module_loading import import_string

#: Dotted path of each wrapped Django method -> the parameters its wrapper reads.
READ_PARAMETERS: dict[str, tuple[str, ...]] = {
    "django.db.models.base.Model.save_base": ("raw", "force_insert", "force_update", "using"),
    "django.db.models.query.QuerySet.bulk_create": (
        "objs", "batch_size", "ignore_conflicts", "update_conflicts", "update_fields",
        "unique_fields"),
    "django.db.models.query.QuerySet.bulk_update": ("objs", "fields", "batch_size"),
    "django.db.models.query.QuerySet.update": (),
    "django.db.models.deletion.Collector.delete": (),
    "django.db.backends.base.operations.BaseDatabaseOperations.execute_sql_flush": (),
    "django.core.management.commands.loaddata.Command.loaddata": (),
    "django.core.management.commands.loaddata.Command.save_obj": ("obj",),
    "django.db.migrations.migration.Migration.apply": (
        "project_state", "schema_editor", "collect_sql"),
    "django.db.migrations.migration.Migration.unapply": (
        "project_state", "schema_editor", "collect_sql"),
    "django.db.backends.base.creation.BaseDatabaseCreation.deserialize_db_from_string": (),
}


def _django_method(path: str):
    """The method at ``path`` as Django defines it (behind our wrapper, if installed)."""
    owner_path, name = path.rsplit(".", 1)
    method = getattr(import_string(owner_path), name)
    return getattr(method, "syncrouter_original", method)


def shape_problems() -> list[str]:
    """One sentence per wrapped method whose parameters are not what its wrapper reads."""
    problems = []
    for path, wanted in READ_PARAMETERS.items():
        parameters = inspect.signature(_django_method(path)).parameters
        missing = [name for name in wanted if name not in parameters]
        if missing:
            problems.append(
                f"{path} in Django {django.get_version()} has no parameter "
                f"{', '.join(repr(name) for name in missing)}, which syncrouter's capture "
                f"wrapper reads: its signature is now {path.rsplit('.', 1)[1]}"
                f"{inspect.signature(_django_method(path))}. This Django release is not "
                "supported by this syncrouter version; writes of registered models could "
                "go uncaptured or fail.")
    return problems
