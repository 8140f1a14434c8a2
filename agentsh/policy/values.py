"""Values as agentsh checks them: names, image references, paths, and the merged config's type.

The lowest module of the policy layer: config, agent profiles and the
devcontainer reader all validate with these, so none of them imports another
to check a value.
"""

from __future__ import annotations

import posixpath

from agentsh.base.errors import ConfigError

TYPE_CHECKING = False  # typing costs milliseconds to import, on ab-exec's path
if TYPE_CHECKING:
    import re
    from collections.abc import Callable, Iterable, Mapping, Sequence
    from typing import Any


class Pattern:
    """A regular expression compiled on first use: `re` stays off the hot path."""

    def __init__(self, text: str | bytes) -> None:
        self.text = text
        self._compiled = None

    def match(self, value: str | bytes) -> re.Match | None:
        if self._compiled is None:
            import re  # lazy: see Pattern: re stays off the hot path

            self._compiled = re.compile(self.text)
        return self._compiled.match(value)


DEFAULT_IMAGE = "localhost/agentsh:latest"
ENV_NAME = Pattern(r"[A-Za-z_][A-Za-z0-9_]*\Z")
CREDENTIAL_NAME = Pattern(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}\Z")
CAPABILITY = Pattern(r"(CAP_)?[A-Z_]+\Z")
SIZE = Pattern(r"[0-9]{1,15}[bkmgBKMG]?\Z")
# An image reference as the engines read one (the distribution reference
# grammar): [REGISTRY[:PORT]/]PATH[:TAG][@sha256:HEX]. Nothing that starts
# with '-', holds whitespace or a control character, or could be read as a flag.
IMAGE_REFERENCE = Pattern(
    r"(?:(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    r"|\[[0-9a-fA-F:.]+\])(?::[0-9]{1,5})?/)?"
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?\Z")
# Every Linux capability: `cap_add` names one of these (with or without CAP_), never "ALL".
CAPABILITIES = frozenset((
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
    "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
    "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
    "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
    "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF",
    "CHECKPOINT_RESTORE"))
# Sandbox paths no mount may cover: the kernel's own filesystems and agentsh's (CA bundle, secrets).
RESERVED_SANDBOX_PATHS = ("/proc", "/sys", "/dev", "/run/agentsh")
MAX_PIDS = 4194304  # the kernel's own limit (pid_max)
MAX_CPUS = 4096


def control_character(text: str) -> str | None:
    """The first control character (C0 but tab, DEL, C1) in `text`, or None."""
    for ch in text:
        if (ch < " " and ch != "\t") or "\x7f" <= ch <= "\x9f":
            return ch
    return None


def _no_control(value: object, where: str) -> None:
    """Refuse control characters in any string of a value (escape sequences, NUL, newlines)."""
    if isinstance(value, str):
        ch = control_character(value)
        if ch is not None:
            raise ConfigError(f"{where}: {value!r} holds the control character {ch!r}",
                              "remove it (values are names, paths and commands, one line each)")
    elif isinstance(value, list):
        for v in value:
            _no_control(v, where)
    elif isinstance(value, dict):
        for k, v in value.items():
            _no_control(k, where)
            _no_control(v, where)


def _str(choices: Sequence[str] | None = None) -> Callable[[object, str], str]:
    def check(value: object, where: str) -> str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, not {_type(value)}")
        if choices and value not in choices:
            raise ConfigError(f"{where} must be one of {', '.join(choices)}, not {value!r}")
        return value

    return check


def check_image(value: object, where: str) -> str:
    """An image reference, never something an engine could read as a flag."""
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a string, not {_type(value)}", "give an image reference")
    if len(value) > 255 or not IMAGE_REFERENCE.match(value):
        raise ConfigError(f"{where}: {value!r} is not an image reference",
                          "use [REGISTRY[:PORT]/]NAME[:TAG][@sha256:DIGEST], e.g. localhost/agentsh:latest")
    return value


def check_host_path(value: object, where: str, what: str = "path") -> str:
    """A host path as a config names one: absolute, or under ~ (never relative to wherever ab runs)."""
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: the {what} must be a non-empty string")
    if not (value.startswith("/") or value == "~" or value.startswith("~/")):
        raise ConfigError(f"{where}: {what} {value!r} is not absolute",
                          "give an absolute path or one under ~/ (a relative one would depend on the directory ab runs in)")
    return value


def check_sandbox_path(value: object, where: str) -> str:
    """A path inside the sandbox a mount may cover: absolute, normalised, not agentsh's or the kernel's."""
    if not isinstance(value, str) or not value.startswith("/"):
        raise ConfigError(f"{where}: sandbox path {value!r} is not absolute", "give an absolute path such as /data")
    if posixpath.normpath(value) != value or value.startswith("//"):
        raise ConfigError(f"{where}: sandbox path {value!r} is not normalised (no '.', '..', '//' or trailing '/')",
                          f"write it as {posixpath.normpath(value)!r}")
    if value == "/" or any(value == r or value.startswith(r + "/") for r in RESERVED_SANDBOX_PATHS):
        raise ConfigError(f"{where}: sandbox path {value!r} would cover / or one of "
                          f"{', '.join(RESERVED_SANDBOX_PATHS)}", "mount it somewhere else, e.g. under /mnt")
    if ":" in value or "," in value:
        raise ConfigError(f"{where}: sandbox path {value!r} holds ':' or ','", "choose a path without them")
    return value


def _type(value: object) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "a boolean",
            list: "a list", dict: "a table"}.get(type(value), type(value).__name__)


class Config(dict):
    """The merged settings (the dict), plus how the project file was treated (declared fields).

    Every copy goes through `replace`, which keeps each field unless told
    otherwise, so no copy loses one by accident.
    """

    __slots__ = ("project_file", "project_trust", "notices", "devcontainer", "flag_keys")

    def __init__(self, values: Mapping[str, Any] | Iterable[tuple[str, Any]] = (), *, project_file: str | None = None,
                 project_trust: str | None = None, notices: Sequence[str] = (), devcontainer: Any = None,
                 flag_keys: Iterable[str] = ()) -> None:
        super().__init__(values)
        self.project_file = project_file  # path of the project file, if the project has one
        self.project_trust = project_trust  # trust.ALLOWED / DENIED / BLOCKED, or None
        self.notices = list(notices)  # one-line messages for the user (e.g. untrusted file ignored)
        self.devcontainer = devcontainer  # the project's devcontainer.Devcontainer, read only when trusted
        self.flag_keys = frozenset(flag_keys)  # keys given on the command line (they beat a devcontainer's image)

    def replace(self, values: Mapping[str, Any] | None = None, **fields: Any) -> Config:
        """A copy with `values` merged over the settings and `fields` (by name) set; the rest kept."""
        unknown = set(fields) - set(self.__slots__)
        if unknown:
            raise TypeError(f"Config has no field {', '.join(sorted(unknown))}")
        kept = {name: getattr(self, name) for name in self.__slots__}
        return Config({**self, **(values or {})}, **{**kept, **fields})
