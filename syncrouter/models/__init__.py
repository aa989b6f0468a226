from ..exceptions import SyncError
from .conflict import Conflict
from .mixins import SyncModelMixin
from .transactions import IncomingTransaction, OutgoingTransaction, ProducerClock
from .trust import Device, RefusedTransaction

__all__ = ["Conflict", "Device", "IncomingTransaction", "OutgoingTransaction", "ProducerClock",
           "RefusedTransaction", "SyncError", "SyncModelMixin"]
