"""The Django methods capture wraps: arguments the wrappers do not read reach Django
unchanged, and ``manage.py check`` says when a Django release changed what they read."""
import inspect

import django
import pytest
from django.core import checks
from django.db.models import QuerySet
from django.db.models.deletion import Collector
from hypothesis import given, strategies as st

from syncrouter.capture import patches, queryset
from syncrouter.checks import check_patched_django
from syncrouter.models import OutgoingTransaction
from tests.testapp.models import Household

WRAPPERS_THAT_READ = sorted((path, name) for path, names in patches.READ_PARAMETERS.items()
                            for name in names)


def test_the_running_django_has_every_parameter_the_wrappers_read():
    assert patches.shape_problems() == []
    assert check_patched_django() == []


def _without(function, name: str):
    """A stand-in for ``function`` whose signature lacks the parameter ``name``."""
    signature = inspect.signature(function)

    def changed(*args, **kwargs):
        raise AssertionError("not called by the check")

    changed.__signature__ = signature.replace(
        parameters=[p for p in signature.parameters.values() if p.name != name])
    return changed


@given(st.sampled_from(WRAPPERS_THAT_READ))
def test_a_parameter_gone_from_django_is_reported_by_name(target):
    path, name = target
    owner_path, method = path.rsplit(".", 1)
    owner = patches.import_string(owner_path)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(owner, method, _without(patches._django_method(path), name))
        errors = check_patched_django()
    assert [error.id for error in errors] == ["syncrouter.E009"]
    assert errors[0].level == checks.ERROR
    assert path in errors[0].msg and repr(name) in errors[0].msg
    assert f"Django {django.get_version()}" in errors[0].msg


def test_the_check_looks_behind_the_installed_wrapper(monkeypatch):
    """The wrapper takes ``**kwargs``: the check reads the method it wraps."""
    wrapper = QuerySet.bulk_create
    assert wrapper.syncrouter_original is not wrapper
    monkeypatch.setattr(wrapper, "syncrouter_original",
                        _without(wrapper.syncrouter_original, "unique_fields"))
    assert "'unique_fields'" in check_patched_django()[0].msg


def _recording(original, seen: list):
    """Django's method as a later release might have it: one keyword more (other
    callers, such as the outbox's clock row, do not pass it)."""
    def newer(self, *args, new_option=None, **kwargs):
        if new_option is not None:
            seen.append(new_option)
        return original(self, *args, **kwargs)
    return newer


def test_bulk_methods_pass_on_a_keyword_they_do_not_know(nodes, monkeypatch):
    seen: list = []
    for _, name, capture, check in queryset._TARGETS:
        if name not in ("bulk_create", "bulk_update"):
            continue
        original = getattr(QuerySet, name).syncrouter_original
        monkeypatch.setattr(QuerySet, name, queryset._wrap_queryset_method(
            _recording(original, seen), capture, check))
    households = [Household(household_identifier=f"P{n}", village="Mochudi") for n in range(3)]
    Household.objects.using(nodes.client).bulk_create(households, new_option="create")
    for household in households:
        household.village = "Molepolole"
    Household.objects.using(nodes.client).bulk_update(households, ["village"],
                                                      new_option="update")
    assert seen == ["create", "update"]
    actions = OutgoingTransaction.objects.using(nodes.client).filter(
        tx_name="testapp.household").values_list("action", flat=True)
    assert sorted(actions) == ["I"] * 3 + ["U"] * 3


def test_collector_delete_passes_on_arguments(nodes, monkeypatch):
    seen: list = []
    original = Collector.delete.syncrouter_original
    monkeypatch.setattr(Collector, "delete",
                        queryset._wrap_collector_delete(_recording(original, seen)))
    household = Household.objects.using(nodes.client).create(household_identifier="P9",
                                                             village="Kanye")
    collector = Collector(using=nodes.client)
    collector.collect([household])
    collector.delete(new_option="delete")
    assert seen == ["delete"]
    assert OutgoingTransaction.objects.using(nodes.client).filter(
        tx_name="testapp.household", action="D").count() == 1
