"""Signals sent around the writes replay makes.

Replay writes in batches (COPY or ``executemany``), which send no ``pre_save``
or ``post_save``; these two signals stand in for them. A batch builds model
instances only for a model that has receivers, and what a ``pre_replay``
receiver changes on them is what gets written. Deletes send none of these
(Django's delete signals go as usual). Both are sent inside the
database transaction of the write, so a receiver that raises rolls the batch
back and its transactions stay pending. A model that needs its own ``save()``
on every replayed object sets ``sync_replay_save = True``; replay then saves
each object (and still sends these signals, with one instance).

Arguments: ``sender`` (the model class), ``alias`` (the replaying database),
``instances`` (the model instances written or about to be written) and
``transactions`` (their ``IncomingTransaction`` rows, in the same order).
"""
from django.dispatch import Signal

pre_replay = Signal()
post_replay = Signal()
