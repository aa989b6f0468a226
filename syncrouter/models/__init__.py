from ..exceptions import SyncError
from .conflict import Conflict
from .mixins import SyncModelMixin
from .refusal import Refusal
from .transactions import IncomingTransaction, OutgoingTransaction, ProducerClock
from .trust import Device, RefusedTransaction

__all__ = ["Conflict", "Device", "IncomingTransaction", "OutgoingTransaction", "ProducerClock",
           "Refusal", "RefusedTransaction", "SyncError", "SyncModelMixin"]
