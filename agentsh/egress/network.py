"""The egress proxy's lifecycle: its records, the sandbox's network flags, attaching a proxy.

In "allow" and "learn" the sandbox runs with `--network=none`: its only
interface is loopback, so a program that ignores HTTP_PROXY reaches nothing.
The proxy is a host process (agentsh.egress.proxy); `attach` plants its listening
socket on 127.0.0.1:PROXY_PORT *inside* the sandbox's network namespace
(one short helper enters the namespace, makes the sockets, sets the
steering route and rule, and hands the fds back: the proxy's, the
transparent listener's and the DNS answerer's), while the proxy itself
keeps the host's network for the connections it allows. See docs/architecture.md, "Network policy", for why.

The policy the proxy enforces lives in two state records it re-reads when
their mtime changes: `net/<sandbox>.json` (written by `ab-up` from the config)
and `net/allow/<project key>.json` (hosts added with `ab-net allow`), so an
allow takes effect on the next request without a restart.
"""

from __future__ import annotations

import os
import sys

from agentsh.base import layout
from agentsh.base.errors import AgentshError
from agentsh.host.liveness import alive  # the proxy's identity, like a sandbox's
from agentsh.host.liveness import start_time as _start_time
from agentsh.policy.lockdown import is_locked
from agentsh.policy.rules import NONE, PROXIED, Policy, config_patterns, parse_rule

TYPE_CHECKING = False  # typing stays off the hot paths
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

    from agentsh.base.state import Store
    from agentsh.host.engine import Engine
    from agentsh.host.project import Project

PROXY_PORT = 3128
PROXY_URL = f"http://127.0.0.1:{PROXY_PORT}"
NO_PROXY = "localhost,127.0.0.1,::1"
STEER_PORT_OFFSET = 1  # the transparent listener: PROXY_PORT + 1 (3129)
DNS_PORT = 53  # the DNS answerer, UDP and TCP, on the sandbox's loopback
# The sandbox's resolver: the proxy's DNS answerer on its loopback (egress.dns); and a hosts file
# naming only localhost (the engine's copy of the host's /etc/hosts would send its names around the answerer).
RESOLV_CONF = os.path.join(os.path.dirname(os.path.abspath(__file__)), "resolv.conf")  # no syscall at import
HOSTS = os.path.join(os.path.dirname(RESOLV_CONF), "hosts")


# -- records ------------------------------------------------------------------


def proxy_rel(sandbox_name: str) -> str:
    return layout.proxy_record(sandbox_name)


def extra_rel(project: Project) -> str:
    return layout.net_allow_record(project.key)


def audit_rel(sandbox_name: str) -> str:
    return layout.audit_log(sandbox_name)


def added(store: Store, project: Project) -> list[str]:
    """Patterns `ab-net allow` added for the project."""
    return list((store.read(extra_rel(project)) or {}).get("allow", []))


def allow_host(store: Store, project: Project, pattern: str) -> bool:
    """Add a pattern to the project's allowlist; returns whether it was new.

    The running proxy reads the record before its next request: no restart.
    """
    try:
        parse_rule(pattern)
    except ValueError as e:
        raise AgentshError(f"cannot allow {pattern!r}: {e}", "give HOST, *.DOMAIN, HOST:PORT or an IP address")
    with store.lock():
        current = added(store, project)
        if pattern in current:
            return False
        store.write(extra_rel(project), {"project": project.root, "allow": current + [pattern]})
    return True


def policy_for(cfg: Mapping[str, Any], store: Store, project: Project) -> Policy:
    """The policy a project's proxy enforces right now (config + ab-net additions)."""
    return Policy(cfg["network"]["mode"], config_patterns(cfg) + added(store, project))


# -- the container side -----------------------------------------------------------


def run_args(cfg: Mapping[str, Any]) -> tuple[list[str], dict[str, str]]:
    """`run` flags and environment for the config's network mode."""
    mode = cfg["network"]["mode"]
    if mode == NONE:
        return ["--network=none"], {}
    if mode in PROXIED:
        env = {}
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
            env[name] = env[name.lower()] = PROXY_URL
        env["NO_PROXY"] = env["no_proxy"] = NO_PROXY
        return ["--network=none", "-v", f"{RESOLV_CONF}:/etc/resolv.conf:ro", "-v", f"{HOSTS}:/etc/hosts:ro"], env
    return [], {}


# -- the proxy's lifecycle ---------------------------------------------------------------


def attach(project: Project, cfg: Mapping[str, Any], engine: Engine, store: Store,
           notify: Callable[[str], object] | None = None) -> dict[str, Any] | None:
    """Make sure the sandbox's egress proxy runs with the current policy.

    Cheap when it does (one record read, two /proc reads, no engine call);
    otherwise: one inspect for the sandbox's pid, one helper to plant the
    listener, one detached proxy process.
    """
    if cfg["network"]["mode"] not in PROXIED:
        return None
    rel = proxy_rel(project.sandbox)
    record = store.read(rel) or {}
    want = {"mode": cfg["network"]["mode"], "allow": config_patterns(cfg), "lockdown": is_locked(cfg)}
    running = alive(record.get("pid"), record.get("pid_start")) and alive(record.get("sandbox_pid"),
                                                                          record.get("sandbox_start"))
    if running:
        if any(record.get(k) != v for k, v in want.items()):
            store.write(rel, {**record, **want})  # the proxy re-reads it on its next request
        return record
    if alive(record.get("pid"), record.get("pid_start")):
        _terminate(record["pid"])
    info = engine.inspect(project.sandbox) or {}
    sandbox_pid = (info.get("State") or {}).get("Pid")
    if not sandbox_pid:
        raise AgentshError(f"sandbox {project.sandbox} is not running, so its egress proxy cannot start",
                           "run 'ab-up' again")
    record = {
        "sandbox": project.sandbox, "project": project.root, **want,
        "sandbox_pid": sandbox_pid, "sandbox_start": _start_time(sandbox_pid),
        "extra": extra_rel(project), "log": audit_rel(project.sandbox), "port": PROXY_PORT,
        "hostname": project.slug,  # the sandbox's own name: the DNS answerer says 127.0.0.1
    }
    store.write(rel, record)
    fds, problem = plant_listener(engine, sandbox_pid, PROXY_PORT)
    try:
        pid = _spawn_proxy(store, rel, fds)
    finally:
        for fd in fds:
            os.close(fd)
    from agentsh.creds.vault import PASSPHRASE_ENV  # lazy: only when a proxy starts

    # cache_passphrase: whether it can open a passphrase-protected credential cache (passphrase_problem)
    record.update(pid=pid, pid_start=_start_time(pid), steered=not problem, steer_problem=problem or None,
                  cache_passphrase=bool(os.environ.get(PASSPHRASE_ENV)))
    store.write(rel, record)
    if notify:
        notify(f"egress proxy for {project.sandbox} started (mode {want['mode']}; see 'ab-log')")
        if problem:
            notify(f"only programs using HTTP(S)_PROXY get out of {project.sandbox}: cannot steer other "
                   f"connections ({problem})")
    return record


def steering(record: Mapping[str, Any], running: bool) -> dict[str, Any]:
    """What `ab-net show` says of transparent steering for a sandbox, from its proxy's record.

    active: the proxy and the sandbox run, and the proxy's helper set the namespace's route and
    REDIRECT rule (programs that ignore HTTP(S)_PROXY get out by name);
    dns: the answerer's address in the sandbox; synthetic: the block its
    answers come from; listener: where the rule sends TCP to that block;
    problem: why the rule could not be set, or None.
    """
    from agentsh.egress.dns import SYNTHETIC  # lazy: ipaddress and json; only for ab-net show

    running = running and alive(record.get("sandbox_pid"), record.get("sandbox_start"))  # a stopped sandbox: no
    return {"active": bool(running and record.get("steered")), "dns": f"127.0.0.1:{DNS_PORT}",
            "synthetic": str(SYNTHETIC), "listener": f"127.0.0.1:{PROXY_PORT + STEER_PORT_OFFSET}",
            "problem": record.get("steer_problem") if running else None}


def _terminate(pid: int) -> None:
    import signal  # lazy: signal brings enum; only to stop a proxy

    try:
        os.kill(pid, signal.SIGTERM)
    except OSError:
        pass


def stop(store: Store, sandbox_name: str) -> None:
    """Stop a sandbox's proxy (it also stops by itself when the sandbox does)."""
    record = store.read(proxy_rel(sandbox_name)) or {}
    if alive(record.get("pid"), record.get("pid_start")):
        _terminate(record["pid"])


def passphrase_problem(store: Store, sandbox_name: str) -> str | None:
    """One line when the sandbox's running proxy cannot open the credential cache for want of its passphrase.

    The proxy opens the placeholder map (creds.swap) with the cache's key;
    in passphrase mode it derives that key from AGENTSH_PASSPHRASE in the
    environment it was started from (ab-up's or ab-exec's), as it has no
    terminal to ask on. Without it the proxy swaps nothing.
    """
    from agentsh.creds import vault  # lazy: only for an exec handing over placeholders

    if vault.key_mode() != "passphrase":
        return None
    record = store.read(proxy_rel(sandbox_name)) or {}
    if record.get("cache_passphrase") is not False or not alive(record.get("pid"), record.get("pid_start")):
        return None
    return (f"the egress proxy of {sandbox_name} was started without {vault.PASSPHRASE_ENV}, so it cannot open the "
            "passphrase-protected credential cache and bound credentials reach their hosts as placeholders; "
            f"set {vault.PASSPHRASE_ENV} and restart the proxy: ab-down && ab-up")


def sandbox_files(sandbox_name: str, with_log: bool = False) -> list[str]:
    """Every per-sandbox path (relative to the state dir) the egress code writes, for `forget`.

    The proxy's record, its stderr, the DNS answerer's name map, the
    interception CA (a directory) and the placeholder map (creds.swap); with_log: the audit log and its rotated
    copy too. Nothing under the runtime dir: the planted sockets live in the
    sandbox's network namespace and the helper's Unix socket in a temporary
    directory it removes.
    """
    rels = [layout.proxy_record(sandbox_name), layout.proxy_err_file(sandbox_name),
            layout.dns_names_file(sandbox_name), layout.sandbox_ca(sandbox_name), layout.swap_record(sandbox_name)]
    if with_log:
        rels += [audit_rel(sandbox_name), audit_rel(sandbox_name) + ".1"]  # egress.audit rotates to .1
    return rels


def forget(store: Store, sandbox_name: str, with_log: bool = False, wait: float = 5.0) -> None:
    """Stop a removed sandbox's proxy and remove the files it kept (`ab-down --rm`).

    The proxy is stopped first and waited for (up to `wait` seconds), so no
    late DNS answer or log line recreates a file after it was removed. The
    audit log stays unless `with_log` (`--rm --volumes`): it is the record
    of what the sandbox tried, which `ab-log` and `ab-net propose` read
    after the sandbox is gone.
    """
    import shutil  # lazy: only when a sandbox is removed
    import time  # lazy: only when a sandbox is removed

    record = store.read(proxy_rel(sandbox_name)) or {}
    pid, start = record.get("pid"), record.get("pid_start")
    if alive(pid, start):
        _terminate(pid)
        deadline = time.monotonic() + wait
        while alive(pid, start) and time.monotonic() < deadline:
            time.sleep(0.05)
    with store.lock():
        for rel in sandbox_files(sandbox_name, with_log):
            path = store.path(rel)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
                continue
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


def require_plantable(engine: Engine) -> None:
    """Refuse (one line) where agentsh cannot enter a sandbox's network namespace to plant the proxy's listener.

    `ab-up` asks before it changes any container, so a refused mode leaves the sandbox as it was.
    """
    if engine.rootless:
        if not engine.is_podman:
            raise AgentshError("network modes \"allow\" and \"learn\" need Podman (or a rootful engine run as root)",
                               "set engine = \"podman\", or [network] mode = \"full\" or \"none\"")
    elif os.geteuid() != 0:
        raise AgentshError("network modes \"allow\" and \"learn\" with a rootful engine need agentsh run as root",
                           "use rootless Podman, or [network] mode = \"full\" or \"none\"")


def plant_listener(engine: Engine, sandbox_pid: int, port: int) -> tuple[list[int], str]:
    """The proxy's sockets inside the sandbox's network namespace: ([fds], problem).

    fds: the proxy listener on 127.0.0.1:port, the transparent listener on
    port + 1, the DNS answerer's UDP and TCP sockets on port 53 (see
    proxy.plant); problem: "" when the helper also set the namespace's
    steering route and REDIRECT rule, else why it could not. Entering a
    namespace (and changing its routes and rules) needs CAP_SYS_ADMIN and
    CAP_NET_ADMIN over it: root has them for a rootful engine's containers,
    and rootless Podman's user namespace gives them to `podman unshare`.
    The sandbox's own processes have neither. The helper sends the fds back
    over a Unix socket.
    """
    import array  # lazy: only to plant the listeners (not on warm ab-up's path)
    import socket  # lazy: only to plant the listeners (not on warm ab-up's path)
    import subprocess  # lazy: only to plant the listeners (not on warm ab-up's path)
    import tempfile  # lazy: only to plant the listeners (not on warm ab-up's path)

    helper = [sys.executable, "-m", "agentsh.egress.proxy", "plant", str(sandbox_pid), str(port)]
    require_plantable(engine)
    if engine.rootless:
        helper = engine.unshare_argv(helper)
    with tempfile.TemporaryDirectory(prefix="agentsh-net-") as d:
        path = os.path.join(d, "fd.sock")
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            server.bind(path)
            server.listen(1)
            server.settimeout(30)
            proc = subprocess.Popen([*helper, path], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE)
            try:
                conn, _ = server.accept()
            except OSError:
                proc.kill()
                err = proc.communicate()[1].decode("utf-8", "replace").strip().splitlines()
                raise AgentshError(f"cannot open the egress proxy's port in the sandbox: "
                                   f"{(err or ['no answer from the helper'])[-1][:200]}",
                                   "run 'ab-up --recreate'; see docs/security.md, network") from None
            with conn:
                msg, anc, _, _ = conn.recvmsg(1024, socket.CMSG_LEN(4 * array.array("i").itemsize))
            proc.wait(timeout=30)
        finally:
            server.close()
    fds = array.array("i")
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    if len(fds) != 4:
        for fd in fds:
            os.close(fd)
        raise AgentshError("the egress proxy's helper sent no sockets", "run 'ab-up --recreate'")
    return list(fds), msg[1:].decode("utf-8", "replace")


def _spawn_proxy(store: Store, rel: str, fds: list[int]) -> int:
    """Start the detached proxy process serving the planted sockets; returns its pid."""
    import subprocess  # lazy: only to start a proxy (not on warm ab-up's path)

    log_path = store.path(layout.proxy_err_file(os.path.basename(rel)[:-5]))
    os.makedirs(os.path.dirname(log_path), mode=0o700, exist_ok=True)
    with open(log_path, "ab") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agentsh.egress.proxy", "serve", "--state", store.root, "--record", rel,
             "--fd", str(fds[0]), "--steer-fd", str(fds[1]), "--dns-fd", str(fds[2]), "--dns-fd", str(fds[3])],
            pass_fds=fds, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
            start_new_session=True, cwd="/")
    return proc.pid
