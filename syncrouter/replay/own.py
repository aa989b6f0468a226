"""A node's own transactions: received rows that replay leaves untouched.

"Own" is decided by node name, the ``producer`` every transaction carries: the
name of the replaying node (its alias's name in ``SYNCROUTER_NODES``, or the
``custom_device`` given to ``deserialize``). Not by the machine's hostname:
laptops cloned from one image share a hostname, and a server and a laptop may
too, and every row would then look like the server's own. The ``hostname``
column stays informative.

A node receiving its own transactions is misconfigured (two nodes share a
name) or looped, so the command that replays says so loudly and exits 1.
"""
from __future__ import annotations

from .. import conf

#: The text of the ``skipped`` message of an own transaction.
SKIPPED = ("this node's own transaction (its producer is this node's name); left untouched "
           "(deserialize(check_hostname=False) replays it)")


def is_own(row, node: conf.Node) -> bool:
    return row.producer == node.name
