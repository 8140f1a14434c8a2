"""`.devcontainer/devcontainer.json`: the subset that makes sense for a sandbox.

The file is JSON with comments and trailing commas (JSONC). It is project
content, so it is read only for an allowed project, and `initializeCommand`
(which would run on the host) is never run. What we do not honour is named,
so nobody wonders why a property had no effect.
"""

from __future__ import annotations

import os

from agentsh.base.errors import ConfigError
from agentsh.base.safefs import read_project_file
from agentsh.policy.values import ENV_NAME, check_image, check_sandbox_path, control_character

LOCATIONS = (".devcontainer/devcontainer.json", ".devcontainer.json")
SUPPORTED = {"image", "build", "dockerFile", "context", "remoteUser", "containerUser", "containerEnv",
             "remoteEnv", "mounts", "forwardPorts", "postCreateCommand", "name"}
# Read and deliberately not acted on; reported apart from unknown ones.
NEVER_RUN = {"initializeCommand"}


def find(project_root: str) -> str | None:
    """The devcontainer.json path of a project, or None.

    A `.devcontainer` that is a symlink is not looked into: it could point
    anywhere on the host. (The file itself is opened without following one.)
    """
    for rel in LOCATIONS:
        path = os.path.join(project_root, rel)
        if os.path.isfile(path) and not os.path.islink(os.path.dirname(path)):
            return path
    return None


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

    try:
        data = json.loads(strip_jsonc(text))
    except ValueError as e:
        raise ConfigError(f"{source}: invalid JSON: {e}", "fix the file (comments and trailing commas are fine)") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be an object")
    return data


USER = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,31})?"


def _key(source, key):
    return f"{source}: key '{key}'"


def _text(value, where, multiline=False):
    """A string value without control characters (newlines and tabs allowed in commands)."""
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a string, not {type(value).__name__}")
    ch = control_character(value.replace("\n", "").replace("\t", "").replace("\r", "") if multiline else value)
    if ch is not None:
        raise ConfigError(f"{where}: {value[:60]!r} holds the control character {ch!r}", "remove it")
    return value


def _scalar(value, where):
    """A JSON string, number or boolean as the string an engine receives."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return _text(value, where)


def _env_table(value, where):
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be an object of NAME: value")
    for k in value:
        if not isinstance(k, str) or not ENV_NAME.match(k):
            raise ConfigError(f"{where}: {k!r} is not a variable name", "use letters, digits and '_'")
    return {k: _scalar(v, f"{where}.{k}") for k, v in value.items()}


def _inside(path, root, where, what):
    """`path` (normalised) when it lies inside the project `root` through real directories only."""
    if not (path == root or path.startswith(root.rstrip("/") + "/")):
        raise ConfigError(f"{where}: the {what} {path} is outside the project {root}",
                          f"keep the {what} inside the project")
    if os.path.realpath(path) != path:
        raise ConfigError(f"{where}: the {what} {path} is reached through a symlink",
                          f"name the real {what} inside the project")
    return path


def _mount(entry, source, workspace):
    """A devcontainer mount ("source=..,target=..,type=bind" or an object) -> HOST:SANDBOX[:ro]."""
    where = _key(source, "mounts")
    if isinstance(entry, str):
        _text(entry, where)
        fields = dict(part.split("=", 1) for part in entry.split(",") if "=" in part)
        if "readonly" in entry.split(","):
            fields["readonly"] = "true"
    elif isinstance(entry, dict):
        fields = {k: str(v).lower() if isinstance(v, bool) else v for k, v in entry.items()}
        for v in fields.values():
            _text(v if isinstance(v, str) else str(v), where)
    else:
        raise ConfigError(f"{where}: entries must be strings or objects")
    kind = fields.get("type", "bind")
    src = fields.get("source") or fields.get("src")
    dst = fields.get("target") or fields.get("dst") or fields.get("destination")
    if kind != "bind" or not src or not dst:
        return None  # volumes and tmpfs are the sandbox's business
    src = str(src).replace("${localWorkspaceFolder}", workspace)
    dst = str(dst)
    if "${" in src or "${" in dst:
        return None
    if not src.startswith("/"):
        raise ConfigError(f"{where}: the source {src!r} is not an absolute path",
                          "name the host directory by its absolute path or ${localWorkspaceFolder}/...")
    if ":" in src:
        raise ConfigError(f"{where}: the source {src!r} holds ':', which container engines cannot mount",
                          "rename or move the directory")
    check_sandbox_path(dst, f"{where}: {entry!r}")
    ro = str(fields.get("readonly", fields.get("ro", "false"))).lower() in ("true", "1")
    return f"{src}:{dst}{':ro' if ro else ''}"


def _port(value, where):
    """A forwardPorts entry (3000, "3000" or "service:3000") -> its container port."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ConfigError(f"{where}: {value!r} is not a port", "use a port number such as 3000")
    port = _text(value, where).split(":")[-1] if isinstance(value, str) else value
    number = port if isinstance(port, int) else int(port) if port.isdigit() and port.isascii() else None
    if number is None or not 1 <= number <= 65535:
        raise ConfigError(f"{where}: {value!r} is not a port (1-65535)", "use a port number such as 3000")
    return port


def _check_commands(cmd, where):
    if cmd is None or cmd == "":
        return
    if isinstance(cmd, str):
        _text(cmd, where, multiline=True)
    elif isinstance(cmd, list):
        for a in cmd:
            if isinstance(a, (list, dict)):
                raise ConfigError(f"{where}: a command list holds strings only")
            _text(_scalar(a, where), where, multiline=True)
    elif isinstance(cmd, dict):
        for k, v in cmd.items():
            if isinstance(v, dict):
                raise ConfigError(f"{where}.{k}: a named command is a string or a list")
            _check_commands(v, f"{where}.{k}")
    else:
        raise ConfigError(f"{where} must be a string, a list or an object")


class Devcontainer:
    """What agentsh takes from a devcontainer.json, and what it left out.

    Every value used is checked like user input: an image reference, paths
    inside the project for the Dockerfile and build context, variable names,
    a user name, absolute bind mount paths; an error names the file and key.
    """

    def __init__(self, path: str, data: dict, workspace: str) -> None:
        self.path = path
        self.dir = os.path.dirname(path)
        self.root = workspace
        self.ignored = sorted(_printable(k) for k in set(data) - SUPPORTED - NEVER_RUN)
        self.never_run = sorted(set(data) & NEVER_RUN)
        self.image = data.get("image")
        if self.image is not None:
            check_image(self.image, _key(path, "image"))
        build = data.get("build") or {}
        if not isinstance(build, dict):
            raise ConfigError(f"{_key(path, 'build')} must be an object")
        if "dockerFile" in data:  # the older spelling
            build = {"dockerfile": data["dockerFile"], "context": data.get("context", "."), **build}
        self.dockerfile = self.context = None
        if build.get("dockerfile"):
            dockerfile = _text(build["dockerfile"], _key(path, "build.dockerfile"))
            context = _text(build.get("context", "."), _key(path, "build.context"))
            self.dockerfile = _inside(os.path.normpath(os.path.join(self.dir, dockerfile)), workspace,
                                      _key(path, "build.dockerfile"), "Dockerfile")
            self.context = _inside(os.path.normpath(os.path.join(self.dir, context)), workspace,
                                   _key(path, "build.context"), "build context")
        args = build.get("args") or {}
        self.build_args = _env_table(args, _key(path, "build.args"))
        for key in ("remoteUser", "containerUser"):
            user = data.get(key)
            if user is not None:
                import re  # lazy: only for a devcontainer that names a user

                if not isinstance(user, str) or not re.fullmatch(USER, user):
                    raise ConfigError(f"{_key(path, key)}: {user!r} is not a user name or uid[:gid]",
                                      "use a name such as vscode, or 1000:1000")
        self.user = data.get("remoteUser") or data.get("containerUser")
        self.env = {**_env_table(data.get("containerEnv"), _key(path, "containerEnv")),
                    **_env_table(data.get("remoteEnv"), _key(path, "remoteEnv"))}
        mounts = data.get("mounts") or []
        if not isinstance(mounts, list):
            raise ConfigError(f"{_key(path, 'mounts')} must be a list")
        self.mounts = [m for m in (_mount(e, path, workspace) for e in mounts) if m]
        ports = data.get("forwardPorts") or []
        if not isinstance(ports, list):
            raise ConfigError(f"{_key(path, 'forwardPorts')} must be a list")
        self.ports = [_port(p, _key(path, "forwardPorts")) for p in ports]
        self.post_create = data.get("postCreateCommand")
        _check_commands(self.post_create, _key(path, "postCreateCommand"))

    def files(self) -> list[str]:
        """Every file that shapes what runs: trust is taken over all of them."""
        return [self.path] + ([self.dockerfile] if self.dockerfile else [])

    def post_create_commands(self) -> list[list[str]]:
        """postCreateCommand as argv lists (a string runs through sh -c)."""
        return _commands(self.post_create, self.path)

    def notices(self) -> list[str]:
        out = []
        if self.ignored:
            out.append(f"{self.path}: ignoring {', '.join(self.ignored)} (not supported in a sandbox)")
        if self.never_run:
            out.append(f"{self.path}: never running initializeCommand (it would run on the host)")
        return out


def _printable(text):
    """A name from the file as it can be shown on a terminal (control characters escaped)."""
    return text if control_character(text) is None else ascii(text)


def _commands(cmd, path):
    if not cmd:
        return []
    if isinstance(cmd, str):
        return [["sh", "-c", cmd]]
    if isinstance(cmd, list):
        return [[str(a) for a in cmd]]
    if isinstance(cmd, dict):  # named commands, run in order
        return [c for v in cmd.values() for c in _commands(v, path)]
    raise ConfigError(f"{path}: postCreateCommand must be a string, a list or an object")


def from_bytes(path: str, data: bytes, project_root: str) -> Devcontainer:
    """The Devcontainer of a devcontainer.json's bytes (read once by the caller, as trust hashed them)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text", "fix the file's encoding") from None
    return Devcontainer(path, parse(text, path), project_root)


def load(project_root: str) -> Devcontainer | None:
    """The project's devcontainer, read without following a symlink; None when there is none."""
    path = find(project_root)
    if path is None:
        return None
    return from_bytes(path, read_project_file(path), project_root)
