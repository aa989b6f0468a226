from django.contrib import admin

from .models import Conflict, IncomingTransaction, OutgoingTransaction


class TransactionAdmin(admin.ModelAdmin):
    """Read-only: transactions are evidence, edited only by the pipeline."""

    list_display = ("producer", "sequence", "action", "tx_name", "tx_pk", "timestamp",
                    "is_error")
    list_filter = ("action", "is_error", "is_ignored", "producer", "tx_name")
    search_fields = ("id", "tx_pk", "producer", "error")
    ordering = ("producer", "sequence")

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
    list_display = ("created", "model", "key", "producer", "policy", "resolution")
    list_filter = ("resolution", "policy", "model")
    readonly_fields = [f.name for f in Conflict._meta.fields if f.name != "resolution"]
