from ..exceptions import SyncError
from .conflict import Conflict
from .mixins import SyncModelMixin
from .refusal import Refusal
from .transactions import IncomingTransaction, OutgoingTransaction, ProducerClock

__all__ = ["Conflict", "IncomingTransaction", "OutgoingTransaction", "ProducerClock", "Refusal",
           "SyncError", "SyncModelMixin"]
