from syncrouter.registry import site_sync_models

site_sync_models.register(["auth.user", "auth.group"])
