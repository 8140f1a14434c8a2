"""Configuration: defaults < user config.toml < trusted .agentsh.toml < flags.

Every key is declared once in SCHEMA with its type and default; an unknown key
or a wrong type is an error naming the file and the key. An untrusted project
file is never parsed (a hostile repo cannot add mounts or grants): the caller
gets a one-line notice and the user config alone.
"""

from __future__ import annotations

import marshal
import os
import stat

from agentsh import __version__
from agentsh.base import layout, paths
from agentsh.base.digest import sha256_hex
from agentsh.base.errors import ConfigError, FileError, UsageError
from agentsh.base.state import Store
from agentsh.policy import devcontainer_files, trust
from agentsh.policy.values import (  # noqa: F401 (DEFAULT_IMAGE, ENV_NAME, ...: also for callers)
    CAPABILITIES,
    CAPABILITY,
    CREDENTIAL_NAME,
    DEFAULT_IMAGE,
    ENV_NAME,
    MAX_CPUS,
    MAX_PIDS,
    SIZE,
    Config,
    Pattern,
    _no_control,
    _str,
    _type,
    check_host_path,
    check_image,
    check_sandbox_path,
    control_character,
)

TYPE_CHECKING = False  # typing stays off the hot paths
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any, NoReturn

    from agentsh.base.state import Store
    from agentsh.host.project import Project
    from agentsh.policy.devcontainer import Devcontainer
    from agentsh.policy.values import Pattern


def _names(pattern: Pattern, what: str) -> Callable[[object, str], list[str]]:
    def check(value: object, where: str) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where} must be a list of strings")
        for v in value:
            if not pattern.match(v):
                raise ConfigError(f"{where}: {v!r} is not a valid {what}")
        return list(value)

    return check


def _cap_add(value: object, where: str) -> list[str]:
    _names(CAPABILITY, "capability name")(value, where)
    for v in value:
        if v.removeprefix("CAP_") not in CAPABILITIES:
            raise ConfigError(f"{where}: {v!r} is not a Linux capability",
                              "name each capability, e.g. NET_RAW or SYS_PTRACE (see capabilities(7))")
    return list(value)


def _positive_int(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{where} must be a positive integer, not {value!r}")
    return value


def _pids(value: object, where: str) -> int:
    _positive_int(value, where)
    if value > MAX_PIDS:
        raise ConfigError(f"{where} must be at most {MAX_PIDS}, not {value}")
    return value


def _size(value: object, where: str) -> str:
    if not isinstance(value, str) or not SIZE.match(value):
        raise ConfigError(f"{where} must be a size such as \"8g\" or \"512m\", not {value!r}")
    return value


MIN_MEMORY = 6 << 20  # the engines refuse less (Podman: "minimum memory limit allowed is 6MB")


def size_bytes(value: str) -> int:
    """A checked size ("512m") in bytes."""
    unit = value[-1].lower() if value[-1].isalpha() else "b"
    number = int(value[:-1] if value[-1].isalpha() else value)
    return number << {"b": 0, "k": 10, "m": 20, "g": 30}[unit]


def _memory(value: object, where: str) -> object:
    _size(value, where)
    if size_bytes(value) < MIN_MEMORY:
        raise ConfigError(f"{where} must be at least 6m (the engine refuses less), not {value!r}",
                          "give a size such as \"512m\" or \"8g\", or remove the key for no limit")
    return value


def _cpus(value: object, where: str) -> int | float:
    import math  # lazy: only for a `cpus` value

    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{where} must be a positive number, not {value!r}")
    if value > MAX_CPUS:
        raise ConfigError(f"{where} must be at most {MAX_CPUS}, not {value}")
    return value


def _ca_bundle(value: object, where: str) -> str:
    """"auto", "host", "image" or the path of a PEM file (checked when it is used: sandbox.ca_bundle_source)."""
    _str()(value, where)
    if value not in ("auto", "host", "image"):
        check_host_path(value, where, "CA bundle path")
    return value


def _shell(value: object, where: str) -> str:
    _str()(value, where)
    if not value.strip() or value.lstrip().startswith("-"):
        raise ConfigError(f"{where}: {value!r} is not a shell command", "name a program, e.g. \"zsh\" or \"/bin/bash\"")
    return value


def split_mount(entry: str) -> tuple[str, str, str] | None:
    """"HOST:SANDBOX[:ro|rw]" -> (host, sandbox, mode) or None when it is not that shape."""
    parts = entry.split(":")
    if len(parts) not in (2, 3) or not parts[0] or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
        return None
    return parts[0], parts[1], parts[2] if len(parts) == 3 else "rw"


def _mounts(value: object, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where} must be a list of \"HOST:SANDBOX[:ro]\" strings")
    for v in value:
        parts = split_mount(v)
        if parts is None or not parts[1].startswith("/"):
            raise ConfigError(f"{where}: {v!r} is not HOST:SANDBOX[:ro|rw] with an absolute SANDBOX path")
        check_host_path(parts[0], f"{where}: {v!r}", "HOST side")
        check_sandbox_path(parts[1], f"{where}: {v!r}")
    targets = [split_mount(v)[1] for v in value]
    for i, target in enumerate(targets):
        if target in targets[:i]:
            raise ConfigError(f"{where}: two entries mount on {target}",
                              "give each mount its own sandbox path (the engine refuses a duplicate)")
    return list(value)


def _ports(value: object, where: str) -> list[str | int]:
    """Published ports: Docker's [IP:][HOST:]CONTAINER[/PROTO] strings, or bare port numbers."""
    from agentsh.policy.ports import parse  # lazy: re and ipaddress, only for a `ports` value

    if not isinstance(value, list):
        raise ConfigError(f"{where} must be a list of ports such as \"8080:80\" or 3000")
    for v in value:
        try:
            parse(v, "/")
        except UsageError as e:
            raise ConfigError(f"{where}: {e.message}") from None
    return list(value)


def _caches(value: object, where: str) -> list[str]:
    from agentsh.policy.caches import check  # lazy: only for a `caches` value

    return check(value, where)


def _agents(value: object, where: str) -> dict:
    from agentsh.policy.agents import check_overrides  # lazy: only for an [agents] table

    return check_overrides(value, where)


def _network_allow(value: object, where: str) -> list[str]:
    from agentsh.policy.rules import check_allow  # lazy: re and ipaddress, only for a [network] allow list

    return check_allow(value, where)


def _bool(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where} must be true or false, not {value!r}")
    return value


def _devcontainer_name(value: object, where: str) -> str:
    """A folder name under .devcontainer ("." for the top devcontainer.json)."""
    import re  # lazy: re (~2 ms), only to check a devcontainer config name

    if not isinstance(value, str) or not (value == "." or re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", value)):
        raise ConfigError(f"{where}: {value!r} is not a devcontainer config name",
                          "name a folder under .devcontainer (or \".\" for .devcontainer/devcontainer.json)")
    return value


# key -> (checker, default). Tables are nested dicts of the same shape.
SCHEMA = {
    "image": (check_image, DEFAULT_IMAGE),
    "engine": (_str(("podman", "docker")), "podman"),
    "env": (_names(ENV_NAME, "environment variable name"), []),
    "ca_bundle": (_ca_bundle, "auto"),
    "cap_add": (_cap_add, []),
    "pids": (_pids, 4096),
    "memory": (_memory, None),
    "cpus": (_cpus, None),
    "mounts": (_mounts, []),
    "shell": (_shell, None),
    "network": {"mode": (_str(("full", "none", "allow", "learn")), "full"),
                "allow": (_network_allow, [])},
    "lockdown": (_bool, False),
    "git_identity": (_str(("host", "none")), "host"),
    "hook": {"on_enter": (_str(("shell", "up", "none")), "shell"),
             "on_stale": (_str(("warn", "recreate")), "warn")},
    "credentials": (_names(CREDENTIAL_NAME, "credential name"), []),
    "ports": (_ports, []),
    "caches": (_caches, []),
    "agents": (_agents, {}),
    "devcontainer": (_devcontainer_name, None),
    "pull": (_str(("missing", "never")), "missing"),
    "isolation": (_str(("container", "gvisor")), "container"),
}
# Bumped whenever a checker refuses more: a file cached as valid under older rules is checked again.
RULES = 4
# Keys whose values add up across layers instead of replacing each other.
ADDITIVE = {"env", "cap_add", "mounts", "credentials", "allow", "ports"}
# Keys only the user config may set: a project must not reach beyond its own sandbox.
USER_ONLY = {"caches"}


def defaults(schema: dict = SCHEMA) -> dict:
    return {k: defaults(v) if isinstance(v, dict) else (list(v[1]) if isinstance(v[1], list) else v[1])
            for k, v in schema.items()}


def validate(data: dict, source: str, schema: dict = SCHEMA, prefix: str = "") -> dict:
    """Check a parsed TOML table against the schema; returns it unchanged."""
    for key, value in data.items():
        dotted = prefix + key
        where = f"{source}: key '{dotted}'"
        if key not in schema:
            raise ConfigError(f"{source}: unknown key '{dotted}'", "see docs/config.md for the keys agentsh reads")
        spec = schema[key]
        _no_control(value, where)
        if isinstance(spec, dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{where} must be a table ([{dotted}]), not {_type(value)}")
            validate(value, source, spec, dotted + ".")
        else:
            spec[0](value, where)
    return data


def parse(text: str, source: str) -> dict:
    import tomllib  # lazy: only on a config cache miss (see parse_cached)

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: invalid TOML: {e}", "fix the file and run the command again") from None
    return validate(data, source)


def parse_cached(data: bytes, source: str) -> dict:
    """parse() of a file's bytes, remembered by content hash.

    Every command reads the config; the TOML parser (and the typing module it
    pulls in) costs ~5 ms to import, more than the rest of ab-exec's own work.
    A validated result is kept as a marshal file named by the hash of this
    version, the file's path and its bytes, so an edit is never served stale.
    """
    key = sha256_hex(f"{__version__}\0{RULES}\0{source}\0".encode("utf-8", "surrogateescape") + data)[:32]
    cache = os.path.join(paths.state_dir(), layout.config_cache(key))
    try:
        with open(cache, "rb") as f:
            return marshal.load(f)
    except (OSError, EOFError, ValueError, TypeError):
        pass
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{source}: not UTF-8 text", "fix the file's encoding") from None
    parsed = parse(text, source)
    tmp = f"{cache}.tmp.{os.getpid()}"
    try:
        os.makedirs(os.path.dirname(cache), mode=0o700, exist_ok=True)
        with open(tmp, "wb") as f:
            marshal.dump(parsed, f)
        os.replace(tmp, cache)
    except (OSError, ValueError):
        _discard(tmp)  # a cache we cannot write only costs the parse next time
    return parsed


def _discard(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def merge(base: Mapping[str, Any], layer: Mapping[str, Any]) -> dict:
    out = dict(base)
    for key, value in layer.items():
        if isinstance(value, dict):
            out[key] = merge(base.get(key, {}), value)
        elif key in ADDITIVE:
            out[key] = base.get(key, []) + [v for v in value if v not in base.get(key, [])]
        else:
            out[key] = value
    return out


def check_project_layer(layer: dict, source: str, user_file: str | None = None) -> dict:
    """Refuse what only the user config may say (a project must not reach beyond its own sandbox)."""
    for key in USER_ONLY & set(layer):
        raise ConfigError(f"{source}: key '{key}' can only be set in the user config",
                          f"move it to {user_file or paths.user_config_file()}")
    return layer


def merge_project(cfg: Mapping[str, Any], layer: dict, source: str, user_file: str | None = None) -> dict:
    """The config with an allowed project file's layer over it.

    `lockdown` only ever turns on from a project file, and `isolation` only
    ever rises to "gvisor": a repository cannot switch off the lockdown or
    the second kernel your own config asks for.
    """
    check_project_layer(layer, source, user_file)
    out = merge(cfg, layer)
    out["lockdown"] = bool(cfg.get("lockdown")) or bool(layer.get("lockdown"))
    if cfg.get("isolation") == "gvisor":  # nor the second kernel it asks for
        out["isolation"] = "gvisor"
    return out


def devcontainer_choice(flag: str | None = None) -> str | None:
    """Which devcontainer config to use: the --devcontainer flag, else the user config's `devcontainer`."""
    if flag:
        return _devcontainer_name(flag, "--devcontainer")
    user_file = paths.user_config_file()
    if os.path.exists(user_file):
        return parse_cached(trust.read_file(user_file), user_file).get("devcontainer")
    return None


def load(project: Project | None = None, store: Store | None = None,
         flags: Mapping[str, Any] | None = None) -> Config:
    """The effective config for a project (None: user config only)."""
    cfg = defaults()
    notices = []
    user_file = paths.user_config_file()
    if os.path.exists(user_file):
        cfg = merge(cfg, parse_cached(trust.read_file(user_file), user_file))
    trust_state = None
    dev = None
    # The project file, else a devcontainer.json: the file whose trust covers
    # everything the project says about its sandbox (trust.covered_files).
    choice = (flags or {}).get("devcontainer") or cfg.get("devcontainer")
    if choice is not None:
        _devcontainer_name(choice, "devcontainer")
    anchor = trust.anchor(project, choice) if project is not None else None
    if project is not None:

        problem = devcontainer_files.ambiguity(project.root, choice)
        if problem:
            notices.append(problem)
    if anchor:
        if store is None:
            store = Store()
        try:
            data = trust.read_project_file(anchor)
        except trust.NotRegular as e:
            notices.append(f"{e.message}; ignoring it")
            data, trust_state = None, trust.BLOCKED
        if data is not None:
            # One read of every covered file: what is hashed is what is parsed.
            covered = trust.cover(anchor, data, choice)
            trust_state, record = trust.status_record(store, anchor, data, covered=covered)
            if trust_state == trust.ALLOWED:
                if anchor == project.config_file:
                    cfg = merge_project(cfg, parse_cached(data, anchor), anchor, user_file)
                if covered.error is not None:
                    raise covered.error
                dev = covered.devcontainer
                if dev is not None:
                    notices += dev.notices()
                    trust.expect_build(dev, record)  # what sandbox.build_image may build, and from which bytes
            elif trust_state == trust.DENIED:
                notices.append(f"{anchor} is denied; ignoring it (run 'ab-allow' to trust it)")
            else:
                files = covered.paths()
                also = f" (with {', '.join(os.path.relpath(f, project.root) for f in files)})" if files else ""
                notices.append(f"{anchor}{also} is not trusted (new or changed); ignoring it. "
                               "Run 'ab-allow' to trust its content.")
    env_engine = os.environ.get("AGENTSH_ENGINE")
    if env_engine:
        cfg = merge(cfg, validate({"engine": env_engine}, "AGENTSH_ENGINE"))
    if flags:
        given = {k: v for k, v in flags.items() if v is not None}
        try:
            validate(given, "command line")
        except ConfigError as e:
            raise UsageError(e.message, e.fix) from None
        cfg = merge(cfg, given)
    return Config(cfg, project_file=project.config_file if project else None, project_trust=trust_state,
                  notices=notices, devcontainer=dev,
                  flag_keys=(k for k, v in (flags or {}).items() if v is not None))


# -- what a project file widens -------------------------------------------------------


class Review:
    """A project's anchor read once and checked like user input, for ab-allow and ab-status.

    `covered`: the trust.Covered snapshot (what a trust record would hash);
    `layer`: the project file's parsed keys ({} for a devcontainer.json anchor);
    `build`: trust.build_digest of its devcontainer build, or None;
    `widens`: what it adds to the sandbox (widened()).
    """

    def __init__(self, covered: trust.Covered, layer: dict, build: dict | None, widens: dict) -> None:
        self.covered, self.layer, self.build, self.widens = covered, layer, build, widens


def review(anchor_path: str, with_build: bool = True, choice: str | None = None) -> Review:
    """Read and validate a project's anchor and what it covers; a ConfigError names file, key and fix."""
    covered = trust.cover(anchor_path, trust.read_project_file(anchor_path), choice)
    layer = {}
    if os.path.basename(anchor_path) == trust.PROJECT_FILE:
        layer = check_project_layer(parse_cached(covered.data, anchor_path), anchor_path)
    if covered.error is not None:
        raise covered.error
    ca = layer.get("ca_bundle")
    if ca is not None and ca not in ("auto", "host", "image"):
        try:  # the file it names is checked now too, not only when a sandbox is made
            read_ca_bundle(os.path.realpath(os.path.expanduser(ca)), ca)
        except ConfigError as e:
            raise ConfigError(f"{anchor_path}: key 'ca_bundle': {e.message}", e.fix) from None
    build = trust.build_info(covered) if with_build else None
    return Review(covered, layer, build, widened(layer, covered.devcontainer, build))


def widened(layer: Mapping[str, Any], dev: Devcontainer | None = None, build: dict | None = None) -> dict:
    """What a project file's layer and its devcontainer add to the sandbox, as stable JSON-ready keys.

    mounts (host paths resolved as they would be mounted), credentials,
    cap_add, network (mode and rules), ports, ca_bundle, caches, env (host
    variable names passed in), image, user, limits, agents (per profile:
    credentials, network sets, env names) and build (the devcontainer's
    Dockerfile and context, with the number of files and bytes it reads).
    """
    mounts = []
    for entry, origin in [*((m, "config") for m in layer.get("mounts", ())),
                          *((m, "devcontainer") for m in (dev.mounts if dev else ()))]:
        host, sandbox_path, mode = split_mount(entry) or (entry, "", "rw")
        mounts.append({"host": os.path.realpath(os.path.expanduser(host)), "sandbox": sandbox_path, "mode": mode,
                       "from": origin})
    agents = {}
    for name, table in sorted((layer.get("agents") or {}).items()):
        got = {k: list(table[k]) for k in ("credentials", "network") if table.get(k)}
        if table.get("env"):
            got["env"] = sorted(table["env"])
        if got:
            agents[name] = got
    network = layer.get("network") or {}
    ca = layer.get("ca_bundle")
    if ca is not None and ca not in ("auto", "host", "image"):
        ca = os.path.realpath(os.path.expanduser(ca))
    if build is not None:
        build = {k: build[k] for k in ("dockerfile", "context", "files", "bytes")}
        build["args"] = sorted(dev.build_args) if dev else []
    return {
        "mounts": mounts,
        "credentials": list(layer.get("credentials", ())),
        "cap_add": list(layer.get("cap_add", ())),
        "network": {"mode": network.get("mode"), "allow": list(network.get("allow", ()))},
        "ports": [str(p) for p in [*layer.get("ports", ()), *(dev.ports if dev else ())]],
        "ca_bundle": ca,
        "caches": list(layer.get("caches", ())),
        "env": list(dict.fromkeys([*layer.get("env", ()), *sorted(dev.host_vars if dev else ())])),
        "image": layer.get("image") or (dev.image if dev else None),
        "user": dev.user if dev else None,
        "limits": {k: layer[k] for k in ("pids", "memory", "cpus") if k in layer},
        "agents": agents,
        "build": build,
        "features": [{"id": f.id, "source": f.ref, "files": len(f.files), "registry": f.oci is not None}
                     for f in (dev.features if dev else ())],
        "siblings": [{"service": name, "image": svc["image"],
                      "mounts": [f"{v['source']} -> {v['target']}" for v in svc.get("volumes", ())
                                 if v["type"] == "bind"],
                      "ports": [p for s, p in (dev.sibling_ports if dev else ()) if s == name]}
                     for name, svc in sorted((dev.siblings if dev else {}).items())],
    }


def widen_lines(w: Mapping[str, Any]) -> list[tuple[str, str]]:
    """widened() as `label  value` lines for a terminal (control characters escaped); [] when nothing."""
    def show(text: object) -> str:
        text = str(text)
        return text if control_character(text) is None else ascii(text)[1:-1]

    lines = []
    for m in w["mounts"]:
        where = "" if m["from"] == "config" else ", from devcontainer.json"
        lines.append(("host mount", f"{m['host']} -> {m['sandbox']} ({m['mode']}{where})"))
    for key, label in (("credentials", "credentials"), ("cap_add", "cap_add"), ("ports", "ports"),
                       ("caches", "caches"), ("env", "env")):
        if w[key]:
            lines.append((label, ", ".join(w[key]) + (" (host values passed in)" if key == "env" else "")))
    if w["network"]["mode"]:
        lines.append(("network", f"mode {w['network']['mode']}"))
    if w["network"]["allow"]:
        lines.append(("network", "allow " + ", ".join(w["network"]["allow"])))
    for key in ("ca_bundle", "image", "user"):
        if w[key]:
            lines.append((key, w[key]))
    if w["limits"]:
        lines.append(("limits", ", ".join(f"{k} {v}" for k, v in w["limits"].items())))
    for name, got in w["agents"].items():
        lines.append((f"agent {name}", "; ".join(f"{k} {', '.join(v)}" for k, v in got.items())))
    for f in w.get("features", ()):
        what = ("from its registry at ab-up, pinned to one digest" if f.get("registry")
                else f"{f['files']} files")
        lines.append(("feature", f"{show(f['source'])} ({what}): its install.sh runs as root in a build "
                                 "layer, with network access"))
    for sib in w.get("siblings", ()):
        mounts = f", host mounts {', '.join(sib['mounts'])}" if sib["mounts"] else ""
        ports = f", host loopback ports for {', '.join(map(str, sib['ports']))}" if sib["ports"] else ""
        lines.append(("sibling", f"{sib['service']}: image {sib['image']}{mounts}{ports} (compose service, runs "
                                 "alongside the sandbox)"))
    b = w["build"]
    if b:
        args = f", build args {', '.join(b['args'])}" if b["args"] else ""
        lines.append(("build", f"{b['dockerfile']} with context {b['context']} ({b['files']} files, "
                               f"{b['bytes']} bytes{args}), built by the host's engine with network access"))
    return [(label, show(value)) for label, value in lines]


# -- CA bundles ------------------------------------------------------------------------

PEM_BEGIN = b"-----BEGIN CERTIFICATE-----"
PEM_END = b"-----END CERTIFICATE-----"
MAX_CA_BUNDLE = 16 << 20  # the biggest distribution bundles are well under 1 MB
CA_FIX = ("give a file holding only -----BEGIN CERTIFICATE----- blocks (comments with '#' and blank lines between "
          "them are fine), or set ca_bundle to \"host\" or \"image\"")
_PEM_BLOCK = Pattern(rb"-----BEGIN CERTIFICATE-----([^-]*)-----END CERTIFICATE-----")
_PEM_BODY = Pattern(rb"[ \t]*\r?\n(?:[A-Za-z0-9+/=]+[ \t]*\r?\n)+\Z")


def _gap_ok(gap: bytes, first: bool) -> bool:
    """Text between certificate blocks: blank lines and '#' comments only (each block on its own lines)."""
    lines = gap.split(b"\n")
    if len(lines) == 1 and not first:
        return False  # END and the next BEGIN on one line
    for i, line in enumerate(lines):
        line = line.strip()
        if i == len(lines) - 1:
            return not line  # what precedes BEGIN on its line
        if line and not line.startswith(b"#"):
            return False
    return True


def check_pem(data: bytes, where: str) -> int:
    """Refuse anything but PEM certificate blocks, '#' comments and blank lines; returns the certificate count.

    Each block must decode as base64 to a DER SEQUENCE. The message names the
    first offending line, never its content (the file may be a secret).
    """
    import binascii  # lazy: only when a CA bundle is checked

    body = data[3:] if data.startswith(b"\xef\xbb\xbf") else data
    pos, count = 0, 0
    _PEM_BLOCK.match(b"")  # compiled on first use
    for m in _PEM_BLOCK._compiled.finditer(body):
        inner = m.group(1)
        if not _gap_ok(body[pos:m.start()], pos == 0) or not _PEM_BODY.match(inner):
            _pem_problem(body, where)
        try:
            der = binascii.a2b_base64(inner)  # the alphabet is checked above; whitespace is skipped
        except (binascii.Error, ValueError):
            der = b""
        if not der.startswith(b"\x30"):
            line = body.count(b"\n", 0, m.start()) + 1
            raise ConfigError(f"{where}: the certificate block on line {line} is not a base64 DER certificate", CA_FIX)
        count += 1
        pos = m.end()
    rest = body[pos:].split(b"\n")
    if any(line.strip() and not line.strip().startswith(b"#") for line in rest[1 if count else 0:]) or (
            count and rest[0].strip() and not rest[0].strip().startswith(b"#")):
        _pem_problem(body, where)
    if count == 0:
        raise ConfigError(f"{where} holds no certificate", CA_FIX)
    return count


def _pem_problem(body: bytes, where: str) -> NoReturn:
    inside = None
    lines = body.split(b"\n")
    for n, raw in enumerate(lines[:-1] if lines[-1] == b"" else lines, 1):
        line = raw.rstrip(b"\r").strip(b" \t")
        if inside is None:
            if not line or line.startswith(b"#"):
                continue
            if line == PEM_BEGIN:
                inside, seen = n, 0
                continue
            raise ConfigError(f"{where}: line {n} is outside any PEM certificate block", CA_FIX)
        if line == PEM_END and seen:
            inside = None
            continue
        if line.startswith(PEM_END):
            raise ConfigError(f"{where}: line {n} has more than the END line of a certificate block", CA_FIX)
        if not line or line.strip(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="):
            raise ConfigError(f"{where}: line {n}, in the certificate block begun on line {inside}, is not base64",
                              CA_FIX)
        seen += 1
    if inside is not None:
        raise ConfigError(f"{where}: the certificate block begun on line {inside} has no END line", CA_FIX)
    raise ConfigError(f"{where} is not a PEM certificate bundle", CA_FIX)


def read_ca_bundle(path: str, setting: str) -> bytes:
    """The checked bytes of the CA bundle at `path` (a real path) for config `ca_bundle = setting`.

    Opened without following a symlink and without blocking (a FIFO is no
    bundle), a regular file only, PEM certificates only: so no setting makes
    agentsh mount /etc/shadow, a device or a directory into a sandbox.
    """
    import errno  # lazy: only when a CA bundle is read

    where = f"ca_bundle {setting!r}"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            raise ConfigError(f"{where} is not a file ({path} does not exist)", CA_FIX) from None
        if e.errno == errno.ELOOP:
            raise ConfigError(f"{where}: {path} changed into a symlink while agentsh read it", CA_FIX) from None
        raise ConfigError(f"{where}: cannot read {path}: {e.strerror}", CA_FIX) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a directory" if stat.S_ISDIR(mode) else "a device, FIFO or socket"
            raise ConfigError(f"{where} is not a file ({path} is {kind})", CA_FIX)
        chunks, size = [], 0
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            size += len(chunk)
            if size > MAX_CA_BUNDLE:
                raise ConfigError(f"{where}: {path} is larger than {MAX_CA_BUNDLE >> 20} MB", CA_FIX)
            chunks.append(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    check_pem(data, f"{where}: {path}")
    return data


def ca_bundle_copy(path: str, setting: str) -> str:
    """private_ca_copy() of the checked CA bundle at `path` (a real path); a ConfigError when it is no bundle.

    Checking a bundle costs a few ms, and sandbox.spec asks on every ab-up, so
    the answer is remembered by the file's identity and times (st_ctime cannot
    be set from user space). Whatever is remembered names a copy of bytes that
    were checked, so a stale answer can only mean an older checked bundle.
    """
    directory = os.path.join(paths.state_dir(), layout.CA_COPIES)
    try:
        st = os.stat(path)
    except OSError:
        st = None
    index = None
    if st is not None:
        key = f"{path}\0{st.st_mode}\0{st.st_dev}\0{st.st_ino}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}"
        index = os.path.join(directory, "checked-" + sha256_hex(key)[:32])
        try:
            with open(index, "rb") as f:
                name = f.read(64).decode("ascii")
            copy = os.path.join(directory, name + ".pem")
            if len(name) == 32 and all(c in "0123456789abcdef" for c in name) and os.path.isfile(copy):
                return copy
        except (OSError, UnicodeDecodeError):
            pass
    copy = private_ca_copy(read_ca_bundle(path, setting))
    if index is not None:
        tmp = f"{index}.tmp.{os.getpid()}"
        try:
            with open(tmp, "wb") as f:
                f.write(os.path.basename(copy)[:-4].encode("ascii"))
            os.replace(tmp, index)
        except OSError:
            _discard(tmp)  # only costs the check next time
    return copy


def private_ca_copy(data: bytes) -> str:
    """agentsh's own copy of checked CA bundle bytes (in the state dir, named by their hash): what is mounted.

    The sandbox and the image build then see exactly the bytes that were
    checked, whatever happens to the original file afterwards.
    """
    path = os.path.join(paths.state_dir(), layout.CA_COPIES, sha256_hex(data)[:32] + ".pem")
    if not os.path.isfile(path):

        tmp = f"{path}.tmp.{os.getpid()}"
        try:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except OSError as e:
            _discard(tmp)
            raise FileError(path, e) from None
    return path
