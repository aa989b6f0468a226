"""A data migration as projects write them: historical models, every queryset write
path, and a RunSQL. ``tests/settings_local.py`` selects this package."""
from django.db import migrations


def forwards(apps, schema_editor):
    village = apps.get_model("edgeapp", "Village").objects.using(schema_editor.connection.alias)
    village.create(name="Kanye", district="Southern")
    village.bulk_create([village.model(name="Mochudi", district="Kgatleng"),
                         village.model(name="Gone", district="-")])
    village.filter(name="Kanye").update(district="South East")
    village.filter(name="Gone").delete()


def backwards(apps, schema_editor):
    apps.get_model("edgeapp", "Village").objects.using(schema_editor.connection.alias).all() \
        .delete()


class Migration(migrations.Migration):
    dependencies = [("edgeapp", "0001_initial")]
    operations = [
        migrations.RunPython(forwards, backwards),
        migrations.RunSQL("UPDATE edgeapp_village SET district = 'Kgatleng District' "
                          "WHERE name = 'Mochudi'", migrations.RunSQL.noop),
    ]
