from django.contrib import admin, messages

from .exceptions import SyncError
from .models import (
    Conflict,
    Device,
    IncomingTransaction,
    OutgoingTransaction,
    Refusal,
    RefusedTransaction,
)
from .replay import conflicts
from .trust import atrest


class TransactionAdmin(admin.ModelAdmin):
    """Read-only: transactions are evidence, edited only by the pipeline."""

    list_display = ("producer", "sequence", "action", "tx_name", "tx_pk", "timestamp",
                    "is_error")
    list_filter = ("action", "is_error", "is_ignored", "producer", "tx_name")
    search_fields = ("id", "tx_pk", "producer", "error")
    ordering = ("producer", "sequence")
    exclude = ("tx",)
    readonly_fields = ("payload",)

    @admin.display(description="payload")
    def payload(self, obj) -> str:
        """The payload in plain for staff; its key id when this node cannot decrypt it."""
        try:
            return atrest.reveal(obj.tx, obj.id)
        except atrest.KeyUnavailable as exc:
            return f"encrypted (key {exc.key_id}; not in this node's keyring)"
        except atrest.Tampered as exc:
            return f"encrypted (key {exc.key_id}; does not decrypt: {exc})"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(OutgoingTransaction)
class OutgoingTransactionAdmin(TransactionAdmin):
    list_display = TransactionAdmin.list_display + ("is_consumed_middleman", "is_consumed_server")
    list_filter = TransactionAdmin.list_filter + ("is_consumed_middleman", "is_consumed_server")


@admin.register(IncomingTransaction)
class IncomingTransactionAdmin(TransactionAdmin):
    list_display = TransactionAdmin.list_display + ("is_consumed", "is_deferred")
    list_filter = TransactionAdmin.list_filter + ("is_consumed", "is_deferred")


@admin.register(Conflict)
class ConflictAdmin(admin.ModelAdmin):
    """The conflict ledger. Decisions go through ``conflicts.resolve()``, never a raw edit."""

    list_display = ("created", "model", "key", "producer", "policy", "resolution",
                    "resolved_by")
    list_filter = ("resolution", "policy", "model")
    search_fields = ("tx_id", "key", "producer")
    actions = ("keep_server_row", "apply_incoming_change")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_resolve_permission(self, request) -> bool:
        return request.user.has_perm("syncrouter.change_conflict")

    def _resolve(self, request, queryset, keep: str) -> None:
        for conflict in queryset:
            try:
                conflicts.resolve(conflict, keep=keep, by=request.user.get_username())
            except SyncError as exc:
                self.message_user(request, str(exc), messages.ERROR)
        self.message_user(request, "Decided; the next replay on this node acts on it.")

    @admin.action(description="Keep this node's row (discard the incoming change)",
                  permissions=["resolve"])
    def keep_server_row(self, request, queryset):
        self._resolve(request, queryset, "server")

    @admin.action(description="Apply the incoming change over this node's row",
                  permissions=["resolve"])
    def apply_incoming_change(self, request, queryset):
        self._resolve(request, queryset, "incoming")


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Refusal)
class RefusalAdmin(ReadOnlyAdmin):
    """What the next hop refused. Rows go by themselves when their transaction gets
    through; deleting one only forgets it (the next attempt records it again)."""

    list_display = ("last_refused", "target", "producer", "sequence", "held_back", "reason")
    list_filter = ("target", "producer")
    search_fields = ("tx_id", "producer", "reason")


@admin.register(Device)
class DeviceAdmin(ReadOnlyAdmin):
    """The device registry. Enrolment and revocation go through ``manage.py syncrouter keys``,
    which checks the key and the name."""

    list_display = ("name", "role", "fingerprint", "revoked_after", "created")
    list_filter = ("role",)
    search_fields = ("name", "fingerprint")


@admin.register(RefusedTransaction)
class RefusedTransactionAdmin(ReadOnlyAdmin):
    """Transactions a copy or import refused (bad signature, unknown or revoked device)."""

    list_display = ("producer", "sequence", "tx_name", "action", "reason", "source",
                    "received_datetime")
    list_filter = ("producer", "tx_name")
    search_fields = ("tx_id", "producer", "reason", "source")
