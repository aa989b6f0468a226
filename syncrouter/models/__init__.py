from ..exceptions import SyncError
from .conflict import Conflict
from .mixins import SyncModelMixin
from .transactions import IncomingTransaction, OutgoingTransaction, ProducerClock

__all__ = ["Conflict", "IncomingTransaction", "OutgoingTransaction", "ProducerClock", "SyncError",
           "SyncModelMixin"]
