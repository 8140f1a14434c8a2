"""devcontainer.json as users write it, read into what a sandbox can honour.

The file is JSON with comments and trailing commas (JSONC, a UTF-8 BOM
allowed). It is project content, so it is read only for an allowed project.
Variables are substituted as the Dev Container spec says
(agentsh.policy.devcontainer_vars). Every property the file has ends up in
exactly one of three lists, shown in one notice and in `ab-up --dry-run`:
honoured, refused with the reason (`not_applied`), or ignored (editor
settings and the like, which mean nothing to a sandbox).

Host values stay off the engine: an env value made from `${localEnv:...}`
is given to each command the way credentials are (through the secrets
tmpfs, `exec_env`), never to the container at create time; a lifecycle
command holding one is handed over the same way.
"""

from __future__ import annotations

import os
import re

from agentsh.base.errors import ConfigError
from agentsh.base.safefs import read_project_file
from agentsh.policy.devcontainer_args import build_options, mount_fields, run_args
from agentsh.policy.devcontainer_features import read_features
from agentsh.policy.devcontainer_files import LOCATIONS, TOP, ambiguity, configs, find  # noqa: F401 (also for callers)
from agentsh.policy.devcontainer_vars import Resolver, _inside, _printable, _scalar, _text  # noqa: F401 (also for callers)
from agentsh.policy.values import ENV_NAME, check_image, check_sandbox_path

TYPE_CHECKING = False  # typing stays off the hot paths
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from agentsh.policy.devcontainer_vars import Resolved

LIFECYCLE = ("onCreateCommand", "updateContentCommand", "postCreateCommand", "postStartCommand",
             "postAttachCommand")
CREATE_STEPS = LIFECYCLE[:3]  # once per sandbox creation
# Ignored: they configure an editor or a hosted service, not the container.
EDITOR = {"customizations", "extensions", "settings", "portsAttributes", "otherPortsAttributes", "devPort",
          "$schema", "remoteUserShell"}
# Ignored, each with what agentsh does instead.
IGNORED_WHY = {
    "secrets": "store secrets with ab-creds",
    "updateRemoteUserUID": "agentsh maps the sandbox user to yours itself",
    "userEnvProbe": "commands get the sandbox's environment as it is",
    "shutdownAction": "ab-down stops the sandbox",
}
COMPOSE = ("dockerComposeFile", "service", "runServices")
USER = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,31})?"
ENGINE_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock", "/run/podman/podman.sock",
                  "/var/run/podman/podman.sock")


# -- finding and parsing ------------------------------------------------------------





def config_root(path: str) -> str:
    """The project root a devcontainer.json belongs to (beside .devcontainer, or its own folder)."""
    parent = os.path.dirname(path)
    if os.path.basename(parent) == TOP:
        return os.path.dirname(parent)
    if os.path.basename(os.path.dirname(parent)) == TOP:
        return os.path.dirname(os.path.dirname(parent))
    return parent


def config_name(path: str) -> str:
    """"" for the top config, else its folder under .devcontainer."""
    parent = os.path.dirname(path)
    return os.path.basename(parent) if os.path.basename(os.path.dirname(parent)) == TOP else ""


def strip_jsonc(text: str) -> str:
    """JSON text without // and /* */ comments and trailing commas (strings kept intact)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i:j + 1])
            i = j + 1
        elif text.startswith("//", i):
            while i < n and text[i] != "\n":
                i += 1
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
            out.append(" ")
        elif c == ",":
            j = i + 1
            while j < n and (text[j].isspace() or text.startswith("//", j) or text.startswith("/*", j)):
                if text.startswith("//", j):
                    j = text.find("\n", j) if "\n" in text[j:] else n
                elif text.startswith("/*", j):
                    end = text.find("*/", j + 2)
                    j = n if end < 0 else end + 2
                else:
                    j += 1
            if j < n and text[j] in "}]":
                i += 1  # a trailing comma: drop it
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def parse(text: str, source: str) -> dict:
    import json  # only when there is a file: `find` sits on every command's path

    text = text.removeprefix("\ufeff")  # a UTF-8 BOM, as editors on Windows write it
    try:
        data = json.loads(strip_jsonc(text))
    except (ValueError, RecursionError) as e:
        raise ConfigError(f"{source}: invalid JSON: {str(e)[:200]}",
                          "fix the file (comments and trailing commas are fine)") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be an object")
    return data


# -- checking values ------------------------------------------------------------------


def _key(source: str, key: str) -> str:
    return f"{source}: key '{key}'"


def _port(value: object, where: str) -> int | None:
    """A forwardPorts entry (3000, "3000", "localhost:3000") -> its port; None for another host's port."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ConfigError(f"{where}: {value!r} is not a port", "use a port number such as 3000")
    host, port = None, value
    if isinstance(value, str):
        host, _, port = _text(value, where).rpartition(":")
    number = port if isinstance(port, int) else int(port) if port.isdigit() and port.isascii() else None
    if number is None or not 1 <= number <= 65535:
        raise ConfigError(f"{where}: {value!r} is not a port (1-65535)", "use a port number such as 3000")
    if host and not (host.isdigit() and host.isascii()) and host not in ("localhost", "127.0.0.1", "0.0.0.0"):
        return None  # "db:5432": a port of another service (compose) or host
    return number  # "3000", "localhost:3000", "8080:3000" (agentsh picks the host side)


class Devcontainer:
    """What agentsh takes from a devcontainer.json, and what it left out and why.

    Every value used is checked like user input: an image reference, paths
    inside the project for the Dockerfile and build context, variable names,
    a user name, absolute bind mount paths; an error names the file and key.
    `environ`: the host environment ${localEnv:...} reads (default os.environ).
    """

    def __init__(self, path: str, data: dict, workspace: str, environ: Mapping[str, str] | None = None) -> None:

        self.path = path
        self.dir = os.path.dirname(path)
        self.root = workspace
        self.config = config_name(path)
        self.vars = Resolver(workspace, path, environ)
        self.keys = list(data)
        self.name = None
        self.honoured = []  # property names
        self.not_applied = []  # (property, why)
        self.ignored = []  # (property, why or "")
        self.reported = []  # lines: what the file asks of the host, not checked
        self.info = []  # lines for the notice: how a honoured property was honoured
        self.image = self.dockerfile = self.context = self.target = None
        self.build_args, self.cache_from, self.build_options, self.build_host_args = {}, [], [], []
        self.user = None
        self.env, self.exec_env, self.late_env, self.unset = {}, {}, {}, []
        self.host_vars = set()  # host variables whose values reach the sandbox (per command)
        self.mounts, self.volumes, self.tmpfs = [], [], []
        self.ports, self.run_args = [], []
        self.lifecycle, self.wait_for = {}, None
        self.features, self.feature_order = [], []
        self.lock_file, self.lock_pins = None, {}  # devcontainer-lock.json, when trust read it (pins_from)
        self.host_requirements = {}
        self.workdir = workspace
        self.compose = any(k in data for k in COMPOSE)
        # compose (agentsh.policy.devcontainer_compose): the files read, the service, its siblings
        self.compose_files, self.service, self.siblings, self.sibling_ports = [], None, {}, []
        self.service_command, self.shutdown, self.compose_dir, self._compose_binds = None, None, None, []
        handled = set()
        if self.compose:
            from agentsh.policy import devcontainer_compose  # lazy: PyYAML, only for a compose-based file

            if not devcontainer_compose.apply(self, data):
                return
            handled = {*COMPOSE, "shutdownAction", "overrideCommand"}
            for key in ("image", "build", "dockerFile", "dockerfile", "context", "workspaceMount"):
                if key in data:
                    handled.add(key)
                    self.not_applied.append((key, f"the sandbox is the compose service {self.service}"
                                             if key != "workspaceMount" else
                                             f"agentsh mounts the project at its own path, {self.root}"))
        for key, handler in self._handlers():
            if key in data and key not in handled:
                handled.add(key)
                handler(data[key], data)
        if not self.compose and "build" not in data and ("dockerFile" in data or "dockerfile" in data or "context" in data):
            self._build(None, data)
        handled |= {"dockerFile", "dockerfile", "context"} & set(data)
        for key in data:
            if key in handled:
                continue
            if key in EDITOR:
                self.ignored.append((key, "editor settings"))
            elif key in IGNORED_WHY:
                self.ignored.append((key, IGNORED_WHY[key]))
            elif key == "initializeCommand":
                self.not_applied.append((key, "it would run on the host; never run"))
            else:
                self.ignored.append((_printable(key), "not a devcontainer.json property"))

    # -- the properties ---------------------------------------------------------------

    def _handlers(self) -> list[tuple[str, Callable[[object, dict], None]]]:
        return [("name", self._name), ("image", self._image), ("build", self._build),
                ("containerUser", lambda v, d: self._user(v, d, "containerUser")),
                ("remoteUser", lambda v, d: self._user(v, d, "remoteUser")), ("containerEnv", self._container_env),
                ("remoteEnv", self._remote_env), ("mounts", self._mounts), ("forwardPorts", self._ports),
                ("appPort", self._app_port), ("runArgs", self._run_args), ("privileged", self._privileged),
                ("capAdd", self._cap_add), ("securityOpt", self._security_opt), ("init", self._init),
                ("overrideCommand", self._override_command), ("workspaceFolder", self._workspace_folder),
                ("workspaceMount", self._workspace_mount), ("hostRequirements", self._host_requirements),
                ("overrideFeatureInstallOrder", self._feature_order), ("features", self._features),
                ("waitFor", self._wait_for),
                *((name, self._command(name)) for name in LIFECYCLE)]

    def sub(self, value: object, where: str) -> Resolved:
        """A string value with the variables substituted (a Resolved: .host names the host variables used)."""
        return self.vars.text(_text(value, where, multiline=True), where)

    def _image(self, value: object, data: dict) -> None:

        where = _key(self.path, "image")
        if not isinstance(value, str):
            check_image(value, where)
        self.image = check_image(str(self.sub(value, where)), where)
        self.honoured.append("image")

    def _build(self, build: object, data: dict) -> None:
        where = _key(self.path, "build")
        if build is None:
            build = {}
        if not isinstance(build, dict):
            raise ConfigError(f"{where} must be an object")
        legacy = {}
        for old, new in (("dockerFile", "dockerfile"), ("dockerfile", "dockerfile"), ("context", "context")):
            if old in data:
                legacy[new] = data[old]
        build = {**legacy, **build}
        if "build" in data:
            self.honoured.append("build")
        for old in ("dockerFile", "dockerfile", "context"):
            if old in data:
                self.honoured.append(old)
        known = {"dockerfile", "dockerFile", "context", "args", "target", "cacheFrom", "options"}
        for k in build:
            if k not in known:
                self.ignored.append((f"build.{_printable(k)}", "not a build property"))
        dockerfile = build.get("dockerfile", build.get("dockerFile"))
        if dockerfile:
            dockerfile = self.sub(dockerfile, _key(self.path, "build.dockerfile"))
            context = self.sub(build.get("context", "."), _key(self.path, "build.context"))
            self.dockerfile = _inside(os.path.normpath(os.path.join(self.dir, dockerfile)), self.root,
                                      _key(self.path, "build.dockerfile"), "Dockerfile")
            self.context = _inside(os.path.normpath(os.path.join(self.dir, context)), self.root,
                                   _key(self.path, "build.context"), "build context")
            if not os.path.isfile(self.dockerfile):
                raise ConfigError(f"{_key(self.path, 'build.dockerfile')}: {self.dockerfile} does not exist",
                                  "create it, or fix the path (it is relative to the devcontainer.json)")
            if not os.path.isdir(self.context):
                raise ConfigError(f"{_key(self.path, 'build.context')}: {self.context} is not a directory",
                                  "fix the path (it is relative to the devcontainer.json)")
        elif any(k in build for k in ("args", "target", "cacheFrom", "options", "context")):
            self.ignored.append(("build", "no dockerfile to build"))
        self.build_args = self._table(build.get("args"), "build.args")
        self.build_host_args = sorted(k for k, v in self.build_args.items() if v.host)  # by env, never on argv
        if build.get("target") is not None:
            target = str(self.sub(build["target"], _key(self.path, "build.target")))
            if not target or target.startswith("-") or any(c.isspace() for c in target):
                raise ConfigError(f"{_key(self.path, 'build.target')}: {target!r} is not a build stage name")
            self.target = target
        self._cache_from(build.get("cacheFrom"))
        self._build_options(build.get("options"))

    def _cache_from(self, value: object) -> None:

        if value is None:
            return
        where = _key(self.path, "build.cacheFrom")
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list):
            raise ConfigError(f"{where} must be an image name or a list of them")
        self.cache_from = [check_image(str(self.sub(v, where)) if isinstance(v, str) else v, where) for v in values]

    def _build_options(self, value: object) -> None:
        if value is None:
            return
        where = _key(self.path, "build.options")
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list of strings")
        words = [str(self.sub(v, where)) for v in value]

        kept, refused = build_options(words)
        self.build_options = kept
        for flag, why in refused:
            self.not_applied.append((f"build.options {_printable(flag)}", why))
        for flag in (w for w in kept if w.startswith("--build-arg=")):
            name, _, arg = flag[len("--build-arg="):].partition("=")
            self.build_args.setdefault(name, arg)
        self.build_options = [w for w in kept if not w.startswith("--build-arg=")]

    def _table(self, value: object, key: str) -> dict[str, Resolved | None]:
        """An object of NAME: value, substituted, as {name: Resolved}."""

        where = _key(self.path, key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be an object of NAME: value")
        out = {}
        for k, v in value.items():
            if not isinstance(k, str) or not ENV_NAME.match(k):
                raise ConfigError(f"{where}: {_printable(k)!r} is not a variable name", "use letters, digits and '_'")
            if v is None and key == "remoteEnv":
                out[k] = None
                continue
            out[k] = self.vars.text(_scalar(v, f"{where}.{k}"), f"{where}.{k}")
        return out

    def _name(self, value: object, data: dict) -> None:
        if not isinstance(value, str):
            raise ConfigError(f"{_key(self.path, 'name')} must be a string")
        self.name = _printable(value)
        self.honoured.append("name")

    def _user(self, value: object, data: dict, key: str) -> None:

        if value is None:
            self.honoured.append(key)  # null: the image's user
            return
        if not isinstance(value, str) or not re.fullmatch(USER, str(self.sub(value, _key(self.path, key)))):
            raise ConfigError(f"{_key(self.path, key)}: {value!r} is not a user name or uid[:gid]",
                              "use a name such as vscode, or 1000:1000")
        self.user = str(self.sub(value, _key(self.path, key)))  # remoteUser comes last: it wins
        self.honoured.append(key)

    def _env_into(self, table: Mapping[str, Resolved | None], key: str) -> None:
        for name, value in table.items():
            if value is None:  # remoteEnv NAME: null removes the variable
                for where in (self.env, self.exec_env, self.late_env):
                    where.pop(name, None)
                if name not in self.unset:
                    self.unset.append(name)
                continue
            if name in self.unset:
                self.unset.remove(name)
            for where in (self.env, self.exec_env, self.late_env):
                where.pop(name, None)
            if value.host and value.container:
                self.not_applied.append((f"{key}.{name}", "mixes host values (${localEnv:...}) with "
                                         "${containerEnv:...}; agentsh keeps host values off the engine"))
            elif value.host:
                self.exec_env[name] = str(value)
                self.host_vars |= value.host
                self.info.append(f"{key}.{name} takes the host's {', '.join(sorted(value.host))}: given to each "
                                 "command like a credential, never to the container at create time")
            elif value.container:
                self.late_env[name] = str(value)
            else:
                self.env[name] = str(value)

    def _container_env(self, value: object, data: dict) -> None:
        self._env_into(self._table(value, "containerEnv"), "containerEnv")
        self.honoured.append("containerEnv")

    def _remote_env(self, value: object, data: dict) -> None:
        self._env_into(self._table(value, "remoteEnv"), "remoteEnv")
        self.honoured.append("remoteEnv")

    def _mounts(self, value: object, data: dict) -> None:
        where = _key(self.path, "mounts")
        if value is None:
            value = []
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list")
        for i, entry in enumerate(value):
            self._mount(entry, where, i)
        self.honoured.append("mounts")

    def _mount(self, entry: object, where: str, i: int) -> None:

        if isinstance(entry, str):
            fields = mount_fields(str(self.sub(entry, where)), where)
        elif isinstance(entry, dict):
            fields = {}
            for k, v in entry.items():
                v = str(v).lower() if isinstance(v, bool) else v
                if not isinstance(v, (str, int, float)):
                    raise ConfigError(f"{where}: mount {k!r} must be a string")
                fields[str(k)] = str(self.sub(str(v), where))
        else:
            raise ConfigError(f"{where}: entries must be strings or objects")
        self._mount_entry(fields, entry, where, i)

    def _mount_entry(self, fields: dict[str, str], entry: object, where: str, i: int) -> None:

        label = f"mounts[{i}]"
        kind = fields.pop("type", "bind")
        src = fields.pop("source", None) or fields.pop("src", None)
        dst = fields.pop("target", None) or fields.pop("dst", None) or fields.pop("destination", None)
        ro = str(fields.pop("readonly", fields.pop("ro", "false"))).lower() in ("true", "1", "")
        fields.pop("consistency", None)  # macOS file sharing: nothing to do on Linux
        if not dst:
            raise ConfigError(f"{where}: {_printable(entry)!r} names no target", "add target=/path/in/container")
        check_sandbox_path(dst, f"{where}: {_printable(entry)!r}")
        git = os.path.join(self.root, ".git")
        if dst == git or dst.startswith(git + "/"):
            self.not_applied.append((f"{label} {dst}", "would cover the sandbox's own git dir"))
            return
        if dst == self.root:
            raise ConfigError(f"{where}: {_printable(entry)!r} would hide the project at {dst}",
                              "mount it somewhere else")
        for k in fields:
            self.ignored.append((f"{label}.{_printable(k)}", "mount option agentsh does not pass"))
        if kind == "bind":
            if not src:
                raise ConfigError(f"{where}: {_printable(entry)!r} names no source", "add source=/host/path")
            if not src.startswith("/"):
                raise ConfigError(f"{where}: the source {src!r} is not an absolute path",
                                  "name the host directory by its absolute path or ${localWorkspaceFolder}/...")
            if ":" in src:
                raise ConfigError(f"{where}: the source {src!r} holds ':', which container engines cannot mount",
                                  "rename or move the directory")
            real = os.path.realpath(src)
            if real in ENGINE_SOCKETS or real.endswith(("/docker.sock", "/podman.sock")):
                self.not_applied.append((f"{label} {src}", "would hand the sandbox the host's container engine"))
                return
            git = os.path.join(self.root, ".git")
            if real == "/" or self.root.startswith(real.rstrip("/") + "/") or real == self.root \
                    or real == git or real.startswith(git + "/"):
                self.not_applied.append((f"{label} {src}", "would give the sandbox the project's host git dir "
                                         "to write (agentsh mounts the project itself)"))
                return
            self.mounts.append(f"{src}:{dst}{':ro' if ro else ''}")
        elif kind == "volume":

            if not src:
                self.tmpfs.append((dst, ""))  # an anonymous volume: gone with the sandbox, like a tmpfs
                self.info.append(f"{label}: an anonymous volume at {dst}, made a tmpfs")
                return
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}", src):
                raise ConfigError(f"{where}: {src!r} is not a volume name", "use letters, digits, '_', '.' and '-'")
            self.volumes.append((src, dst, ro))
        elif kind == "tmpfs":
            self.tmpfs.append((dst, ""))
        else:
            self.not_applied.append((f"{label} type={_printable(kind)}", "only bind, volume and tmpfs mounts"))

    def _ports(self, value: object, data: dict, key: str = "forwardPorts") -> None:
        where = _key(self.path, key)
        if value is None:
            value = []
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list")
        for p in value:
            port = _port(p, where)
            sibling = str(p).rpartition(":")[0] if isinstance(p, str) else ""
            if port is None and sibling in self.siblings:
                number = int(str(p).rpartition(":")[2])
                if (sibling, number) not in self.sibling_ports:
                    self.sibling_ports.append((sibling, number))
                self.info.append(f"{key} {_printable(p)}: published on host loopback for the sibling {sibling}")
            elif port is None:
                self.not_applied.append((f"{key} {_printable(p)}", "a port of another host or service"))
            elif port not in self.ports:
                self.ports.append(port)
        self.honoured.append(key)

    def _app_port(self, value: object, data: dict) -> None:
        values = value if isinstance(value, list) else [value]
        for v in values:
            if isinstance(v, str) and v.count(":") == 1 and v.split(":")[0].isdigit():
                self.info.append(f"appPort {_printable(v)}: published as container port {_printable(v.split(':')[1])}"
                                 " on a host port agentsh picks (ab-up -p HOST:CONTAINER sets one)")
        self._ports(values, data, "appPort")

    def _run_args(self, value: object, data: dict) -> None:

        where = _key(self.path, "runArgs")
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list of strings")
        words = [str(self.sub(_scalar(v, where), where)) for v in value]
        got = run_args(words, self.root)
        self.run_args = got.args
        for flag, why in got.refused:
            self.not_applied.append((f"runArgs {_printable(flag)}", why))
        for flag, why in got.ignored:
            self.ignored.append((f"runArgs {_printable(flag)}", why))
        for name, text in got.env.items():
            if text is None:  # -e NAME: the host's value
                if name in self.vars.environ:
                    self.exec_env[name] = self.vars.environ[name]
                    self.host_vars.add(name)
                    self.info.append(f"runArgs -e {name} takes the host's {name}: given to each command like "
                                     "a credential, never to the container at create time")
                continue
            self._env_into({name: self.vars.text(text, where)}, "runArgs -e")
        for port in got.ports:
            if port not in self.ports:
                self.ports.append(port)
        for dst, opts in got.tmpfs:
            self.tmpfs.append((dst, opts))
        self.honoured.append("runArgs")

    def _privileged(self, value: object, data: dict) -> None:
        if value is True:
            self.not_applied.append(("privileged", "gives the sandbox every capability and the host's devices"))
        else:
            self.honoured.append("privileged")

    def _cap_add(self, value: object, data: dict) -> None:
        if value:
            caps = ", ".join(_printable(c) for c in value) if isinstance(value, list) else _printable(value)
            self.not_applied.append((f"capAdd {caps}", "adds capabilities; config cap_add is yours to set"))
        else:
            self.honoured.append("capAdd")

    def _security_opt(self, value: object, data: dict) -> None:
        if value:
            opts = ", ".join(_printable(c) for c in value) if isinstance(value, list) else _printable(value)
            self.not_applied.append((f"securityOpt {opts}", "loosens the sandbox's confinement "
                                     "(seccomp, AppArmor, SELinux, no-new-privileges)"))
        else:
            self.honoured.append("securityOpt")

    def _init(self, value: object, data: dict) -> None:
        if value is False:
            self.not_applied.append(("init", "the sandbox always runs an init (--init)"))
        else:
            self.honoured.append("init")

    def _override_command(self, value: object, data: dict) -> None:
        if value is False:
            self.not_applied.append(("overrideCommand", "the sandbox runs agentsh's keep-alive, "
                                     "not the image's command"))
        else:
            self.honoured.append("overrideCommand")

    def _workspace_folder(self, value: object, data: dict) -> None:
        where = _key(self.path, "workspaceFolder")
        folder = os.path.normpath(str(self.sub(value, where))) if isinstance(value, str) and value else ""
        for target, host in self._compose_binds:  # a compose bind of the project: its own path here
            if folder == target or folder.startswith(target.rstrip("/") + "/"):
                folder = os.path.normpath(host + folder[len(target):])
        if folder == self.root or folder.startswith(self.root.rstrip("/") + "/"):
            self.workdir = folder
            self.honoured.append("workspaceFolder")
        else:
            self.not_applied.append((f"workspaceFolder {_printable(value)}",
                                     f"the project is mounted at its own path, {self.root}; commands start there"))

    def _workspace_mount(self, value: object, data: dict) -> None:
        self.not_applied.append(("workspaceMount", f"agentsh mounts the project at its own path, {self.root}"))

    def _host_requirements(self, value: object, data: dict) -> None:
        if not isinstance(value, dict):
            raise ConfigError(f"{_key(self.path, 'hostRequirements')} must be an object")
        for k, v in value.items():
            if isinstance(v, (str, int, float, bool)) or (isinstance(v, dict) and k == "gpu"):
                self.host_requirements[_printable(k)] = v if not isinstance(v, str) else _printable(v)
        if self.host_requirements:
            shown = ", ".join(f"{k} {v}" for k, v in self.host_requirements.items())
            self.reported.append(f"hostRequirements ({shown}): not checked; config cpus and memory limit the sandbox")
        self.honoured.append("hostRequirements")

    def _features(self, value: object, data: dict) -> None:

        if not isinstance(value, dict):
            raise ConfigError(f"{_key(self.path, 'features')} must be an object of FEATURE: options")
        got = read_features(self, value)
        self.features = got.features
        for ref, why in got.refused:
            self.not_applied.append((f"features {_printable(ref)}", why))
        if got.features or not got.refused:
            self.honoured.append("features")

    def _feature_order(self, value: object, data: dict) -> None:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{_key(self.path, 'overrideFeatureInstallOrder')} must be a list of feature ids")
        self.feature_order = list(value)
        self.honoured.append("overrideFeatureInstallOrder")

    def _wait_for(self, value: object, data: dict) -> None:
        if value not in LIFECYCLE:
            raise ConfigError(f"{_key(self.path, 'waitFor')}: {_printable(value)!r} is not a lifecycle command",
                              f"use one of {', '.join(LIFECYCLE)}")
        self.wait_for = value
        self.honoured.append("waitFor")

    def _command(self, name: str) -> Callable[[object, dict], None]:
        def handler(value: object, data: dict) -> None:
            steps = self._commands(value, _key(self.path, name))
            if steps:
                self.lifecycle[name] = steps
            self.honoured.append(name)
        return handler

    def _commands(self, cmd: object, where: str) -> list[tuple[str, list[str], frozenset[str]]]:
        """A lifecycle command as [(label, argv, host names)]: one entry, or an object's entries (run in parallel)."""
        if cmd is None or cmd == "" or cmd == []:
            return []
        if isinstance(cmd, str):
            text = self.sub(cmd, where)
            return [("", ["/bin/sh", "-c", str(text)], text.host)]
        if isinstance(cmd, list):
            argv, host = [], set()
            for a in cmd:
                if isinstance(a, (list, dict)) or a is None:
                    raise ConfigError(f"{where}: a command list holds strings only")
                text = self.sub(_scalar(a, where), where)
                argv.append(str(text))
                host |= text.host
            return [("", argv, frozenset(host))]
        if isinstance(cmd, dict):
            out = []
            for label, value in cmd.items():
                if isinstance(value, dict):
                    raise ConfigError(f"{where}.{_printable(label)}: a named command is a string or a list")
                for _, argv, host in self._commands(value, f"{where}.{_printable(label)}"):
                    out.append((_printable(label), argv, host))
            return out
        raise ConfigError(f"{where} must be a string, a list or an object")

    # -- what callers read --------------------------------------------------------------

    def files(self) -> list[str]:
        """Every file that shapes what runs: trust is taken over all of them."""
        return [self.path] + ([self.dockerfile] if self.dockerfile else []) + (
            [self.lock_file] if self.lock_file else []) + [p for p, _ in self.compose_files]

    def registry_features(self) -> bool:
        """Whether a feature comes from a registry (then its lock file counts too)."""
        return any(f.oci is not None for f in self.features)

    def pins_from(self, path: str, data: bytes) -> None:
        """Take the digests of the spec's lock file (its bytes, as trust hashed them)."""
        from agentsh.policy.devcontainer_oci import read_lock  # lazy: only for a file with registry features

        self.lock_pins = read_lock(path, data)
        self.lock_file = path

    def post_create_commands(self) -> list[list[str]]:
        """postCreateCommand as argv lists."""
        return [argv for _, argv, _ in self.lifecycle.get("postCreateCommand", [])]

    def volume_name(self, project_key: str, name: str) -> str:
        """The engine's name of a devcontainer volume: per project, so no sandbox reaches another's."""
        return f"agentsh-dc-{project_key}-{name}"

    def notices(self) -> list[str]:
        """One line: what of the file is not applied (with why), what is ignored, how host values go in."""
        def grouped(items: list[tuple[str, str]]) -> str:  # the properties of one reason together: "a, b (why)"
            groups = {}
            for p, why in items:
                groups.setdefault(why, []).append(p)
            return "; ".join(f"{', '.join(ps)}" + (f" ({why})" if why else "") for why, ps in groups.items())

        parts = []
        if self.not_applied:
            parts.append("not applied: " + grouped(self.not_applied))
        if self.ignored:
            parts.append("ignored: " + grouped(self.ignored))
        parts += self.reported + self.info
        return [f"{self.path}: " + "; ".join(parts)] if parts else []

    def plan(self) -> dict:
        """What the file asks for, resolved: the devcontainer part of `ab-up --dry-run --json`."""
        return {
            "file": self.path,
            "config": self.config or None,
            "name": self.name,
            "compose": self.compose,
            "compose_plan": None if not self.service else {
                "files": [p for p, _ in self.compose_files], "service": self.service,
                "siblings": sorted(self.siblings), "shutdown_action": self.shutdown,
                "forward_ports": [f"{s}:{p}" for s, p in self.sibling_ports],
                "command": list(self.service_command) if self.service_command else None},
            "image": self.image,
            "build": None if not self.dockerfile else {
                "dockerfile": self.dockerfile, "context": self.context, "args": sorted(self.build_args),
                "target": self.target, "cache_from": list(self.cache_from), "options": list(self.build_options)},
            "user": self.user,
            "workdir": self.workdir,
            "env": sorted(self.env),
            "env_from_container": sorted(self.late_env),
            "env_per_command": sorted(self.exec_env),
            "unset": list(self.unset),
            "mounts": self.mount_plan(),
            "ports": [str(p) for p in self.ports],
            "run_args": list(self.run_args),
            "features": [f.plan() for f in self.features],
            "lock_file": self.lock_file,
            "lifecycle": {name: [{"name": label or None, "argv": argv, "host_values": sorted(host)}
                                 for label, argv, host in steps] for name, steps in self.lifecycle.items()},
            "wait_for": self.wait_for,
            "host_requirements": dict(self.host_requirements),
            "honoured": list(dict.fromkeys(self.honoured)),
            "not_applied": [{"property": p, "why": why} for p, why in self.not_applied],
            "ignored": [{"property": p, "why": why} for p, why in self.ignored],
        }

    def mount_plan(self) -> list[dict]:
        out = []
        for m in self.mounts:
            host, _, rest = m.partition(":")
            target, _, mode = rest.partition(":")
            out.append({"type": "bind", "source": host, "target": target, "readonly": mode == "ro"})
        for name, target, ro in self.volumes:
            out.append({"type": "volume", "source": name, "target": target, "readonly": ro})
        for target, _ in self.tmpfs:
            out.append({"type": "tmpfs", "source": None, "target": target, "readonly": False})
        return out


def from_bytes(path: str, data: bytes, project_root: str, environ: Mapping[str, str] | None = None) -> Devcontainer:
    """The Devcontainer of a devcontainer.json's bytes (read once by the caller, as trust hashed them)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text", "fix the file's encoding") from None
    return Devcontainer(path, parse(text, path), project_root, environ)


def load(project_root: str, choice: str | None = None) -> Devcontainer | None:
    """The project's devcontainer, read without following a symlink; None when there is none."""

    path = find(project_root, choice)
    if path is None:
        return None
    return from_bytes(path, read_project_file(path), project_root)
