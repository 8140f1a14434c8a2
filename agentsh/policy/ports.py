"""Published ports: Docker's `-p [IP:][HOST:]CONTAINER[/PROTO]`, validated.

Ports bind to 127.0.0.1 unless an address is given, so a dev server in the
sandbox is not exposed to the network by accident. A port given without a
host side gets a stable host port derived from (project, container port,
protocol): parallel worktrees of one repo never collide, and the number
survives restarts.
"""

from __future__ import annotations

import re

from agentsh.base.digest import sha256_hex
from agentsh.base.errors import UsageError

TYPE_CHECKING = False  # typing stays off the hot paths
if TYPE_CHECKING:
    from collections.abc import Iterable

DEFAULT_BIND = "127.0.0.1"
STABLE_RANGE = (20000, 29999)
PROTOCOLS = ("tcp", "udp", "sctp")
_SPEC = re.compile(r"(?:(?P<ip>\[[0-9a-fA-F:.]+\]|[0-9]+(?:\.[0-9]+){3}):)?(?:(?P<host>[0-9]*):)?(?P<container>[0-9]+)"
                   r"(?:/(?P<proto>[a-z]+))?\Z")


def _port(text: str, spec: str) -> int:
    value = int(text)
    if not 1 <= value <= 65535:
        raise UsageError(f"port {value} in {spec!r} is out of range (1-65535)")
    return value


def stable_host_port(project_root: str, container_port: int, proto: str = "tcp") -> int:
    low, high = STABLE_RANGE
    return low + int(sha256_hex(f"{project_root}\0{container_port}/{proto}")[:8], 16) % (high - low + 1)


def parse(spec: str, project_root: str) -> dict:
    """One -p value -> {"ip", "host", "container", "proto"} (all filled in)."""
    if not isinstance(spec, (str, int)) or isinstance(spec, bool):
        raise UsageError(f"port {spec!r} must be a string like \"8080:80\" or a port number")
    text = str(spec).strip()
    m = _SPEC.match(text)
    if not m:
        raise UsageError(f"port {spec!r} is not [IP:][HOST:]CONTAINER[/PROTO] (e.g. 8080:80, 127.0.0.1:5173:5173, 3000)")
    ip = m["ip"] or DEFAULT_BIND
    if m["ip"]:
        import ipaddress  # lazy: only for a port bound to an address

        try:
            ipaddress.ip_address(ip.strip("[]"))
        except ValueError:
            raise UsageError(f"port {spec!r}: {ip!r} is not an IP address") from None
    proto = m["proto"] or "tcp"
    if proto not in PROTOCOLS:
        raise UsageError(f"port {spec!r}: protocol must be one of {', '.join(PROTOCOLS)}")
    container = _port(m["container"], spec)
    host = _port(m["host"], spec) if m["host"] else stable_host_port(project_root, container, proto)
    return {"ip": ip, "host": host, "container": container, "proto": proto}


def publish_args(specs: Iterable[str], project_root: str) -> list[str]:
    """`-p` arguments for the engine, in a stable order, duplicates refused."""
    seen = {}
    args = []
    for spec in specs:
        p = parse(spec, project_root)
        key = (p["ip"], p["host"], p["proto"])
        if key in seen:
            raise UsageError(f"ports {seen[key]!r} and {spec!r} both publish host port {p['host']}/{p['proto']}")
        seen[key] = spec
        args += ["-p", f"{p['ip']}:{p['host']}:{p['container']}/{p['proto']}"]
    return args
