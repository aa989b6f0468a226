"""Who is replaying: ``deserialize(custom_device=...)`` made into a node.

``custom_device`` comes in two shapes. syncrouter's is a name, or an object
with ``name`` and ``role`` (one of ``conf.ROLES``). The older tools passed
edc-device's device object instead: ``device_id``, ``is_server`` and
``device_role`` ("Client", "Middleman", "NodeServer", "CentralServer"), no
name. They replayed only on a server, and so does syncrouter for such an
object: one whose ``is_server`` is false (or whose role is not a server's)
raises ``ReplayRefused``. An object of neither shape is an error: a device
whose role went unread would let any node replay.
"""
from __future__ import annotations

from .. import conf
from ..exceptions import ReplayRefused, SyncError

#: edc-device's roles, as syncrouter roles.
LEGACY_ROLES = {"client": "client", "middleman": "middleman", "nodeserver": "community",
                "server": "community", "centralserver": "central"}
#: Attributes that mark an edc-device object.
LEGACY_ATTRIBUTES = ("is_server", "device_role", "device_id")
SERVER_ROLES = ("community", "central")


def consumer_node(custom_device, alias: str) -> conf.Node:
    """The node doing the replay on ``alias``: ``custom_device`` if given, else the node
    configured for ``alias``. Raises ``SyncError`` for a device it cannot read and
    ``ReplayRefused`` for an older tools' device that is not a server."""
    node = conf.node_for_alias(alias)
    if custom_device is None:
        return node
    if isinstance(custom_device, str):
        if not custom_device:
            raise SyncError("deserialize(custom_device='') names no node.")
        return conf.Node(alias, custom_device, node.role)
    if any(hasattr(custom_device, name) for name in LEGACY_ATTRIBUTES):
        return _legacy_device(custom_device, node)
    name = getattr(custom_device, "name", None)
    if not isinstance(name, str) or not name:
        raise SyncError(
            f"deserialize(custom_device={custom_device!r}): a device is a node name, an object "
            "with 'name' and 'role', or an older tools' device with 'is_server', "
            "'device_role' and 'device_id'; this is none of them.")
    role = getattr(custom_device, "role", node.role)
    if role not in conf.ROLES:
        raise SyncError(f"deserialize(custom_device=...): device {name!r} has the role {role!r}; "
                        f"expected one of {', '.join(conf.ROLES)}.")
    return conf.Node(alias, name, role)


def _legacy_device(device, node: conf.Node) -> conf.Node:
    """An edc-device object as a node: the alias's configured name (the older tools
    recorded ``<hostname>-<alias>``, the default name) and the device's role."""
    device_id = getattr(device, "device_id", None)
    described = f"device {device_id!r}"
    role_name = getattr(device, "device_role", None) or getattr(device, "role", None)
    if callable(role_name):  # old edc-device: device_role(device_id)
        role_name = role_name(device_id)
    role = None
    if role_name is not None:
        role = LEGACY_ROLES.get(str(role_name).replace("_", "").lower(),
                                role_name if role_name in conf.ROLES else None)
        if role is None:
            raise SyncError(f"deserialize(custom_device=...): {described} has the device_role "
                            f"{role_name!r}; expected one of Client, Middleman, NodeServer, "
                            f"CentralServer (or {', '.join(conf.ROLES)}).")
    is_server = getattr(device, "is_server", None)
    if callable(is_server):
        is_server = is_server()
    if is_server is None:
        if role is None:
            raise SyncError(f"deserialize(custom_device=...): {described} says neither "
                            "is_server nor device_role, so whether it may replay is unknown.")
        is_server = role in SERVER_ROLES
    if not isinstance(is_server, bool):
        raise SyncError(f"deserialize(custom_device=...): {described} has is_server="
                        f"{is_server!r}; expected True or False.")
    if role is None:
        role = SERVER_ROLES[0] if is_server else "client"
    if is_server != (role in SERVER_ROLES):
        raise SyncError(f"deserialize(custom_device=...): {described} says is_server="
                        f"{is_server} but device_role {role_name!r}; they disagree.")
    if not is_server:
        raise ReplayRefused(
            f"Node {node.name!r} (alias {node.alias!r}) was given {described} with device_role "
            f"{role_name!r}, which is not a server (is_server=False); the older tools' devices "
            "replay only on a server. A middleman that replays for inspection passes its "
            "node name, or an object with name and role, instead.")
    return conf.Node(node.alias, node.name, role)
