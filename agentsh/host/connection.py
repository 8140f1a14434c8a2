"""Where the `podman` and `docker` commands send their calls, read the way they read it, without running them.

Podman: CONTAINER_HOST; else the connection CONTAINER_CONNECTION names; else,
when containers.conf says `remote = true`, the default connection
(podman-connections.json's `Default`, else `active_service`), or the engine's
default socket when there is none; else the local engine. Docker: DOCKER_HOST,
DOCKER_CONTEXT, or the context `docker context use` made current.

On ab-exec's path: the common case (no connection) costs a few small file
reads and no parsing.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing costs milliseconds to import, on ab-exec's path
if TYPE_CHECKING:
    from typing import Any

_CONF_KEYS = (b"remote", b"active_service", b"[engine.service_destinations")


def _read(path: str) -> bytes | None:
    """A small file's bytes (None: missing, unreadable or over 1 MiB); one read sized by its length."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        size = os.fstat(fd).st_size
        return os.read(fd, size + 1) if size <= 1 << 20 else None
    except OSError:
        return None
    finally:
        os.close(fd)


def _config_home() -> str:
    return os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")


def _conf_dir(path: str) -> list[str]:
    try:
        return [os.path.join(path, n) for n in sorted(os.listdir(path)) if n.endswith(".conf")]
    except OSError:
        return []


def containers_conf_files() -> list[str]:
    """The containers.conf files Podman reads, in order (a later one's keys win).

    CONTAINERS_CONF names the only one; otherwise the system's, then (for a
    user other than root) the user's; CONTAINERS_CONF_OVERRIDE comes last.
    """
    only = os.environ.get("CONTAINERS_CONF")
    if only:
        files = [only]
    else:
        files = ["/usr/share/containers/containers.conf", "/etc/containers/containers.conf",
                 *_conf_dir("/etc/containers/containers.conf.d")]
        if os.geteuid() != 0:
            user = os.path.join(_config_home(), "containers")
            files += [os.path.join(user, "containers.conf"), *_conf_dir(os.path.join(user, "containers.conf.d"))]
    override = os.environ.get("CONTAINERS_CONF_OVERRIDE")
    return files + [override] if override else files


def _sets_a_connection_key(data: bytes) -> bool:
    """Whether a containers.conf sets `remote`, `active_service` or a destination (comments do not count)."""
    for key in _CONF_KEYS:  # (Debian's 700-line file of comments names them: no split into lines)
        at = data.find(key)
        while at != -1:
            if not data[data.rfind(b"\n", 0, at) + 1:at].strip():
                return True
            at = data.find(key, at + 1)
    return False


def _engine_settings() -> dict[str, Any]:
    """The merged `[engine]` keys that choose a connection: remote, active_service, service_destinations."""
    merged: dict[str, Any] = {"service_destinations": {}}
    for path in containers_conf_files():
        data = _read(path)
        if not data or not _sets_a_connection_key(data):
            continue
        import tomllib  # lazy: only for a containers.conf that names a connection

        try:
            table = tomllib.loads(data.decode()).get("engine")
        except (ValueError, UnicodeDecodeError):  # podman itself refuses the file, with its own message
            continue
        if not isinstance(table, dict):
            continue
        for key in ("remote", "active_service"):
            if key in table:
                merged[key] = table[key]
        destinations = table.get("service_destinations")
        if isinstance(destinations, dict):
            merged["service_destinations"].update(destinations)
    return merged


def _connections_json() -> tuple[str | None, dict[str, Any]]:
    """Podman 5's podman-connections.json: (the default connection's name or None, {name: {"URI": ...}})."""
    data = _read(os.path.join(_config_home(), "containers", "podman-connections.json"))
    if not data:
        return None, {}
    import json  # lazy: only where Podman 5 has recorded connections

    try:
        table = json.loads(data).get("Connection") or {}
        default, connections = table.get("Default"), table.get("Connections") or {}
    except (ValueError, AttributeError):
        return None, {}
    return (default if isinstance(default, str) and default else None,
            connections if isinstance(connections, dict) else {})


def default_podman_socket() -> str:
    """The socket a remote podman with no connection goes to: root's service, or the user's."""
    if os.geteuid() == 0:
        return "unix:///run/podman/podman.sock"
    runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.geteuid()}"
    return f"unix://{runtime}/podman/podman.sock"


def podman_connection() -> tuple[str, str] | None:
    """(how it is named, its URI, "" when unknown) of the connection `podman` goes through, else None.

    CONTAINER_HOST is not looked at here (it is the URI itself).
    """
    name = os.environ.get("CONTAINER_CONNECTION")
    settings = None if name else _engine_settings()
    if settings is not None and settings.get("remote") is not True:
        return None
    default, connections = _connections_json()
    if not name:
        name = default or settings.get("active_service")
        if not isinstance(name, str) or not name:
            return "the default podman service", default_podman_socket()
    found = connections.get(name)
    uri = found.get("URI") if isinstance(found, dict) else None
    if not isinstance(uri, str):
        destination = ((settings or _engine_settings())["service_destinations"]).get(name)
        uri = destination.get("uri") if isinstance(destination, dict) else None
    return f"connection {name}", uri if isinstance(uri, str) else ""


def docker_context() -> str | None:
    """The context `docker context use` made current (DOCKER_CONFIG or ~/.docker), or None."""
    data = _read(os.path.join(os.environ.get("DOCKER_CONFIG") or os.path.expanduser("~/.docker"), "config.json"))
    if not data or b"currentContext" not in data:  # the common case: no json import on the hot path
        return None
    import json  # lazy: only where a context was chosen

    try:
        value = json.loads(data).get("currentContext")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) and value else None
