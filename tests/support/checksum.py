"""Compare what two nodes hold, model by model, independently of local primary keys."""
import hashlib

from syncrouter import serialization as ser
from syncrouter.models import IncomingTransaction, OutgoingTransaction
from syncrouter.registry import site_sync_models


def rows(model, alias) -> list[str]:
    """Each row as it travels (natural FKs, no local auto pk) plus its M2M natural keys."""
    out = []
    for obj in model._base_manager.using(alias).all():
        row = ser.row_fields(obj)
        for field in model._meta.many_to_many:
            row[field.name] = sorted(ser.natural_key_of(t) for t in getattr(obj, field.name).all())
        out.append(ser.dumps(row))
    return sorted(out)


def table_checksum(model, alias) -> tuple[int, str]:
    data = rows(model, alias)
    return len(data), hashlib.sha256("\n".join(data).encode()).hexdigest()


def node_checksums(alias) -> dict:
    return {m._meta.label_lower: table_checksum(m, alias) for m in site_sync_models}


def sync(nodes) -> list:
    """Copy the client's outbox to the server and replay it there; return the messages."""
    OutgoingTransaction.objects.using(nodes.client).filter(
        is_consumed_server=False).copy_to_incoming_transaction(nodes.server)
    return IncomingTransaction.objects.using(nodes.server).filter(
        is_consumed=False).deserialize(check_hostname=False)


def table_state(alias: str) -> dict:
    """label -> sorted rows as they travel (natural FKs, M2M natural keys) on ``alias``."""
    return {model._meta.label_lower: rows(model, alias) for model in site_sync_models}


def assert_replayed_equal(nodes) -> list:
    messages = sync(nodes)
    bad = [m for m in messages if m.outcome in ("error", "deferred", "conflict")]
    assert not bad, bad[:5]
    client, server = table_state(nodes.client), table_state(nodes.server)
    for label in client:
        assert client[label] == server[label], label
    return messages
