"""A compose-based devcontainer.json: its compose files read, merged, interpolated and sorted.

`dockerComposeFile` (a path or a list, relative to the devcontainer.json's
folder) names compose files inside the project; they are read once without
following a symlink (their bytes are what trust covers, with the `.env` of
the compose project folder and each `env_file`), parsed with PyYAML and
merged the way compose merges them (mappings key by key, `ports`, `expose`,
`dns` and the like appended, `volumes` by target, `environment` and
`labels` by name, `command` and `entrypoint` replaced). `${VAR}`,
`${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`, `${VAR:+alt}`, `$VAR`
and `$$` are interpolated from the host's environment over `.env`.

The named `service` is the sandbox: agentsh makes it itself, with its own
hardening, from the service's image or build, environment, volumes,
working_dir, user and command. A key that would weaken the sandbox is
refused with the reason runArgs gives for the same engine flag
(devcontainer_args). The other services are siblings: what of them can run
alongside is kept (`siblings`, plain data for the runner to write its own
compose file from), what cannot is named.

Host values keep the localEnv rule: an environment value interpolated from
a host variable reaches the sandbox per command (exec_env), never at create
time; a sibling's is withheld and named.

Where the files cannot be honoured at all (an `include`, an `extends` of a
file outside the project, a `${VAR:?}` unset, no such service), `Refused`
says why in one line and nothing of them is applied.
"""

from __future__ import annotations

import os
import re

from agentsh.base import layout, paths
from agentsh.base.digest import sha256_hex
from agentsh.base.errors import AgentshError, ConfigError
from agentsh.base.safefs import read_project_file
from agentsh.base.state import atomic_write
from agentsh.policy.devcontainer_args import RUN_FLAGS, run_args
from agentsh.policy.devcontainer_vars import Resolved, _inside, _printable
from agentsh.policy.values import ENV_NAME, check_image, control_character

TYPE_CHECKING = False  # typing stays off the hot paths
if TYPE_CHECKING:
    from collections.abc import Mapping

MAX_NODES = 200_000  # YAML aliases can make a small file a huge tree
MAX_EXTENDS = 10
SERVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
APPENDED = {"ports", "expose", "external_links", "dns", "dns_search", "tmpfs", "env_file", "cap_add", "cap_drop",
            "devices", "security_opt", "dns_opt", "group_add", "volumes_from"}
BY_NAME = {"environment", "labels", "extra_hosts", "sysctls", "args"}
REPLACED = {"command", "entrypoint", "test"}

# Compose service keys that are engine flags: classified by the same table as runArgs.
AS_FLAG = {
    "privileged": "--privileged", "cap_add": "--cap-add", "security_opt": "--security-opt",
    "devices": "--device", "device_cgroup_rules": "--device-cgroup-rule", "gpus": "--gpus",
    "pid": "--pid", "ipc": "--ipc", "uts": "--uts", "userns_mode": "--userns", "cgroup": "--cgroupns",
    "cgroup_parent": "--cgroup-parent", "network_mode": "--network", "dns": "--dns", "dns_search": "--dns-search",
    "dns_opt": "--dns-option", "mac_address": "--mac-address", "links": "--link", "external_links": "--link",
    "volumes_from": "--volumes-from", "group_add": "--group-add", "mem_limit": "--memory",
    "memswap_limit": "--memory-swap", "cpus": "--cpus", "cpu_shares": "--cpu-shares", "cpuset": "--cpuset-cpus",
    "pids_limit": "--pids-limit", "ulimits": "--ulimit", "oom_kill_disable": "--oom-kill-disable",
    "oom_score_adj": "--oom-score-adj", "sysctls": "--sysctl", "runtime": "--runtime", "storage_opt": "--storage-opt",
    "read_only": "--read-only", "extra_hosts": "--add-host", "shm_size": "--shm-size", "hostname": "--hostname",
    "stop_signal": "--stop-signal", "labels": "--label", "init": "--init", "container_name": "--name",
    "restart": "--restart", "tty": "--tty", "stdin_open": "--interactive", "platform": "--platform",
    "pull_policy": "--pull", "cap_drop": "--cap-drop", "logging": "--log-driver", "annotations": "--annotation",
}
# Service keys that mean nothing to a sandbox, with what agentsh does instead.
IGNORED = {
    "expose": "ports are reached inside the compose network without it",
    "depends_on": "siblings start before the sandbox",
    "healthcheck": "ab-up does not wait on health", "profiles": "runServices chooses the siblings",
    "deploy": "resource limits are agentsh's (config memory, cpus, pids)",
    "networks": "agentsh puts the sandbox on the project's compose network",
    "stop_grace_period": "ab-down stops the sandbox", "domainname": "the sandbox's hostname is agentsh's",
    "develop": "compose watch is not run", "scale": "one sandbox", "attach": "not a sandbox setting",
    "x-": "an extension field",
}
REFUSED = {
    "secrets": "reads host files into the container; store secrets with ab-creds",
    "configs": "reads host files into the container",
    "credential_spec": "Windows only", "isolation": "Windows isolation; config isolation is agentsh's",
    "volume_driver": "host paths reach the sandbox only through mounts, which ab-allow shows",
    "blkio_config": "resource limits are agentsh's (config memory, cpus, pids)",
    "mem_reservation": "resource limits are agentsh's (config memory, cpus, pids)",
    "cpu_quota": "resource limits are agentsh's (config memory, cpus, pids)",
    "cpu_period": "resource limits are agentsh's (config memory, cpus, pids)",
    "cpu_count": "resource limits are agentsh's (config memory, cpus, pids)",
    "cpu_percent": "resource limits are agentsh's (config memory, cpus, pids)",
    "cpu_rt_runtime": "resource limits are agentsh's (config memory, cpus, pids)",
    "cpu_rt_period": "resource limits are agentsh's (config memory, cpus, pids)",
    "mem_swappiness": "resource limits are agentsh's (config memory, cpus, pids)",
    "use_api_socket": "would hand the container the host's container engine",
}
# The keys a sibling may keep as they are (after checks); everything else is dropped and named.
SIBLING_KEYS = {"image", "command", "entrypoint", "environment", "working_dir", "user", "healthcheck",
                "depends_on", "volumes", "tmpfs", "stop_signal", "labels", "shm_size"}


SHARED_VOLUME = "an external or named engine volume is shared beyond this project"


class Refused(Exception):
    """The compose files cannot be honoured: `why` is the one line, and nothing of them is applied."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


# -- interpolation -----------------------------------------------------------------


class Env:
    """The variables interpolation reads: the host's environment over the project's `.env`."""

    def __init__(self, host: Mapping[str, str], dotenv: Mapping[str, str]) -> None:
        self.host, self.dotenv = host, dotenv

    def get(self, name: str) -> tuple[str | None, bool]:
        """(value or None, whether it is the host's)."""
        if name in self.host:
            return self.host[name], True
        if name in self.dotenv:
            return self.dotenv[name], False
        return None, False


def interpolate(text: str, env: Env, where: str) -> Resolved:
    """`text` with compose's ${...} and $NAME replaced; .host names the host variables used."""
    host = set()
    out = _interpolate(text, env, where, host, 0)
    value = Resolved(out)
    value.host = frozenset(host)
    return value


def _interpolate(text: str, env: Env, where: str, host: set, depth: int) -> str:
    if "$" not in text:
        return text
    if depth > 10:
        raise Refused(f"{where}: variables nested too deep")
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if c != "$":
            out.append(c)
            i += 1
            continue
        nxt = text[i + 1] if i + 1 < n else ""
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "{":
            end, inner = _braced(text, i + 2)
            if end < 0:
                raise Refused(f"{where}: {_printable(text[i:i + 40])!r} has no closing '}}'")
            out.append(_expand(inner, env, where, host, depth))
            i = end + 1
        else:
            m = re.match(r"[A-Za-z_][A-Za-z0-9_]*", text[i + 1:])
            if not m:
                out.append("$")
                i += 1
                continue
            value, from_host = env.get(m.group(0))
            if from_host:
                host.add(m.group(0))
            out.append(value or "")
            i += 1 + m.end()
    return "".join(out)


def _braced(text: str, start: int) -> tuple[int, str]:
    """(index of the matching '}', what is between) for a ${ opened just before `start`."""
    depth, i = 1, start
    while i < len(text):
        if text.startswith("${", i):
            depth += 1
            i += 2
            continue
        if text[i] == "}":
            depth -= 1
            if depth == 0:
                return i, text[start:i]
        i += 1
    return -1, ""


def _expand(inner: str, env: Env, where: str, host: set, depth: int) -> str:
    m = re.match(r"[A-Za-z_][A-Za-z0-9_]*", inner)
    if not m:
        raise Refused(f"{where}: ${{{_printable(inner)[:40]}}} is not a variable")
    name, rest = m.group(0), inner[m.end():]
    value, from_host = env.get(name)
    if from_host:
        host.add(name)
    if not rest:
        return value or ""
    for op in (":-", "-", ":?", "?", ":+", "+"):
        if rest.startswith(op):
            arg = rest[len(op):]
            unset = value is None or (op.startswith(":") and value == "")
            if op in (":-", "-"):
                return _interpolate(arg, env, where, host, depth + 1) if unset else value
            if op in (":+", "+"):
                return "" if unset else _interpolate(arg, env, where, host, depth + 1)
            if unset:
                raise Refused(f"{where}: {name} must be set ({_printable(arg)[:80] or 'required'})")
            return value
    raise Refused(f"{where}: ${{{_printable(inner)[:40]}}} is not a variable form compose knows")


def parse_dotenv(text: str, env: Env | None = None, where: str = ".env") -> dict[str, str]:
    """A .env or env_file: NAME=value lines, # comments, optional quotes and `export `."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        name, eq, value = line.partition("=")
        name = name.strip()
        if not ENV_NAME.match(name):
            raise Refused(f"{where}: {_printable(line)[:60]!r} is not NAME=value")
        if not eq:
            continue  # NAME alone: the host's value; never taken from a file
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
            if line.split("=", 1)[1].strip()[0] == '"':
                value = value.replace("\\n", "\n")
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        out[name] = value
    return out


# -- reading and merging ------------------------------------------------------------


def _cache_path(data: bytes) -> str:
    """Where the parse of these compose file bytes is kept (in the host's state dir, named by their hash)."""
    return os.path.join(paths.state_dir(), layout.COMPOSE_PARSED, sha256_hex(data) + ".json")


def _load_yaml(data: bytes, where: str) -> dict:
    """A compose file's YAML; the parse of the same bytes is reused (a warm ab-up imports no YAML parser)."""
    import json  # lazy: json, only for a compose-based devcontainer (the module is imported only for one)

    path = _cache_path(data)
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read())
        if isinstance(doc, dict):
            return doc
    except (OSError, ValueError):
        pass
    doc = _parse_yaml(data, where)
    try:
        text = json.dumps(doc)
        if json.loads(text) == doc:  # plain data only: string keys, no dates or sets
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            atomic_write(path, text.encode())
    except (TypeError, ValueError, RecursionError, OSError):
        pass  # only a cache
    return doc


def _parse_yaml(data: bytes, where: str) -> dict:
    import yaml  # lazy: PyYAML, only for a compose-based devcontainer whose file is new

    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError:
        raise Refused(f"{where}: not UTF-8 text") from None
    try:
        doc = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # libyaml where present
    except (yaml.YAMLError, RecursionError, ValueError) as e:
        raise Refused(f"{where}: invalid YAML: {_printable(str(e).splitlines()[0] if str(e) else e)[:160]}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise Refused(f"{where}: the top level must be a mapping")
    _count(doc, where)
    return doc


def _count(doc: object, where: str) -> None:
    """Refuse a tree (aliases expanded) larger than MAX_NODES or nested into itself."""
    seen, stack, n = set(), [(doc, 0)], 0
    while stack:
        node, depth = stack.pop()
        n += 1
        if n > MAX_NODES or depth > 100:
            raise Refused(f"{where}: too large or nested too deep (YAML aliases?)")
        if isinstance(node, (dict, list)):
            if id(node) in seen and depth > 50:
                raise Refused(f"{where}: refers to itself (a YAML alias loop)")
            seen.add(id(node))
            items = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
            for k, v in items:
                if not isinstance(k, (str, int, float, bool)) and k is not None:
                    raise Refused(f"{where}: keys must be plain values")
                stack.append((v, depth + 1))


def _walk(node: object, env: Env, where: str, host: dict, path: str) -> object:
    """Interpolate every string of a compose tree (not keys); host: {tree path: host names}."""
    if isinstance(node, dict):
        return {str(k): _walk(v, env, where, host, f"{path}.{k}" if path else str(k)) for k, v in node.items()}
    if isinstance(node, list):
        return [_walk(v, env, where, host, f"{path}[{i}]") for i, v in enumerate(node)]
    if isinstance(node, str):
        value = interpolate(node, env, f"{where}: {path}")
        if value.host:
            host[path] = value.host
        return value
    return node


def _as_map(value: object, where: str, sep: str = "=") -> dict:
    """environment/labels/args as a mapping ({NAME: value or None}) from a mapping or NAME=value list."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(k): v for k, v in value.items()}
    if isinstance(value, list):
        out = {}
        for item in value:
            if not isinstance(item, (str, int, float)) or isinstance(item, bool):
                raise Refused(f"{where}: entries must be strings")
            name, eq, text = str(item).partition(sep)
            out[name.strip() if sep != "=" else name] = text if eq else None
        return out
    raise Refused(f"{where}: must be a mapping or a list")


def _volume_target(v: object) -> str:
    if isinstance(v, dict):
        return str(v.get("target", ""))
    parts = str(v).split(":")
    return parts[1] if len(parts) > 1 else parts[0]


def merge_service(base: dict, over: dict, where: str) -> dict:
    """One service of a later compose file over an earlier one's, as compose merges them."""
    out = dict(base)
    for key, value in over.items():
        old = out.get(key)
        if key in BY_NAME and old is not None:
            sep = ":" if key == "extra_hosts" else "="
            out[key] = {**_as_map(old, f"{where}.{key}", sep), **_as_map(value, f"{where}.{key}", sep)}
        elif key in APPENDED and isinstance(old, list) and isinstance(value, list):
            out[key] = old + [v for v in value if v not in old]
        elif key == "volumes" and isinstance(old, list) and isinstance(value, list):
            kept = {_volume_target(v): v for v in old}
            kept.update({_volume_target(v): v for v in value})
            out[key] = list(kept.values())
        elif key == "build" and isinstance(old, dict) and isinstance(value, dict):
            out[key] = merge_service(old, value, f"{where}.build")
        elif key == "build" and isinstance(old, dict) and isinstance(value, str):
            out[key] = {**old, "context": value}
        elif key in REPLACED or not (isinstance(old, dict) and isinstance(value, dict)):
            out[key] = value
        else:
            out[key] = {**old, **value}
    return out


def merge(docs: list[dict], where: str) -> dict:
    """Compose files merged in order: services by service, the other top-level mappings key by key."""
    out = {}
    for doc in docs:
        for key, value in doc.items():
            if key == "services":
                if not isinstance(value, dict):
                    raise Refused(f"{where}: services must be a mapping")
                services = out.setdefault("services", {})
                for name, svc in value.items():
                    if svc is None:
                        svc = {}
                    if not isinstance(svc, dict):
                        raise Refused(f"{where}: service {_printable(name)!r} must be a mapping")
                    services[name] = merge_service(services.get(name, {}), svc, f"{where}: services.{name}")
            elif isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = {**out[key], **value}
            else:
                out[key] = value
    return out


class Project:
    """The compose files of a devcontainer, read, merged and interpolated.

    `files`: [(path, bytes)] read (compose files, .env, env_files, extended
    files), for trust; `services`: the merged services; `host`: {tree path:
    host variable names} of interpolated values; `dir`: the compose project
    folder (the first file's).
    """

    def __init__(self, paths: list[str], root: str, environ: Mapping[str, str]) -> None:
        self.root = root
        self.files = []
        self.host = {}
        self.dir = os.path.dirname(paths[0])
        dotenv_path = os.path.join(self.dir, ".env")
        dotenv = {}
        if os.path.lexists(dotenv_path):
            dotenv = parse_dotenv(self._read(dotenv_path, ".env").decode("utf-8", "replace"), None, dotenv_path)
        self.env = Env(environ, dotenv)
        docs = []
        for path in paths:
            docs.append(self._doc(path))
        merged = merge(docs, paths[0])
        if "include" in merged:
            raise Refused(f"{paths[0]}: 'include' of other compose projects is not supported")
        services = merged.get("services") or {}
        if not isinstance(services, dict):
            raise Refused(f"{paths[0]}: services must be a mapping")
        for name in services:
            if not isinstance(name, str) or not SERVICE_NAME.fullmatch(name):
                raise Refused(f"{paths[0]}: {_printable(name)!r} is not a service name")
        self.volumes = merged.get("volumes") if isinstance(merged.get("volumes"), dict) else {}
        self.services = {name: self._extended(name, svc, services, 0) for name, svc in services.items()}
        self.top = merged

    def _read(self, path: str, what: str) -> bytes:
        try:
            _inside(os.path.normpath(path), self.root, what, what)
        except ConfigError as e:
            raise Refused(e.message) from None
        try:
            data = read_project_file(path)
        except AgentshError as e:
            raise Refused(e.message) from None
        self.files.append((path, data))
        return data

    def _doc(self, path: str) -> dict:
        data = self._read(path, "compose file")
        return _walk(_load_yaml(data, path), self.env, path, self.host, "")

    def _extended(self, name: str, svc: dict, services: dict, depth: int) -> dict:
        ext = svc.get("extends")
        if ext is None:
            return svc
        if depth >= MAX_EXTENDS:
            raise Refused(f"services.{name}: extends nested too deep")
        if isinstance(ext, str):
            ext = {"service": ext}
        if not isinstance(ext, dict) or not isinstance(ext.get("service"), str):
            raise Refused(f"services.{name}.extends: must name a service")
        if ext.get("file"):
            path = os.path.normpath(os.path.join(self.dir, str(ext["file"])))
            if not (path == self.root or path.startswith(self.root.rstrip("/") + "/")):
                raise Refused(f"services.{name}.extends: {path} is outside the project")
            other = merge([self._doc(path)], path).get("services") or {}
        else:
            other = services
        base = other.get(ext["service"]) if isinstance(other, dict) else None
        if not isinstance(base, dict) or base is svc:
            raise Refused(f"services.{name}.extends: no service {_printable(ext['service'])!r} to extend")
        base = self._extended(ext["service"], base, other, depth + 1)
        rest = {k: v for k, v in svc.items() if k != "extends"}
        return merge_service({k: v for k, v in base.items() if k not in ("depends_on", "links", "volumes_from")},
                             rest, f"services.{name}")

    def env_file(self, value: object, where: str) -> dict[str, str]:
        """The variables of a service's env_file entries (files inside the project, read for trust)."""
        entries = value if isinstance(value, list) else [value]
        out = {}
        for entry in entries:
            required = True
            if isinstance(entry, dict):
                required = entry.get("required", True) is not False
                entry = entry.get("path")
            if not isinstance(entry, str) or not entry:
                raise Refused(f"{where}: entries must be paths")
            path = os.path.normpath(os.path.join(self.dir, entry))
            if not required and not os.path.lexists(path):
                continue
            data = self._read(path, "env_file")
            out.update(parse_dotenv(data.decode("utf-8", "replace"), None, path))
        return out


def compose_paths(dev: object, value: object) -> list[str]:
    """The dockerComposeFile entries as absolute paths (relative to the devcontainer.json's folder)."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(v, str) and v for v in items):
        raise Refused("dockerComposeFile must be a path or a list of paths")
    where = f"{dev.path}: key 'dockerComposeFile'"
    return [os.path.normpath(os.path.join(dev.dir, str(dev.sub(v, where)))) for v in items]


# -- the sandbox service ----------------------------------------------------------------


def flag_words(key: str, value: object) -> list[str]:
    """A compose key's value as the engine flag words runArgs would have (for RUN_FLAGS to judge)."""
    flag = AS_FLAG[key]
    takes = RUN_FLAGS.get(flag, (True, None))[0]
    if not takes:
        return [flag] if value not in (False, None, "false", "no") else []
    if value is None or value is False or value == [] or value == {}:
        return []
    if isinstance(value, dict):
        sep = ":" if key == "extra_hosts" else "="
        values = [f"{k}{sep}{v}" if v is not None else str(k) for k, v in value.items()]
    elif isinstance(value, list):
        values = [str(v) if not isinstance(v, dict) else ",".join(f"{k}={w}" for k, w in v.items()) for v in value]
    else:
        values = [str(value).lower() if isinstance(value, bool) else str(value)]
    if key == "logging" and isinstance(value, dict):
        values = [str(value.get("driver", ""))]
    words = []
    for v in values:
        words += [flag, v]
    return words


def sort_flags(key: str, value: object, root: str) -> tuple[list[str], list[tuple[str, str]], list[tuple[str, str]]]:
    """(run args to pass, refused, ignored) for a compose key that is an engine flag."""
    words = flag_words(key, value)
    if not words:
        return [], [], []
    if key == "network_mode" and str(value).startswith("service:"):
        return [], [(f"{key} {_printable(value)}", "shares a sibling's network namespace; the sandbox's network is "
                     "agentsh's")], []
    got = run_args(words, root)
    refused = [(f"{key} {_printable(shown.split(' ', 1)[1])}" if " " in shown else key, why)
               for shown, why in got.refused]
    ignored = [(f"{key}", why) for _, why in got.ignored]
    return got.args, refused, list(dict.fromkeys(ignored))


UNKNOWN = "not a compose service property agentsh knows"
ORDER = ("extends", "image", "build", "env_file", "environment", "user", "working_dir", "volumes", "tmpfs", "ports",
         "entrypoint", "command")


def _host_of(value: object) -> frozenset:
    """The host variables any string in `value` was interpolated from."""
    if isinstance(value, dict):
        return frozenset().union(*(_host_of(v) for v in value.values())) if value else frozenset()
    if isinstance(value, list):
        return frozenset().union(*(_host_of(v) for v in value)) if value else frozenset()
    return getattr(value, "host", frozenset())


def _env_map(value: object, where: str) -> dict:
    """environment as {NAME: Resolved or None}, the host names of a NAME=value list entry kept."""
    out = {}
    items = value.items() if isinstance(value, dict) else None
    if items is None:
        if not isinstance(value, list):
            raise Refused(f"{where}: must be a mapping or a list")
        items = []
        for item in value:
            if not isinstance(item, str):
                raise Refused(f"{where}: entries must be NAME=value strings")
            name, eq, text = item.partition("=")
            text = Resolved(text)
            text.host = getattr(item, "host", frozenset())
            items.append((name, text if eq else None))
    for name, v in items:
        if not isinstance(name, str) or not ENV_NAME.match(name):
            raise Refused(f"{where}: {_printable(name)!r} is not a variable name")
        if v is None:
            out[name] = None
            continue
        if isinstance(v, (dict, list)):
            raise Refused(f"{where}.{name}: must be a string")
        text = Resolved("true" if v is True else "false" if v is False else str(v))
        text.host = getattr(v, "host", frozenset())
        out[name] = text
    return out


def _argv(value: object, shell: bool, where: str) -> list[str]:
    if isinstance(value, str):
        return ["/bin/sh", "-c", value] if shell else value.split()
    if isinstance(value, list) and all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value):
        return [str(v) for v in value]
    raise Refused(f"{where}: must be a string or a list of strings")


def _volume(value: object, where: str) -> dict:
    """A service volume as {type, source, target, readonly}."""
    if isinstance(value, dict):
        kind = str(value.get("type", "volume"))
        return {"type": kind, "source": str(value.get("source") or ""), "target": str(value.get("target") or ""),
                "readonly": value.get("read_only") is True}
    if not isinstance(value, str) or not value:
        raise Refused(f"{where}: entries must be strings or mappings")
    parts = value.split(":")
    if len(parts) == 1:
        return {"type": "volume", "source": "", "target": parts[0], "readonly": False}
    src, dst, mode = parts[0], parts[1], ",".join(parts[2:])
    kind = "bind" if src.startswith(("/", ".", "~")) else "volume"
    return {"type": kind, "source": src, "target": dst, "readonly": "ro" in mode.split(",")}


class Applier:
    """Puts a compose project's sandbox service into a Devcontainer and sorts its siblings."""

    def __init__(self, dev: object, proj: Project, name: str) -> None:
        self.dev, self.proj, self.name = dev, proj, name
        self.binds = []  # (target, host path) of binds of the project itself: the project's own path instead

    def label(self, svc: str, key: str) -> str:
        return f"services.{svc}.{key}"

    def service(self, svc: dict, override: object) -> None:
        dev = self.dev
        keys = sorted(svc, key=lambda k: (ORDER.index(k) if k in ORDER else len(ORDER), k))
        command = entrypoint = None
        for key in keys:
            value, label = svc[key], self.label(self.name, key)
            where = f"{self.proj.dir}: {label}"
            if key == "extends":
                dev.honoured.append(label)
            elif key == "image":
                dev.image = check_image(str(value), where)
                dev.honoured.append(label)
            elif key == "build":
                self.build(value, where)
                dev.honoured.append(label)
            elif key == "env_file":
                dev._env_into({k: Resolved(v) for k, v in self.proj.env_file(value, where).items()}, label)
                dev.honoured.append(label)
            elif key == "environment":
                self.environment(_env_map(value, where), label)
                dev.honoured.append(label)
            elif key == "user":
                dev._user(str(value), {}, label)
            elif key == "working_dir":
                self.workdir(value, label)
            elif key == "volumes":
                self.volumes(value, where, label)
            elif key in ("ports", "tmpfs"):
                entries = value if isinstance(value, list) else [value]
                flag = "-p" if key == "ports" else "--tmpfs"
                words = [w for e in entries for w in (flag, str(e.get("target", "")) if isinstance(e, dict) else str(e))]
                got = run_args(words, dev.root)
                dev.ports += [p for p in got.ports if p not in dev.ports]
                dev.tmpfs += got.tmpfs
                dev.not_applied += [(f"{label} {_printable(f)}", why) for f, why in got.refused]
                dev.ignored += [(label, why) for _, why in got.ignored]
                dev.honoured.append(label)
            elif key == "command":
                command = value
            elif key == "entrypoint":
                entrypoint = value
            elif key in AS_FLAG:
                args, refused, ignored = sort_flags(key, value, dev.root)
                dev.run_args += args
                dev.not_applied += [(f"services.{self.name}.{f}", why) for f, why in refused]
                dev.ignored += [(f"services.{self.name}.{f}", why) for f, why in ignored]
                if not refused:
                    dev.honoured.append(label)
            elif key in REFUSED:
                dev.not_applied.append((label, REFUSED[key]))
            elif key in IGNORED or key.startswith("x-"):
                dev.ignored.append((label, IGNORED.get(key, IGNORED["x-"])))
            else:
                dev.not_applied.append((_printable(label), UNKNOWN))
        self.command(entrypoint, command, override)

    def build(self, value: object, where: str) -> None:
        dev = self.dev
        if isinstance(value, str):
            value = {"context": value}
        if not isinstance(value, dict):
            raise Refused(f"{where}: must be a path or a mapping")
        context = os.path.normpath(os.path.join(self.proj.dir, str(value.get("context", "."))))
        dockerfile = os.path.normpath(os.path.join(context, str(value.get("dockerfile", "Dockerfile"))))
        dev.context = _inside(context, dev.root, f"{where}.context", "build context")
        dev.dockerfile = _inside(dockerfile, dev.root, f"{where}.dockerfile", "Dockerfile")
        if not os.path.isfile(dev.dockerfile):
            raise ConfigError(f"{where}.dockerfile: {dev.dockerfile} does not exist",
                              "create it, or fix the path (it is relative to the build context)")
        args = _env_map(value.get("args") or {}, f"{where}.args")
        dev.build_args = {k: v for k, v in args.items() if v is not None}
        dev.build_host_args = sorted(k for k, v in dev.build_args.items() if v.host)
        if value.get("target") is not None:
            target = str(value["target"])
            if not target or target.startswith("-") or any(c.isspace() for c in target):
                raise ConfigError(f"{where}.target: {target!r} is not a build stage name")
            dev.target = target
        for k in value:
            if k not in ("context", "dockerfile", "args", "target"):
                dev.ignored.append((f"{where.split(': ', 1)[1]}.{_printable(k)}", "build option agentsh does not pass"))

    def environment(self, table: dict, label: str) -> None:
        dev = self.dev
        for name, text in table.items():
            if text is None:  # NAME alone: the host's value, per command like a credential
                if name in dev.vars.environ:
                    dev.exec_env[name] = dev.vars.environ[name]
                    dev.host_vars.add(name)
                    dev.info.append(f"{label}.{name} takes the host's {name}: given to each command like a "
                                    "credential, never to the container at create time")
                continue
            dev._env_into({name: text}, label)

    def workdir(self, value: object, label: str) -> None:
        dev = self.dev
        folder = self.translate(os.path.normpath(str(value)))
        if folder == dev.root or folder.startswith(dev.root.rstrip("/") + "/"):
            dev.workdir = folder
            dev.honoured.append(label)
        else:
            dev.not_applied.append((f"{label} {_printable(value)}",
                                    f"the project is mounted at its own path, {dev.root}; commands start there"))

    def translate(self, path: str) -> str:
        """A path under a bind of the project itself, as the path it has in the sandbox (the project's own)."""
        for target, host in self.binds:
            if path == target or path.startswith(target.rstrip("/") + "/"):
                return os.path.normpath(host + path[len(target):])
        return path

    def volumes(self, value: object, where: str, label: str) -> None:
        dev = self.dev
        if not isinstance(value, list):
            raise Refused(f"{where}: must be a list")
        for i, entry in enumerate(value):
            vol = _volume(entry, where)
            if not vol["target"].startswith("/"):
                raise Refused(f"{where}: {_printable(entry)!r} names no absolute target")
            shown = f"{label}[{i}] {_printable(entry if isinstance(entry, str) else vol['target'])}"
            if vol["type"] == "bind":
                src = vol["source"]
                if src.startswith("~"):
                    dev.not_applied.append((shown, "bind mounts only of paths inside the project"))
                    continue
                host = os.path.normpath(os.path.join(self.proj.dir, src))
                real = os.path.realpath(host)
                if real == dev.root:
                    self.binds.append((vol["target"], dev.root))
                    dev.ignored.append((shown, f"the project is mounted at its own path, {dev.root}"))
                    continue
                if dev.root.startswith(real.rstrip("/") + "/"):  # a folder holding the project (../..:/workspaces)
                    inside = os.path.relpath(dev.root, real)
                    self.binds.append((os.path.join(vol["target"], inside), dev.root))
                    dev.ignored.append((shown, f"only the project in it is mounted, at its own path {dev.root} "
                                        f"(for {os.path.join(vol['target'], inside)})"))
                    continue
                if not real.startswith(dev.root.rstrip("/") + "/"):
                    dev.not_applied.append((shown, "bind mounts only of paths inside the project"))
                    continue
                dev._mount_entry({"type": "bind", "source": host, "target": self.translate(vol["target"]),
                                  "readonly": str(vol["readonly"]).lower()}, entry, where, i)
            elif vol["type"] == "volume":
                name = vol["source"]
                if self.shared_volume(name):
                    dev.not_applied.append((shown, SHARED_VOLUME))
                    continue
                dev._mount_entry({"type": "volume", "source": name, "target": vol["target"],
                                  "readonly": str(vol["readonly"]).lower()}, entry, where, i)
            elif vol["type"] == "tmpfs":
                dev._mount_entry({"type": "tmpfs", "target": vol["target"]}, entry, where, i)
            else:
                dev.not_applied.append((shown, "only bind, volume and tmpfs mounts"))
        dev.honoured.append(label)

    def command(self, entrypoint: object, command: object, override: object) -> None:
        dev = self.dev
        if entrypoint is None and command is None:
            return
        keys = [self.label(self.name, k) for k, v in (("entrypoint", entrypoint), ("command", command)) if v is not None]
        if override is True:
            for k in keys:
                dev.ignored.append((k, "overrideCommand: the sandbox runs agentsh's keep-alive"))
            return
        argv = []
        if entrypoint is not None:
            argv = _argv(entrypoint, True, keys[0])
        if command is not None:
            argv += _argv(command, entrypoint is None, keys[-1])
        if argv:
            dev.service_command = argv
            dev.info.append(f"{' and '.join(keys)}: run in the background at each start (the keep-alive is agentsh's "
                            "exec server); output in /tmp/agentsh-service.log inside")
        dev.honoured += keys

    # -- siblings -------------------------------------------------------------------

    def siblings(self, chosen: list[str]) -> dict[str, dict]:
        """The siblings that run alongside, as the data of the compose file agentsh writes for them."""
        services = self.proj.services
        want = [n for n in chosen if n != self.name]
        want += [d for d in _depends(services[self.name]) if d in services and d != self.name and d not in want]
        deps = list(want)
        while deps:  # depends_on, as compose starts them
            for d in _depends(services.get(deps.pop()) or {}):
                if d in services and d != self.name and d not in want:
                    want.append(d)
                    deps.append(d)
        out = {}
        for name in want:
            kept = self.sibling(name, services[name])
            if kept is not None:
                out[name] = kept
        for kept in out.values():
            kept["depends_on"] = [d for d in kept.get("depends_on", []) if d in out]
        return out

    def sibling(self, name: str, svc: dict) -> dict | None:
        dev = self.dev
        where = f"{self.proj.dir}: services.{name}"
        if "build" in svc:
            dev.not_applied.append((self.label(name, "build"), "a sibling is not built by agentsh yet; build its "
                                    "image and name it with image:"))
            return None
        if not isinstance(svc.get("image"), str) or not svc.get("image"):
            dev.not_applied.append((f"services.{name}", "a sibling needs an image"))
            return None
        out = {"image": check_image(str(svc["image"]), f"{where}.image")}
        env = {}
        if svc.get("env_file") is not None:
            env.update(self.proj.env_file(svc["env_file"], f"{where}.env_file"))
        for k, v in _env_map(svc.get("environment") or {}, f"{where}.environment").items():
            if v is None or v.host:
                env.pop(k, None)
                dev.not_applied.append((f"services.{name}.environment.{k}", "a host value "
                                        f"({', '.join(sorted(v.host)) if v is not None else k}); a sibling's "
                                        "environment is stored by the engine, so it is withheld"))
                continue
            env[k] = str(v)
        if env:
            out["environment"] = env
        for key, value in svc.items():
            label = self.label(name, key)
            if key in ("image", "environment", "env_file"):
                continue
            if key in SIBLING_KEYS and key not in ("volumes", "depends_on", "labels") and _host_of(value):
                dev.not_applied.append((label, f"a host value ({', '.join(sorted(_host_of(value)))}) would be "
                                        "stored by the engine; withheld"))
                continue
            if key == "volumes":
                out["volumes"] = self.sibling_volumes(name, value, where)
            elif key == "depends_on":
                out["depends_on"] = _depends(svc)
            elif key == "labels":
                labels = {k: str(v) for k, v in _as_map(value, f"{where}.labels").items()
                          if v is not None and not str(k).startswith("io.agentsh") and LABEL.fullmatch(str(k))}
                if labels:
                    out["labels"] = labels
            elif key in ("command", "entrypoint"):
                out[key] = value if isinstance(value, str) else _argv(value, False, f"{where}.{key}")
            elif key in SIBLING_KEYS:
                why = _sibling_value(key, value)
                if why:
                    dev.not_applied.append((label, why))
                else:
                    out[key] = value
            elif key == "ports":
                dev.ignored.append((label, f"the sandbox reaches it as {name}:PORT; forwardPorts \"{name}:PORT\" "
                                    "publishes one on host loopback"))
            elif key in AS_FLAG:
                _, refused, _ = sort_flags(key, value, dev.root)
                if refused:
                    dev.not_applied += [(f"services.{name}.{f}", why) for f, why in refused]
                else:
                    dev.ignored.append((label, "not passed to a sibling"))
            elif key in REFUSED:
                dev.not_applied.append((label, REFUSED[key]))
            elif key in IGNORED or key.startswith("x-"):
                dev.ignored.append((label, IGNORED.get(key, IGNORED["x-"])))
            else:
                dev.not_applied.append((_printable(label), UNKNOWN))
        return out

    def shared_volume(self, name: str | None) -> bool:
        """Whether the compose file declares volume `name` external or with an engine name of its own."""
        decl = self.proj.volumes.get(name) if name else None
        return isinstance(decl, dict) and bool(decl.get("external") or decl.get("name"))

    def sibling_volumes(self, name: str, value: object, where: str) -> list[dict]:
        dev = self.dev
        if not isinstance(value, list):
            raise Refused(f"{where}.volumes: must be a list")
        out = []
        for i, entry in enumerate(value):
            vol = _volume(entry, f"{where}.volumes")
            shown = f"services.{name}.volumes[{i}] {_printable(entry if isinstance(entry, str) else vol['target'])}"
            if not vol["target"].startswith("/") or any(c in vol["target"] for c in ":,") \
                    or control_character(vol["target"]):
                raise Refused(f"{where}.volumes: {_printable(entry)!r} names no absolute target (without ':' or ',')")
            if vol["type"] == "bind":
                host = os.path.realpath(os.path.join(self.proj.dir, vol["source"]))
                git = os.path.join(dev.root, ".git")
                if vol["source"].startswith("~") or not host.startswith(dev.root.rstrip("/") + "/") \
                        or host == git or host.startswith(git + "/"):
                    dev.not_applied.append((shown, "bind mounts only of paths inside the project (not its .git)"))
                    continue
                if ":" in host:
                    dev.not_applied.append((shown, "the path holds ':', which container engines cannot mount"))
                    continue
                out.append({"type": "bind", "source": host, "target": vol["target"], "readonly": vol["readonly"]})
            elif vol["type"] == "volume":
                src = vol["source"]
                if self.shared_volume(src):
                    dev.not_applied.append((shown, SHARED_VOLUME))
                    continue
                if src and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}", src):
                    raise Refused(f"{where}.volumes: {_printable(src)!r} is not a volume name")
                out.append({"type": "volume", "source": src, "target": vol["target"], "readonly": vol["readonly"]})
            elif vol["type"] == "tmpfs":
                out.append({"type": "tmpfs", "source": "", "target": vol["target"], "readonly": False})
            else:
                dev.not_applied.append((shown, "only bind, volume and tmpfs mounts"))
        return out


WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")  # a signal, a size
LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_./-]{0,127}")
USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,31})?")


def _sibling_value(key: str, value: object) -> str:
    """Why a sibling's value is not passed on ("" when it is): values the compose tool turns into engine flags."""
    if key == "user":
        return "" if isinstance(value, (str, int)) and USER.fullmatch(str(value)) else "not a user name or uid[:gid]"
    if key == "working_dir":
        return "" if isinstance(value, str) and value.startswith("/") and not control_character(value) else \
            "not an absolute path"
    if key in ("stop_signal", "shm_size"):
        return "" if isinstance(value, (str, int)) and WORD.fullmatch(str(value)) else "not a single word"
    if key == "tmpfs":
        items = [value] if isinstance(value, str) else value
        ok = isinstance(items, list) and all(isinstance(t, str) and t.startswith("/") and not control_character(t)
                                              for t in items)
        return "" if ok else "entries must be absolute paths"
    if key == "healthcheck":
        return "" if isinstance(value, dict) and all(isinstance(v, (str, int, float, bool, list)) for v in
                                                      value.values()) else "must be a mapping"
    return ""


def _depends(svc: dict) -> list[str]:
    deps = svc.get("depends_on")
    if isinstance(deps, dict):
        return [str(k) for k in deps]
    if isinstance(deps, list):
        return [str(d) for d in deps if isinstance(d, str)]
    return []


TOP_IGNORED = {"version": "obsolete in compose", "name": "agentsh names the compose project after the sandbox",
               "networks": "the sandbox and its siblings share the project's internal network",
               "volumes": "", "services": "", "secrets": "services' secrets are refused",
               "configs": "services' configs are refused"}


def apply(dev: object, data: dict) -> bool:
    """Take a compose-based devcontainer.json into `dev`; False when nothing of it is applied (said in one line)."""
    files = data.get("dockerComposeFile")
    shown = ", ".join(map(_printable, files)) if isinstance(files, list) else _printable(files)
    proj = None
    try:
        paths = compose_paths(dev, files)
        proj = Project(paths, dev.root, dev.vars.environ)
        name = data.get("service")
        if not isinstance(name, str) or name not in proj.services:
            raise Refused(f"service {_printable(name)!r} is not a service of the compose files"
                          if name is not None else "no 'service' names the sandbox's service")
        run = data.get("runServices")
        if run is not None and (not isinstance(run, list) or not all(isinstance(r, str) for r in run)):
            raise Refused("runServices must be a list of service names")
        unknown = [r for r in (run or []) if r not in proj.services]
        if unknown:
            raise Refused(f"runServices names {', '.join(map(_printable, unknown))}, not services of the compose "
                          "files")
        shutdown = data.get("shutdownAction", "stopCompose")
        if shutdown not in ("none", "stopCompose", "stopContainer"):
            raise Refused(f"shutdownAction {_printable(shutdown)!r} is not none, stopCompose or stopContainer")
        override = data.get("overrideCommand", False)
        applier = Applier(dev, proj, name)
        applier.service(proj.services[name], override)
        dev.siblings = applier.siblings(list(proj.services) if run is None else run)
        dev._compose_binds = applier.binds
    except Refused as e:
        if proj is not None:
            dev.compose_files = list(proj.files)
        dev.not_applied.append((f"dockerComposeFile {shown}", f"{e.why}; nothing of this file is applied"))
        for key in data:
            if key != "dockerComposeFile":
                dev.not_applied.append((_printable(key), "with it"))
        _reset(dev)
        return False
    dev.compose_files = list(proj.files)
    dev.service, dev.shutdown, dev.compose_dir = name, shutdown, proj.dir
    dev.honoured += ["dockerComposeFile", "service"] + [k for k in ("runServices", "shutdownAction") if k in data]
    if "overrideCommand" in data:
        dev.honoured.append("overrideCommand")
    for key in proj.top:
        if key in TOP_IGNORED and TOP_IGNORED[key]:
            dev.ignored.append((f"compose {key}", TOP_IGNORED[key]))
        elif key not in TOP_IGNORED and not str(key).startswith("x-"):
            dev.ignored.append((f"compose {_printable(key)}", "not a compose top-level property agentsh uses"))
    return True


def _reset(dev: object) -> None:
    """Nothing of a refused compose project stays applied."""
    dev.image = dev.dockerfile = dev.context = dev.target = None
    dev.build_args, dev.build_host_args = {}, []
    dev.user = None
    dev.env, dev.exec_env, dev.late_env, dev.unset = {}, {}, {}, []
    dev.host_vars = set()
    dev.mounts, dev.volumes, dev.tmpfs, dev.ports, dev.run_args = [], [], [], [], []
    dev.lifecycle, dev.siblings, dev.service_command = {}, {}, None
    dev.workdir = dev.root
    dev.honoured = []
    dev.info = [i for i in dev.info if False]
