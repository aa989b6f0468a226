"""Compare what two nodes hold, model by model, independently of local primary keys."""
import hashlib

from syncrouter import serialization as ser
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
