"""Variable substitution in devcontainer.json, as the Dev Container spec and its reference CLI do it.

`${NAME}` or `${NAME:ARG[:DEFAULT]}` anywhere in a string value (never in a
key). Known names:

- `localWorkspaceFolder`, `localWorkspaceFolderBasename`: the project's path
  on the host and its last component;
- `containerWorkspaceFolder`, `containerWorkspaceFolderBasename`: the same,
  since agentsh mounts the project at its own path;
- `localEnv:VAR[:default]` and its older spelling `env:VAR[:default]`: the
  host's variable, else the default, else "" (as a shell would);
- `localHomeFolder`: the host's $HOME;
- `devcontainerId`: a stable id of this project and config file (the
  reference CLI's: sha256 of its id labels, in base 32);
- `containerEnv:VAR[:default]`: the container's variable, resolved once the
  container exists (`container_substitute`); before that it is left as is.

Anything else (`${literal}`, `$${x}`) stays as written, as in the reference
CLI. A `Resolver` remembers which host variables a value was made from, so
the caller can keep host values out of the engine's files.
"""

from __future__ import annotations

import hashlib
import json
import os
import re

from agentsh.base.errors import ConfigError
from agentsh.policy.values import control_character

TYPE_CHECKING = False  # typing stays off the hot paths
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

VARIABLE = re.compile(r"\$\{(.*?)\}")
HOST_VARIABLES = ("localEnv", "env")


def devcontainer_id(local_folder: str, config_file: str) -> str:
    """The reference CLI's ${devcontainerId}: 52 base-32 digits of sha256 over its id labels."""

    labels = {"devcontainer.config_file": config_file, "devcontainer.local_folder": local_folder}
    text = json.dumps(labels, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    number = int.from_bytes(hashlib.sha256(text.encode("utf-8", "surrogateescape")).digest(), "big")
    digits = "0123456789abcdefghijklmnopqrstuv"
    out = ""
    while number:
        number, rest = divmod(number, 32)
        out = digits[rest] + out
    return out.rjust(52, "0")


class Resolved(str):
    """A substituted string that also knows the host variables (`host`) it took a value from."""

    host: frozenset = frozenset()
    container: bool = False  # still holds a ${containerEnv:...} to resolve inside


class Resolver:
    """Substitutes one devcontainer.json's variables; `environ` is the host's environment."""

    def __init__(self, workspace: str, config_file: str, environ: Mapping[str, str] | None = None) -> None:
        self.workspace = workspace
        self.config_file = config_file
        self.environ = os.environ if environ is None else environ
        self._id = None

    def text(self, value: str, where: str = "") -> Resolved:
        """`value` with every known variable but containerEnv replaced."""
        host = set()
        container = False

        def replace(match: re.Match[str]) -> str:
            nonlocal container
            name, *args = match.group(1).split(":")
            if name in HOST_VARIABLES:
                if not args:
                    raise ConfigError(f"{where}: {match.group(0)} names no variable",
                                      "write ${localEnv:NAME} or ${localEnv:NAME:default}")
                if args[0] and args[0] in self.environ:
                    host.add(args[0])
                    return self.environ[args[0]]
                return args[1] if len(args) > 1 else ""
            if name == "localHomeFolder":
                host.add("HOME")
                return self.environ.get("HOME", "")
            if name in ("localWorkspaceFolder", "containerWorkspaceFolder"):
                return self.workspace
            if name in ("localWorkspaceFolderBasename", "containerWorkspaceFolderBasename"):
                return os.path.basename(self.workspace.rstrip("/"))
            if name == "devcontainerId":
                if self._id is None:
                    self._id = devcontainer_id(self.workspace, self.config_file)
                return self._id
            if name == "containerEnv":
                if not args:
                    raise ConfigError(f"{where}: {match.group(0)} names no variable",
                                      "write ${containerEnv:NAME} or ${containerEnv:NAME:default}")
                container = True
            return match.group(0)

        out = Resolved(VARIABLE.sub(replace, value) if "${" in value else value)
        out.host = frozenset(host)
        out.container = container
        return out


def container_substitute(value: str, env: Mapping[str, str]) -> str:
    """`value` with ${containerEnv:NAME[:default]} replaced from the container's environment `env`."""
    def replace(match: re.Match[str]) -> str:
        name, *args = match.group(1).split(":")
        if name != "containerEnv" or not args or not args[0]:
            return match.group(0)
        if args[0] in env:
            return env[args[0]]
        return args[1] if len(args) > 1 else ""

    return VARIABLE.sub(replace, value) if "${" in value else value


def env_list(entries: Iterable[object] | None) -> dict:
    """An engine's ["NAME=value", ...] (inspect's Config.Env) as a dict."""
    out = {}
    for entry in entries or ():
        if isinstance(entry, str) and "=" in entry:
            name, _, value = entry.partition("=")
            out[name] = value
    return out


# -- value checks both devcontainer modules use ------------------------------------------


def _text(value: object, where: str, multiline: bool = False) -> str:
    """A string value without control characters (newlines and tabs allowed in commands)."""

    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a string, not {type(value).__name__}")
    ch = control_character(value.replace("\n", "").replace("\t", "").replace("\r", "") if multiline else value)
    if ch is not None:
        raise ConfigError(f"{where}: {value[:60]!r} holds the control character {ch!r}", "remove it")
    return value


def _scalar(value: object, where: str) -> str:
    """A JSON string, number or boolean as the string an engine receives."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return _text(value, where)


def _printable(text: object) -> str:
    """A name from the file as it can be shown on a terminal (control characters escaped)."""

    text = str(text)
    return text if control_character(text) is None else ascii(text)


def _inside(path: str, root: str, where: str, what: str) -> str:
    """`path` (normalised) when it lies inside the project `root` through real directories only."""
    if not (path == root or path.startswith(root.rstrip("/") + "/")):
        raise ConfigError(f"{where}: the {what} {path} is outside the project {root}",
                          f"keep the {what} inside the project")
    if os.path.realpath(path) != path:
        raise ConfigError(f"{where}: the {what} {path} is reached through a symlink",
                          f"name the real {what} inside the project")
    return path
