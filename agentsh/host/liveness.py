"""Is that very process still running? Answered from /proc, without the engine.

A sandbox's init process (and the egress proxy) is named by its pid plus its
start time, so a reused pid never passes for it. ab-exec asks this before its
one engine call: a sandbox that is not running is started first, instead of
after a failed exec that may already have swallowed the caller's stdin. The
answer for a sandbox lives in `sandboxes/<name>.pid` ("PID START"), plain text
so that reading it needs no json.
"""

from __future__ import annotations

from agentsh.base import layout
from agentsh.base.state import atomic_write

TYPE_CHECKING = False  # typing stays off the hot paths
if TYPE_CHECKING:
    from agentsh.base.state import Store


def start_time(pid: int) -> int | None:
    """A process's start time (clock ticks since boot) from /proc, or None."""
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as f:
            stat = f.read()
        return int(stat[stat.rindex(b")") + 2:].split()[19])
    except (OSError, ValueError, IndexError, TypeError):
        return None


def alive(pid: int | None, start: int | None) -> bool:
    """Whether process `pid` runs and started at `start`: the same process, not a reused pid."""
    return bool(pid and start) and start_time(pid) == start


def is_container_process(pid: int | None, container_id: str) -> bool:
    """Whether process `pid` of this host is the init of container `container_id` (its cgroup names the id).

    For an engine reached through a socket (CONTAINER_HOST, DOCKER_HOST, a
    context): its containers may run on this very host (a service on a local
    socket) or on another machine, where a pid means nothing here. Podman's
    and Docker's cgroups carry the container's full id (libpod-ID, docker/ID).
    """
    if not pid or len(container_id) < 32:
        return False
    try:
        with open(f"/proc/{int(pid)}/cgroup") as f:
            return container_id in f.read()
    except (OSError, ValueError):
        return False


def pid_file(store: Store, name: str) -> str:
    return store.path(layout.sandbox_pid_file(name))


def remember(store: Store, name: str, pid: int) -> None:
    """Record a sandbox's init process (call under the store lock)."""
    atomic_write(pid_file(store, name), f"{pid} {start_time(pid)}\n".encode())


def sandbox_running(store: Store, name: str) -> bool:
    """True when the recorded init process of sandbox `name` still runs (False: unknown or gone)."""
    try:
        with open(pid_file(store, name), "rb") as f:
            pid, start = f.read().split()
        return alive(int(pid), int(start))
    except (OSError, ValueError):
        return False


def _shell_file(store: Store, name: str) -> str:
    return store.path(layout.sandbox_shell_file(name))


def _identity(store: Store, name: str) -> bytes | None:
    try:
        with open(pid_file(store, name), "rb") as f:
            return f.read().strip()
    except OSError:
        return None


def shell_hint(store: Store, name: str) -> str | None:
    """The shell a previous exec fell back to in this very sandbox (same init process), or None."""
    identity = _identity(store, name)
    try:
        with open(_shell_file(store, name), "rb") as f:
            recorded, _, shell = f.read().strip().rpartition(b" ")
    except OSError:
        return None
    return shell.decode() if identity and recorded == identity else None


def remember_shell(store: Store, name: str, shell: str) -> None:
    """Remember that this sandbox lacks the preferred shell (until it is recreated)."""
    identity = _identity(store, name)
    if identity:
        atomic_write(_shell_file(store, name), identity + b" " + shell.encode() + b"\n")
