"""A compose-based devcontainer's siblings: run alongside the sandbox, stopped and removed with it.

The sandbox itself is made by agentsh (sandbox.spec); the other services of
the compose project (policy.devcontainer_compose sorted what of them may
run) start with `podman-compose` on Podman and `docker compose` on Docker (or
the stand-alone `docker-compose` where the plugin is missing),
from a compose file agentsh writes in its own state directory, never from
the tree (whose files were read once, as trust hashed them), under a
compose project name derived from the sandbox name.

Network: agentsh makes one network per sandbox (`<sandbox>-net`, or `-int`) and puts
the siblings and the sandbox on it. In network mode "full" it is an
ordinary bridge (siblings reach out like under plain compose); in "allow"
and "learn" it is `--internal` (no gateway, no route out), the sandbox's
only interface besides loopback, so the egress proxy planted in its
namespace stays the only way out and siblings are no way around the
allowlist. In "none" the sandbox keeps no network at all: the siblings run
but cannot be reached from it. Sibling names resolve in the sandbox through
a hosts file agentsh writes (and rewrites in place when siblings start), so
no DNS plugin is needed and the egress answerer is not bypassed.

A warm `ab-up` makes no engine call: the record holds the file's hash and
each sibling's init pid and start time, which /proc checks.
"""

import json
import os
import re

from agentsh.base import layout, paths
from agentsh.base.digest import sha256_hex
from agentsh.base.errors import AgentshError
from agentsh.base.state import atomic_write
from agentsh.host import liveness

LABEL_SIBLING = "io.agentsh.sibling"  # the sandbox a sibling belongs to
COMPOSE_FILE = "compose.json"  # JSON is YAML: both tools read it
HOSTS_FILE = "hosts"
UP_TIMEOUT = 600


def project_name(sandbox):
    """The compose project name of a sandbox's siblings: derived from the sandbox name only."""
    return re.sub(r"[^a-z0-9_-]", "-", sandbox.lower())


def network_name(sandbox, cfg=None):
    """The siblings' network: `-net` an ordinary bridge (mode "full"), `-int` an internal one (the others)."""
    return f"{sandbox}-{'int' if cfg is not None and internal(cfg) else 'net'}"


def container_name(sandbox, service):
    return f"{project_name(sandbox)}-{service}"


def files_dir(sandbox):
    return os.path.join(paths.state_dir(), layout.compose_dir(sandbox))


def hosts_path(sandbox):
    """The sandbox's /etc/hosts when it has siblings: localhost, its own name, each sibling's address."""
    return os.path.join(files_dir(sandbox), HOSTS_FILE)


def reachable(cfg):
    """Whether the sandbox is on its siblings' network in this network mode ("none": it is not)."""
    return cfg["network"]["mode"] != "none"


def internal(cfg):
    return cfg["network"]["mode"] != "full"


def sandbox_net_args(project, cfg, net_args):
    """The sandbox's network flags with its siblings: on their network, their names in its hosts file."""
    if not reachable(cfg):
        return net_args
    from agentsh.egress import network  # lazy: only for a sandbox with siblings

    out = [a for a in net_args if a != "--network=none"]
    hosts = hosts_path(project.sandbox)
    if f"{network.HOSTS}:/etc/hosts:ro" in out:
        out[out.index(f"{network.HOSTS}:/etc/hosts:ro")] = f"{hosts}:/etc/hosts:ro"
    else:
        out += ["-v", f"{hosts}:/etc/hosts:ro"]
    return [f"--network={network_name(project.sandbox, cfg)}", *out]


def _escape(value):
    """Strings as compose reads them back unchanged: its interpolation ran already, on the tree's files."""
    if isinstance(value, str):
        return value.replace("$", "$$")
    if isinstance(value, list):
        return [_escape(v) for v in value]
    if isinstance(value, dict):
        return {k: _escape(v) for k, v in value.items()}
    return value


def document(project, cfg, dev):
    """The compose file agentsh writes for the siblings (a pure function of project, config and devcontainer)."""
    services, volumes = {}, {}
    for name, svc in sorted(dev.siblings.items()):
        out = {"image": svc["image"], "container_name": container_name(project.sandbox, name),
               "networks": ["sandbox"], "restart": "no",
               "labels": {**svc.get("labels", {}), LABEL_SIBLING: project.sandbox}}
        for key in ("environment", "command", "entrypoint", "working_dir", "user", "healthcheck", "stop_signal",
                    "shm_size"):
            if key in svc:
                out[key] = _escape(svc[key]) if key != "healthcheck" else svc[key]
        mounts, tmpfs = [], []
        for vol in svc.get("volumes", []):
            ro = ":ro" if vol["readonly"] else ""
            if vol["type"] == "tmpfs":
                tmpfs.append(vol["target"])
            elif vol["type"] == "bind":
                mounts.append(f"{vol['source']}:{vol['target']}{ro}")
            elif vol["source"]:
                volumes[vol["source"]] = {"name": dev.volume_name(project.key, vol["source"])}
                mounts.append(f"{vol['source']}:{vol['target']}{ro}")
            else:
                mounts.append(vol["target"])
        if mounts:
            out["volumes"] = mounts
        if tmpfs or svc.get("tmpfs"):
            out["tmpfs"] = tmpfs + ([svc["tmpfs"]] if isinstance(svc.get("tmpfs"), str) else list(svc.get("tmpfs", [])))
        if svc.get("depends_on"):
            out["depends_on"] = list(svc["depends_on"])
        ports = [f"127.0.0.1::{p}" for s, p in dev.sibling_ports if s == name]
        if ports and not internal(cfg):
            out["ports"] = ports
        services[name] = out
    doc = {"services": services,
           "networks": {"sandbox": {"external": True, "name": network_name(project.sandbox, cfg)}}}
    if volumes:
        doc["volumes"] = volumes
    return doc


def notices(cfg, dev):
    """What the network mode means for the siblings, in one line (none when it changes nothing)."""
    mode = cfg["network"]["mode"]
    names = ", ".join(sorted(dev.siblings))
    if mode == "none":
        return [f"network mode \"none\": the siblings ({names}) run, but the sandbox has no network to reach them "
                "(mode \"allow\" reaches them by name on an internal network)"]
    forwards = [f"{s}:{p}" for s, p in dev.sibling_ports]
    if forwards and internal(cfg):
        return [f"network mode \"{mode}\": the siblings' network is internal, so forwardPorts "
                f"{', '.join(forwards)} are not published (mode \"full\" publishes them on host loopback)"]
    return []


def tool(engine):
    """The compose command for this engine, or one line saying what to install."""
    import shutil  # lazy: not on a warm ab-up's path
    import subprocess  # lazy: not on a warm ab-up's path

    if engine.is_podman:
        exe = shutil.which("podman-compose")
        if exe is None:
            raise AgentshError("the devcontainer's compose siblings need podman-compose, which is not installed",
                               "apt-get install podman-compose (or pip install podman-compose)")
        return [exe, "--podman-path", engine.exe]
    status = subprocess.run([engine.exe, "compose", "version"], capture_output=True, timeout=60).returncode
    if status == 0:
        return [engine.exe, "compose"]
    exe = shutil.which("docker-compose")  # the stand-alone tool: Debian 12's 1.29 (Python), or v2's binary
    if exe is None:
        raise AgentshError("the devcontainer's compose siblings need Docker Compose ('docker compose' or "
                           "'docker-compose'), which is not installed", "apt-get install docker-compose (or "
                           "Docker's docker-compose-plugin), or use engine = \"podman\" with podman-compose")
    return [exe]


def _record(store, sandbox):
    try:
        return store.read(layout.compose_record(sandbox)) or {}
    except AgentshError:
        return {}


def warm(store, sandbox, digest, local=True):
    """Whether the siblings run as last made: the same file, every init process alive (no engine call).

    `local`: the engine's processes are this host's; for an engine reached through a connection a pid
    means nothing here, so only the file is compared (a crashed sibling comes back with `ab-up --recreate`).
    """
    record = _record(store, sandbox)
    return record.get("hash") == digest and bool(record.get("siblings")) and (not local or all(
        liveness.alive(s.get("pid"), s.get("pid_start")) for s in record["siblings"].values()))


def up(project, cfg, engine, store, dev, notify, force=False):
    """Start (or restart) the siblings of a compose-based devcontainer; before the sandbox, whose network it makes.

    `force` (ab-up --recreate): ask the engine even when the record says they run.
    """
    doc = document(project, cfg, dev)
    text = json.dumps(doc, indent=1, sort_keys=True)
    digest = sha256_hex(f"{text}\0{internal(cfg)}")[:16]
    sandbox = project.sandbox
    if not force and os.path.isfile(hosts_path(sandbox)) and warm(store, sandbox, digest, engine.is_local):
        return
    command = tool(engine)  # first: without the tool nothing is made
    for line in notices(cfg, dev):
        notify(line)
    record = _record(store, sandbox)
    directory = files_dir(sandbox)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    if record.get("hash") not in (None, digest) or record.get("internal", internal(cfg)) != internal(cfg):
        notify(f"the siblings of {sandbox} changed; replacing them")
        _remove_containers(engine, sandbox)
    _network(engine, sandbox, cfg)
    path = os.path.join(directory, COMPOSE_FILE)
    atomic_write(path, text.encode("utf-8", "surrogateescape"))
    notify(f"starting siblings {', '.join(sorted(doc['services']))} "
           f"({'podman-compose' if engine.is_podman else ' '.join(map(os.path.basename, command))} project {project_name(sandbox)})")
    argv = [*command, "-p", project_name(sandbox), "-f", path, "up", "-d"]
    import subprocess  # lazy: not on a warm ab-up's path

    try:
        proc = subprocess.run(argv, cwd=directory, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=UP_TIMEOUT, env=_tool_env())
    except subprocess.TimeoutExpired:
        raise AgentshError(f"starting the siblings of {sandbox} took over {UP_TIMEOUT} s",
                           "look at 'ab status', then 'ab-down --rm' and 'ab-up'") from None
    running = _inspect(engine, sandbox, doc, cfg)
    down = [n for n in doc["services"] if not running.get(n, {}).get("running")]
    for name in down:  # made before but stopped (crashed, or ab-down): compose's up leaves those as they are
        engine.call("start", container_name(sandbox, name), check=False)
    if down:
        running = _inspect(engine, sandbox, doc, cfg)
        down = [n for n in doc["services"] if not running.get(n, {}).get("running")]
    if down:
        said = (proc.stderr or proc.stdout).decode("utf-8", "replace").strip().splitlines()
        raise AgentshError(f"siblings {', '.join(down)} of {sandbox} do not run: "
                           f"{(said or ['no output'])[-1][:200]}",
                           "fix the compose file (ab-up --dry-run shows what is applied), then run 'ab-up' again")
    write_hosts(sandbox, project.slug, running)
    with store.lock():
        store.write(layout.compose_record(sandbox), {
            "hash": digest, "project": project_name(sandbox), "network": network_name(sandbox, cfg), "file": path,
            "internal": internal(cfg), "shutdown": dev.shutdown or "stopCompose",
            "volumes": sorted(v["name"] for v in doc.get("volumes", {}).values()),
            "siblings": {n: {"container": container_name(sandbox, n), "pid": s["pid"],
                             "pid_start": liveness.start_time(s["pid"]) if s["pid"] else None}
                         for n, s in running.items()}})


def _tool_env():
    """The compose tool's environment: the host's, less what would change how it reads agentsh's file."""
    env = dict(os.environ)
    for name in ("COMPOSE_FILE", "COMPOSE_PROJECT_NAME", "COMPOSE_PROFILES", "COMPOSE_ENV_FILES",
                 "COMPOSE_PATH_SEPARATOR"):
        env.pop(name, None)
    return env


def _network(engine, sandbox, cfg):
    """Make the siblings' network; an internal one must have no gateway (an address of the host) on it."""
    name = network_name(sandbox, cfg)
    status, out, _ = engine.call("network", "inspect", name, check=False)
    if status != 0:
        engine.call("network", "create", *(["--internal"] if internal(cfg) else []), "--label",
                    f"{LABEL_SIBLING}={sandbox}", name)
        status, out, _ = engine.call("network", "inspect", name, check=False)
    if internal(cfg) and gateways(out):
        engine.call("network", "rm", name, check=False)
        raise AgentshError(f"this engine gives an internal network a gateway ({', '.join(gateways(out))}), through "
                           f"which the sandbox would reach the host's services around network mode "
                           f"\"{cfg['network']['mode']}\"; its compose siblings are not started",
                           "use [network] mode = \"full\" for this project (or \"none\": siblings unreachable), "
                           "or Podman with its CNI backend")


def gateways(inspect_out):
    """The gateway addresses a `network inspect` shows (Podman's subnets, Docker's IPAM config)."""
    try:
        infos = json.loads(inspect_out or "[]")
    except ValueError:
        return ["unknown"]
    found = []
    for info in infos if isinstance(infos, list) else []:
        if not isinstance(info, dict):
            continue
        subnets = [*(info.get("subnets") or []), *((info.get("IPAM") or {}).get("Config") or [])]
        found += [str(n.get("gateway") or n.get("Gateway")) for n in subnets
                  if isinstance(n, dict) and (n.get("gateway") or n.get("Gateway"))]
    return found


def _inspect(engine, sandbox, doc, cfg):
    """{service: {"running", "pid", "address"}} of the siblings' containers (one engine call)."""
    names = [container_name(sandbox, n) for n in doc["services"]]
    status, out, _ = engine.call("inspect", "--type", "container", *names, check=False)
    try:
        infos = json.loads(out or "[]") or []
    except ValueError:
        infos = []
    by_name = {(i.get("Name") or "").lstrip("/"): i for i in infos if isinstance(i, dict)}
    got = {}
    for service in doc["services"]:
        info = by_name.get(container_name(sandbox, service))
        if info is None:
            continue
        state = info.get("State") or {}
        nets = (info.get("NetworkSettings") or {}).get("Networks") or {}
        address = (nets.get(network_name(sandbox, cfg)) or {}).get("IPAddress") or ""
        got[service] = {"running": state.get("Status") == "running" or state.get("Running") is True,
                        "pid": int(state.get("Pid") or 0), "address": address}
    return got


def write_hosts(sandbox, hostname, running):
    """The sandbox's hosts file, rewritten in place (a bind mount follows the inode, not the name)."""
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost", f"127.0.1.1\t{hostname}"]
    for service, info in sorted(running.items()):
        if info.get("address"):
            lines.append(f"{info['address']}\t{service} {container_name(sandbox, service)}")
    data = ("\n".join(lines) + "\n").encode()
    path = hosts_path(sandbox)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(path, 0o644)


def siblings(engine, sandbox):
    """[{"service", "container", "state", "ports"}] of a sandbox's siblings, as the engine lists them (ab status)."""
    status, out, _ = engine.call("ps", "-a", "--filter", f"label={LABEL_SIBLING}={sandbox}", "--format", "json",
                                 check=False)
    text = (out or "").strip() if status == 0 else ""
    try:  # Podman: one JSON list; Docker: one object a line
        rows = json.loads(text) if text.startswith("[") else [json.loads(line) for line in text.splitlines() if line]
    except ValueError:
        rows = []
    prefix = project_name(sandbox) + "-"
    got = []
    for row in rows if isinstance(rows, list) else []:
        names = row.get("Names")
        name = (names[0] if isinstance(names, list) and names else names) or ""
        ports = row.get("Ports")
        if isinstance(ports, list):  # Podman's [{host_ip, host_port, container_port, protocol}]
            ports = ", ".join(f"{p.get('host_ip') or '0.0.0.0'}:{p.get('host_port')}->{p.get('container_port')}/"
                              f"{p.get('protocol', 'tcp')}" for p in ports if isinstance(p, dict))
        got.append({"service": name[len(prefix):] if name.startswith(prefix) else name, "container": name,
                    "state": str(row.get("State") or ""), "ports": ports or ""})
    return sorted(got, key=lambda r: r["service"])


def _containers(engine, sandbox):
    status, out, _ = engine.call("ps", "-a", "-q", "--filter", f"label={LABEL_SIBLING}={sandbox}", check=False)
    return (out or "").split() if status == 0 else []


def _remove_containers(engine, sandbox):
    ids = _containers(engine, sandbox)
    if ids:
        grace = ("-t", "2") if engine.is_podman else ()  # Docker's rm has no -t (and -f kills at once)
        engine.call("rm", "-f", *grace, *ids, check=False)


def down(engine, store, sandbox, remove=False, volumes=False):
    """Stop a sandbox's siblings (kept with shutdownAction "none" or "stopContainer"), or remove them, their
    network and files."""
    record = _record(store, sandbox)
    if not record and not remove:
        return
    if not remove:
        if record.get("shutdown") not in ("none", "stopContainer"):  # those stop the sandbox's container only
            ids = _containers(engine, sandbox)
            if ids:
                engine.call("stop", "-t", "5", *ids, check=False)
        return
    _remove_containers(engine, sandbox)
    for name in (f"{sandbox}-net", f"{sandbox}-int"):
        engine.call("network", "rm", name, check=False)
    import shutil  # lazy: only when siblings are removed

    if volumes:
        for name in record.get("volumes", []):
            engine.call("volume", "rm", "-f", name, check=False)
    shutil.rmtree(files_dir(sandbox), ignore_errors=True)
    store.remove(layout.compose_record(sandbox))
