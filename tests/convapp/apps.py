from django.apps import AppConfig


class ConvAppConfig(AppConfig):
    name = "tests.convapp"
    label = "convapp"
    default_auto_field = "django.db.models.BigAutoField"
