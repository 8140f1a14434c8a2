"""Network policy: parsing and matching allowlists, the proxy's lifecycle, lockdown.

Modes (config `[network] mode`): "full" (the engine's default network),
"none" (loopback only), "allow" (only the hosts in `[network] allow`, through
agentsh's egress proxy) and "learn" (everything through the proxy, logged).

In "allow" and "learn" the sandbox runs with `--network=none`: its only
interface is loopback, so a program that ignores HTTP_PROXY reaches nothing.
The proxy is a host process (agentsh.proxy); `attach` plants its listening
socket on 127.0.0.1:PROXY_PORT *inside* the sandbox's network namespace
(one short helper enters the namespace, makes the socket and hands its fd
back), while the proxy itself keeps the host's network for the connections
it allows. See docs/architecture.md, "Network policy", for why.

The policy the proxy enforces lives in two state records it re-reads when
their mtime changes: `net/<sandbox>.json` (written by `ab-up` from the config)
and `net/allow/<project key>.json` (hosts added with `ab-net allow`), so an
allow takes effect on the next request without a restart.
"""

import os
import re

from .errors import AgentshError, ConfigError
from .liveness import alive, start_time as _start_time  # the proxy's identity, like a sandbox's

FULL, NONE, ALLOW, LEARN = "full", "none", "allow", "learn"
MODES = (FULL, NONE, ALLOW, LEARN)
PROXIED = (ALLOW, LEARN)
PROXY_PORT = 3128
PROXY_URL = f"http://127.0.0.1:{PROXY_PORT}"
NO_PROXY = "localhost,127.0.0.1,::1"
DEFAULT_PORTS = (80, 443)
# The agents' APIs: what lockdown allows when no agent profile narrows it.
LOCKDOWN_SETS = ("anthropic", "openai", "google")
# Names that mean "the host" to a container (Podman, Docker); the proxy runs
# there, so it reaches them on the host's loopback.
HOST_ALIASES = ("host.containers.internal", "host.docker.internal")
_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)\Z")


class Rule:
    """One allowlist entry: a host pattern and the ports it opens (None: any)."""

    __slots__ = ("text", "host", "wildcard", "ip", "ports")

    def __init__(self, text, host, wildcard, ip, ports):
        self.text, self.host, self.wildcard, self.ip, self.ports = text, host, wildcard, ip, ports

    def matches(self, host, port, host_ip):
        if self.ports is not None and port not in self.ports:
            return False
        if self.ip is not None or host_ip is not None:
            return self.ip is not None and host_ip is not None and self.ip == host_ip
        if self.wildcard:
            return host.endswith("." + self.host)
        return host == self.host


def normalize_host(host):
    """Lower case, no trailing dot, no IPv6 brackets."""
    host = host.strip().lower().rstrip(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host


def ip_literal(host):
    """The address when `host` is an IP literal, else None."""
    import ipaddress

    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def parse_rule(text):
    """'host', '*.domain', 'host:443', 'host:*', '10.0.0.5:8080', '[::1]:80' -> Rule (ValueError if malformed)."""
    raw = text.strip()
    host, port = raw, None
    if raw.startswith("["):
        end = raw.find("]")
        if end < 0:
            raise ValueError("unclosed [")
        host, rest = raw[1:end], raw[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise ValueError("expected :PORT after ]")
            port = rest[1:]
    elif raw.count(":") == 1:
        host, port = raw.split(":")
    host = normalize_host(host)
    ip = ip_literal(host)
    wildcard = host.startswith("*.")
    name = host[2:] if wildcard else host
    if ip is None and (not name or not all(_LABEL.match(label) for label in name.split("."))):
        raise ValueError(f"{host!r} is not a host name, *.domain or IP address")
    if wildcard and ip_literal(name) is not None:
        raise ValueError("a wildcard cannot prefix an IP address")
    if port is None or port == "":
        ports = frozenset(DEFAULT_PORTS)
    elif port == "*":
        ports = None
    elif port.isdigit() and 0 < int(port) < 65536:
        ports = frozenset([int(port)])
    else:
        raise ValueError(f"{port!r} is not a port (1-65535 or *)")
    return Rule(raw, name, wildcard, ip, ports)


def expand(items):
    """Allowlist items ('@set' names and patterns) -> the patterns, sets expanded, in order, deduplicated."""
    from .netsets import SETS

    out = []
    for item in items:
        if item.startswith("@"):
            name = item[1:]
            if name not in SETS:
                raise ValueError(f"unknown set @{name} (known: {', '.join('@' + s for s in SETS)})")
            out += SETS[name]
        else:
            out.append(item)
    return list(dict.fromkeys(out))


def check_allow(value, where):
    """Config checker for `[network] allow`: a list of patterns and @set names."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where} must be a list of strings such as \"api.example.com\", \"*.npmjs.org\", "
                          "\"github.com:443\" or \"@registries\"")
    try:
        for pattern in expand(value):
            parse_rule(pattern)
    except ValueError as e:
        raise ConfigError(f"{where}: {e}", "see docs/config.md, [network]") from None
    return list(value)


class Policy:
    """What the proxy lets through: a mode and the rules of "allow"."""

    def __init__(self, mode, patterns=()):
        self.mode = mode
        self.patterns = list(dict.fromkeys(patterns))
        self.rules = [parse_rule(p) for p in self.patterns]

    def decide(self, host, port):
        """(allowed, rule text or reason) for a destination, before any DNS lookup.

        Deciding first means a denied name is never resolved: the sandbox
        cannot use the proxy's resolver to leak data in DNS queries.
        """
        host = normalize_host(host)
        host_ip = ip_literal(host)
        for rule in self.rules:
            if rule.matches(host, port, host_ip):
                return True, rule.text
        if self.mode == LEARN:
            return True, "learn"
        if host_ip is not None:
            return False, "IP address not on the allowlist"
        return False, "not on the allowlist"

    def explicit(self, host, port):
        """Whether a listed rule (not learn mode) names this destination."""
        host = normalize_host(host)
        return any(r.matches(host, port, ip_literal(host)) for r in self.rules)


# -- records ------------------------------------------------------------------


def proxy_rel(sandbox_name):
    return f"net/{sandbox_name}.json"


def extra_rel(project):
    return f"net/allow/{project.key}.json"


def audit_rel(sandbox_name):
    return f"net/log/{sandbox_name}.jsonl"


def added(store, project):
    """Patterns `ab-net allow` added for the project."""
    return list((store.read(extra_rel(project)) or {}).get("allow", []))


def allow_host(store, project, pattern):
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


def config_patterns(cfg):
    return expand(cfg["network"].get("allow") or [])


def policy_for(cfg, store, project):
    """The policy a project's proxy enforces right now (config + ab-net additions)."""
    return Policy(cfg["network"]["mode"], config_patterns(cfg) + added(store, project))


# -- the container side -----------------------------------------------------------


def run_args(cfg):
    """`run` flags and environment for the config's network mode."""
    mode = cfg["network"]["mode"]
    if mode == NONE:
        return ["--network=none"], {}
    if mode in PROXIED:
        env = {}
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
            env[name] = env[name.lower()] = PROXY_URL
        env["NO_PROXY"] = env["no_proxy"] = NO_PROXY
        return ["--network=none"], env
    return [], {}


# -- lockdown --------------------------------------------------------------------


def lockdown(cfg, agent_sets=None):
    """The locked-down form of a config, for repos you do not trust.

    No credentials, env pass-through, extra mounts, ports or capabilities from the
    config (what the command line names still passes); network "allow" with
    only the agent's API (`agent_sets`: its profile's set names; default the
    agents' APIs); an ephemeral home; the project behind a copy-on-write
    layer (sandbox.spec reads `lockdown`). `ab-net allow` additions, being
    explicit per-project commands, still apply.
    """
    from .config import Config

    sets = LOCKDOWN_SETS if agent_sets is None else agent_sets
    out = Config(cfg)
    out.update(credentials=[], env=[], mounts=[], cap_add=[], caches=[], ports=[], lockdown=True,
               network={**cfg["network"], "mode": ALLOW, "allow": [f"@{s}" for s in sets]})
    for attr in ("project_file", "project_trust", "notices"):
        setattr(out, attr, getattr(cfg, attr, None))
    return out


def only_named(delivery, project, names):
    """Keep from a credential Delivery only the named credentials (lockdown: what the command names)."""
    if delivery is None:
        return None
    from . import creds

    targets = set()
    for name in names:
        record = creds.find(name, project)
        if record is not None:
            targets.add(record["meta"]["target"])
    delivery.env_values = {k: v for k, v in delivery.env_values.items() if k in targets}
    delivery.files = [f for f in delivery.files if f.name in names]
    return delivery


def is_locked(cfg):
    return bool(cfg.get("lockdown"))


def overlay_dirs(project):
    """Host dirs holding a locked-down sandbox's writes to the project (upper) and overlay scratch (work)."""
    from . import paths

    base = os.path.join(paths.data_dir(), "lockdown", project.sandbox)
    return os.path.join(base, "upper"), os.path.join(base, "work")


def project_mount_suffix(project, cfg):
    """Mount options for the project: a copy-on-write overlay in lockdown, else none."""
    if not is_locked(cfg):
        return ""
    upper, work = overlay_dirs(project)
    return f":O,upperdir={upper},workdir={work}"


def without_ssh_agent(args, env):
    """Credential spec pieces minus the forwarded SSH agent (lockdown forwards none)."""
    from .inject import SSH_AGENT_SOCKET

    kept = []
    for i, arg in enumerate(args):
        if arg.endswith(":" + SSH_AGENT_SOCKET) or (arg == "-v" and args[i + 1:i + 2] and
                                                     args[i + 1].endswith(":" + SSH_AGENT_SOCKET)):
            continue
        kept.append(arg)
    return kept, {k: v for k, v in env.items() if k != "SSH_AUTH_SOCK"}


def prepare_host(project, cfg):
    """Create the overlay dirs a locked-down sandbox needs (nothing otherwise)."""
    if is_locked(cfg):
        for d in overlay_dirs(project):
            os.makedirs(d, mode=0o700, exist_ok=True)


# -- the proxy's lifecycle ---------------------------------------------------------------




def attach(project, cfg, engine, store, notify=None):
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
    }
    store.write(rel, record)
    listener = plant_listener(engine, sandbox_pid, PROXY_PORT)
    try:
        pid = _spawn_proxy(store, rel, listener)
    finally:
        os.close(listener)
    record.update(pid=pid, pid_start=_start_time(pid))
    store.write(rel, record)
    if notify:
        notify(f"egress proxy for {project.sandbox} started (mode {want['mode']}; see 'ab-log')")
    return record


def _terminate(pid):
    import signal

    try:
        os.kill(pid, signal.SIGTERM)
    except OSError:
        pass


def stop(store, sandbox_name):
    """Stop a sandbox's proxy (it also stops by itself when the sandbox does)."""
    record = store.read(proxy_rel(sandbox_name)) or {}
    if alive(record.get("pid"), record.get("pid_start")):
        _terminate(record["pid"])


def plant_listener(engine, sandbox_pid, port):
    """A listening TCP socket on 127.0.0.1:port inside the sandbox's network namespace; returns its fd.

    Entering a namespace needs CAP_SYS_ADMIN over it: root has it for a
    rootful engine's containers, and rootless Podman's user namespace gives
    it to `podman unshare`. The helper sends the fd back over a Unix socket.
    """
    import array
    import socket
    import subprocess
    import sys
    import tempfile

    helper = [sys.executable, "-m", "agentsh.proxy", "plant", str(sandbox_pid), str(port)]
    if engine.rootless:
        if not engine.is_podman:
            raise AgentshError("network modes \"allow\" and \"learn\" need Podman (or a rootful engine run as root)",
                               "set engine = \"podman\", or [network] mode = \"full\" or \"none\"")
        helper = engine.unshare_argv(helper)
    elif os.geteuid() != 0:
        raise AgentshError("network modes \"allow\" and \"learn\" with a rootful engine need agentsh run as root",
                           "use rootless Podman, or [network] mode = \"full\" or \"none\"")
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
                _, anc, _, _ = conn.recvmsg(1, socket.CMSG_LEN(array.array("i").itemsize))
            proc.wait(timeout=30)
        finally:
            server.close()
    fds = array.array("i")
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    if not fds:
        raise AgentshError("the egress proxy's helper sent no socket", "run 'ab-up --recreate'")
    return fds[0]


def _spawn_proxy(store, rel, listener_fd):
    """Start the detached proxy process serving listener_fd; returns its pid."""
    import subprocess
    import sys

    log_path = store.path(f"net/{os.path.basename(rel)[:-5]}.proxy.err")
    os.makedirs(os.path.dirname(log_path), mode=0o700, exist_ok=True)
    with open(log_path, "ab") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agentsh.proxy", "serve", "--state", store.root, "--record", rel,
             "--fd", str(listener_fd)],
            pass_fds=[listener_fd], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
            start_new_session=True, cwd="/")
    return proc.pid


# -- learn mode -> allowlist ------------------------------------------------------------


def propose(entries):
    """Turn audit entries into allowlist patterns for review.

    Hosts covered by a built-in set become that set ('@github') when every
    host of the log's that the set matches is in it; other hosts are listed
    as-is, with ':PORT' unless the port is 80 or 443. Returns (patterns,
    per-destination counts).
    """
    from .netsets import SETS

    seen = {}
    for e in entries:
        key = (normalize_host(str(e.get("host", ""))), int(e.get("port") or 0))
        if key[0]:
            seen[key] = seen.get(key, 0) + 1
    set_rules = {name: Policy(ALLOW, patterns) for name, patterns in SETS.items()}
    patterns = []
    for (host, port), _count in sorted(seen.items()):
        covering = next((name for name, pol in set_rules.items() if pol.explicit(host, port)), None)
        if covering:
            patterns.append(f"@{covering}")
        elif port in DEFAULT_PORTS:
            patterns.append(f"[{host}]" if ":" in host else host)
        else:
            patterns.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    counts = [{"host": h, "port": p, "count": c} for (h, p), c in sorted(seen.items())]
    return list(dict.fromkeys(patterns)), counts
