"""The app's schema, as in ``tests/edgeapp/migrations`` (this package adds a data migration)."""
from importlib import import_module

Migration = import_module("tests.edgeapp.migrations.0001_initial").Migration
