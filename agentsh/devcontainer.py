"""`.devcontainer/devcontainer.json`: the subset that makes sense for a sandbox.

The file is JSON with comments and trailing commas (JSONC). It is project
content, so it is read only for an allowed project, and `initializeCommand`
(which would run on the host) is never run. What we do not honour is named,
so nobody wonders why a property had no effect.
"""

import os

from .errors import ConfigError

LOCATIONS = (".devcontainer/devcontainer.json", ".devcontainer.json")
SUPPORTED = {"image", "build", "dockerFile", "context", "remoteUser", "containerUser", "containerEnv",
             "remoteEnv", "mounts", "forwardPorts", "postCreateCommand", "name"}
# Read and deliberately not acted on; reported apart from unknown ones.
NEVER_RUN = {"initializeCommand"}


def find(project_root):
    """The devcontainer.json path of a project, or None."""
    for rel in LOCATIONS:
        path = os.path.join(project_root, rel)
        if os.path.isfile(path):
            return path
    return None


def strip_jsonc(text):
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


def parse(text, source):
    import json  # only when there is a file: `find` sits on every command's path

    try:
        data = json.loads(strip_jsonc(text))
    except ValueError as e:
        raise ConfigError(f"{source}: invalid JSON: {e}", "fix the file (comments and trailing commas are fine)") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be an object")
    return data


def _mount(entry, source, workspace):
    """A devcontainer mount ("source=..,target=..,type=bind" or an object) -> HOST:SANDBOX[:ro]."""
    if isinstance(entry, str):
        fields = dict(part.split("=", 1) for part in entry.split(",") if "=" in part)
        if "readonly" in entry.split(","):
            fields["readonly"] = "true"
    elif isinstance(entry, dict):
        fields = {k: str(v).lower() if isinstance(v, bool) else v for k, v in entry.items()}
    else:
        raise ConfigError(f"{source}: mounts entries must be strings or objects")
    kind = fields.get("type", "bind")
    src = fields.get("source") or fields.get("src")
    dst = fields.get("target") or fields.get("dst") or fields.get("destination")
    if kind != "bind" or not src or not dst:
        return None  # volumes and tmpfs are the sandbox's business
    src = src.replace("${localWorkspaceFolder}", workspace)
    if "${" in src or "${" in dst:
        return None
    ro = str(fields.get("readonly", fields.get("ro", "false"))).lower() in ("true", "1")
    return f"{src}:{dst}{':ro' if ro else ''}"


class Devcontainer:
    """What agentsh takes from a devcontainer.json, and what it left out."""

    def __init__(self, path, data, workspace):
        self.path = path
        self.dir = os.path.dirname(path)
        self.ignored = sorted(set(data) - SUPPORTED - NEVER_RUN)
        self.never_run = sorted(set(data) & NEVER_RUN)
        self.image = data.get("image")
        build = data.get("build") or {}
        if "dockerFile" in data:  # the older spelling
            build = {"dockerfile": data["dockerFile"], "context": data.get("context", "."), **build}
        self.dockerfile = os.path.normpath(os.path.join(self.dir, build["dockerfile"])) if build.get("dockerfile") else None
        self.context = os.path.normpath(os.path.join(self.dir, build.get("context", "."))) if self.dockerfile else None
        self.build_args = {str(k): str(v) for k, v in (build.get("args") or {}).items()}
        self.user = data.get("remoteUser") or data.get("containerUser")
        self.env = {str(k): str(v) for k, v in {**(data.get("containerEnv") or {}),
                                                **(data.get("remoteEnv") or {})}.items()}
        self.mounts = [m for m in (_mount(e, path, workspace) for e in data.get("mounts") or []) if m]
        self.ports = [p.split(":")[-1] if isinstance(p, str) else p for p in data.get("forwardPorts") or []]
        self.post_create = data.get("postCreateCommand")

    def files(self):
        """Every file that shapes what runs: trust is taken over all of them."""
        return [self.path] + ([self.dockerfile] if self.dockerfile else [])

    def post_create_commands(self):
        """postCreateCommand as argv lists (a string runs through sh -c)."""
        return _commands(self.post_create, self.path)

    def notices(self):
        out = []
        if self.ignored:
            out.append(f"{self.path}: ignoring {', '.join(self.ignored)} (not supported in a sandbox)")
        if self.never_run:
            out.append(f"{self.path}: never running initializeCommand (it would run on the host)")
        return out


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


def load(project_root):
    path = find(project_root)
    if path is None:
        return None
    with open(path, encoding="utf-8") as f:
        return Devcontainer(path, parse(f.read(), path), project_root)
