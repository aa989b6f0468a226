"""syncrouter: capture, transfer and replay of Django model changes between databases.

The pipeline, one package per stage:
capture (record every write) -> outbox (OutgoingTransaction) -> transfer (copy, files)
-> inbox (IncomingTransaction) -> replay (apply by natural key).
"""

__version__ = "0.1.0"
