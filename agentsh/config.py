"""Configuration: defaults < user config.toml < trusted .agentsh.toml < flags.

Every key is declared once in SCHEMA with its type and default; an unknown key
or a wrong type is an error naming the file and the key. An untrusted project
file is never parsed (a hostile repo cannot add mounts or grants): the caller
gets a one-line notice and the user config alone.
"""

import os

from . import paths, trust
from .errors import ConfigError


class Pattern:
    """A regular expression compiled on first use: `re` stays off the hot path."""

    def __init__(self, text):
        self.text = text
        self._compiled = None

    def match(self, value):
        if self._compiled is None:
            import re

            self._compiled = re.compile(self.text)
        return self._compiled.match(value)


DEFAULT_IMAGE = "localhost/agentsh:latest"
ENV_NAME = Pattern(r"[A-Za-z_][A-Za-z0-9_]*\Z")
CREDENTIAL_NAME = Pattern(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}\Z")
CAPABILITY = Pattern(r"(CAP_)?[A-Z_]+\Z")
SIZE = Pattern(r"[0-9]+[bkmgBKMG]?\Z")


def _str(choices=None):
    def check(value, where):
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, not {_type(value)}")
        if choices and value not in choices:
            raise ConfigError(f"{where} must be one of {', '.join(choices)}, not {value!r}")
        return value

    return check


def _names(pattern, what):
    def check(value, where):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where} must be a list of strings")
        for v in value:
            if not pattern.match(v):
                raise ConfigError(f"{where}: {v!r} is not a valid {what}")
        return list(value)

    return check


def _positive_int(value, where):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{where} must be a positive integer, not {value!r}")
    return value


def _size(value, where):
    if not isinstance(value, str) or not SIZE.match(value):
        raise ConfigError(f"{where} must be a size such as \"8g\" or \"512m\", not {value!r}")
    return value


def _cpus(value, where):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"{where} must be a positive number, not {value!r}")
    return value


def _mounts(value, where):
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where} must be a list of \"HOST:SANDBOX[:ro]\" strings")
    for v in value:
        parts = v.split(":")
        if len(parts) not in (2, 3) or not parts[0] or not parts[1].startswith("/") or (
            len(parts) == 3 and parts[2] not in ("ro", "rw")
        ):
            raise ConfigError(f"{where}: {v!r} is not HOST:SANDBOX[:ro|rw] with an absolute SANDBOX path")
    return list(value)


def _ports(value, where):
    """Published ports: Docker's [IP:][HOST:]CONTAINER[/PROTO] strings, or bare port numbers."""
    from .errors import UsageError
    from .ports import parse

    if not isinstance(value, list):
        raise ConfigError(f"{where} must be a list of ports such as \"8080:80\" or 3000")
    for v in value:
        try:
            parse(v, "/")
        except UsageError as e:
            raise ConfigError(f"{where}: {e.message}") from None
    return list(value)


def _caches(value, where):
    from .caches import check

    return check(value, where)


def _agents(value, where):
    from .agents import check_overrides

    return check_overrides(value, where)


def _network_allow(value, where):
    from .network import check_allow

    return check_allow(value, where)


def _bool(value, where):
    if not isinstance(value, bool):
        raise ConfigError(f"{where} must be true or false, not {value!r}")
    return value


def _type(value):
    return {str: "a string", int: "an integer", float: "a number", bool: "a boolean",
            list: "a list", dict: "a table"}.get(type(value), type(value).__name__)


# key -> (checker, default). Tables are nested dicts of the same shape.
SCHEMA = {
    "image": (_str(), DEFAULT_IMAGE),
    "engine": (_str(("podman", "docker")), "podman"),
    "env": (_names(ENV_NAME, "environment variable name"), []),
    "ca_bundle": (_str(), "auto"),
    "cap_add": (_names(CAPABILITY, "capability name"), []),
    "pids": (_positive_int, 4096),
    "memory": (_size, None),
    "cpus": (_cpus, None),
    "mounts": (_mounts, []),
    "shell": (_str(), None),
    "network": {"mode": (_str(("full", "none", "allow", "learn")), "full"),
                "allow": (_network_allow, [])},
    "lockdown": (_bool, False),
    "hook": {"on_enter": (_str(("shell", "up", "none")), "shell")},
    "credentials": (_names(CREDENTIAL_NAME, "credential name"), []),
    "ports": (_ports, []),
    "caches": (_caches, []),
    "agents": (_agents, {}),
}
# Keys whose values add up across layers instead of replacing each other.
ADDITIVE = {"env", "cap_add", "mounts", "credentials", "allow", "ports"}
# Keys only the user config may set: a project must not reach beyond its own sandbox.
USER_ONLY = {"caches"}


def defaults(schema=SCHEMA):
    return {k: defaults(v) if isinstance(v, dict) else (list(v[1]) if isinstance(v[1], list) else v[1])
            for k, v in schema.items()}


def validate(data, source, schema=SCHEMA, prefix=""):
    """Check a parsed TOML table against the schema; returns it unchanged."""
    for key, value in data.items():
        dotted = prefix + key
        where = f"{source}: key '{dotted}'"
        if key not in schema:
            raise ConfigError(f"{source}: unknown key '{dotted}'", "see docs/config.md for the keys agentsh reads")
        spec = schema[key]
        if isinstance(spec, dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{where} must be a table ([{dotted}]), not {_type(value)}")
            validate(value, source, spec, dotted + ".")
        else:
            spec[0](value, where)
    return data


def parse(text, source):
    import tomllib

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: invalid TOML: {e}", "fix the file and run the command again") from None
    return validate(data, source)


def parse_cached(data, source):
    """parse() of a file's bytes, remembered by content hash.

    Every command reads the config; the TOML parser (and the typing module it
    pulls in) costs ~5 ms to import, more than the rest of ab-exec's own work.
    A validated result is kept as a marshal file named by the hash of this
    version, the file's path and its bytes, so an edit is never served stale.
    """
    import marshal

    from . import __version__
    from .digest import sha256_hex

    key = sha256_hex(f"{__version__}\0{source}\0".encode("utf-8", "surrogateescape") + data)[:32]
    cache = os.path.join(paths.state_dir(), "cache", "config", key + ".marshal")
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
    try:
        os.makedirs(os.path.dirname(cache), mode=0o700, exist_ok=True)
        tmp = f"{cache}.tmp.{os.getpid()}"
        with open(tmp, "wb") as f:
            marshal.dump(parsed, f)
        os.replace(tmp, cache)
    except (OSError, ValueError):
        pass  # a cache we cannot write only costs the parse next time
    return parsed


def merge(base, layer):
    out = dict(base)
    for key, value in layer.items():
        if isinstance(value, dict):
            out[key] = merge(base.get(key, {}), value)
        elif key in ADDITIVE:
            out[key] = base.get(key, []) + [v for v in value if v not in base.get(key, [])]
        else:
            out[key] = value
    return out


class Config(dict):
    """The merged settings, plus how the project file was treated."""

    project_file = None  # path of the project file, if the project has one
    project_trust = None  # trust.ALLOWED / DENIED / BLOCKED, or None
    notices = ()  # one-line messages for the user (e.g. untrusted file ignored)
    devcontainer = None  # the project's devcontainer.Devcontainer, read only when trusted
    flag_keys = frozenset()  # keys given on the command line (they beat a devcontainer's image)


def load(project=None, store=None, flags=None):
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
    anchor = trust.anchor(project) if project is not None else None
    if anchor:
        if store is None:
            from .state import Store

            store = Store()
        data = trust.read_file(anchor)
        trust_state = trust.status(store, anchor, data)
        if trust_state == trust.ALLOWED:
            if anchor == project.config_file:
                layer = parse_cached(data, anchor)
                for key in USER_ONLY & set(layer):
                    raise ConfigError(f"{anchor}: key '{key}' can only be set in the user config",
                                      f"move it to {user_file}")
                cfg = merge(cfg, layer)
            from . import devcontainer

            dev = devcontainer.load(project.root)
            if dev is not None:
                notices += dev.notices()
        elif trust_state == trust.DENIED:
            notices.append(f"{anchor} is denied; ignoring it (run 'ab-allow' to trust it)")
        else:
            covered = trust.covered_files(anchor)
            also = f" (with {', '.join(os.path.relpath(f, project.root) for f in covered)})" if covered else ""
            notices.append(f"{anchor}{also} is not trusted (new or changed); ignoring it. "
                           "Run 'ab-allow' to trust its content.")
    env_engine = os.environ.get("AGENTSH_ENGINE")
    if env_engine:
        cfg = merge(cfg, validate({"engine": env_engine}, "AGENTSH_ENGINE"))
    if flags:
        cfg = merge(cfg, {k: v for k, v in flags.items() if v is not None})
    out = Config(cfg)
    out.project_file = project.config_file if project else None
    out.project_trust = trust_state
    out.notices = notices
    out.devcontainer = dev
    out.flag_keys = {k for k, v in (flags or {}).items() if v is not None}
    return out
