class SyncError(Exception):
    """A model, setting or transaction cannot be synchronised as it stands.

    The message always names the model, field, alias or transaction concerned.
    """


class AlreadyRegistered(SyncError):
    """A model was registered twice with ``site_sync_models``."""


class ReplayRefused(SyncError):
    """This node may not replay the given transactions (wrong role, own rows)."""
