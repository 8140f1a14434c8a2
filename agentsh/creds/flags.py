"""ab-creds flag values as records hold them: `--ttl` durations and `--file` targets."""

import os
import re

from agentsh.base import paths
from agentsh.base.errors import UsageError
from agentsh.base.layout import SANDBOX_HOME

DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str | None) -> int:
    """'90', '30s', '15m', '12h', '7d', '2w' -> seconds."""
    m = re.fullmatch(r"\s*([0-9]+)\s*([smhdw]?)\s*", text or "")
    if not m or int(m.group(1)) <= 0:
        raise UsageError(f"--ttl {text!r} is not a duration", "give e.g. 3600, 30m, 12h, 7d or 2w")
    return int(m.group(1)) * DURATION_UNITS[m.group(2)]


def sandbox_path(path: str) -> str:
    """A --file target as an absolute path inside the sandbox.

    '~/' is the sandbox home, and so is the host home: the user's shell has
    usually expanded `--file ~/.x` before we see it.
    """
    host_home = paths.home_dir()
    if path.startswith("~/"):
        path = SANDBOX_HOME + path[1:]
    elif path.startswith(host_home + "/") and host_home != "/":
        path = SANDBOX_HOME + path[len(host_home):]  # the shell expanded '~' to the host's home
    parts = path.split("/")
    if not path.startswith("/") or ".." in parts or any(c in path for c in "\n\0") or path.endswith("/"):
        raise UsageError(f"--file {path!r} is not an absolute file path inside the sandbox",
                         "give e.g. ~/.claude/.credentials.json or /run/agentsh/secrets/token")
    return os.path.normpath(path)
