"""Where agentsh keeps its files.

The directories are platformdirs' user dirs for "agentsh", so XDG_STATE_HOME,
XDG_CONFIG_HOME, XDG_DATA_HOME and XDG_CACHE_HOME relocate them (tests isolate that way).
On Linux the same rule is computed here without importing platformdirs,
because these paths sit on every command's hot path; tests check both agree.
Nothing is created on import.
"""

from __future__ import annotations

import os
import sys

from agentsh.base import layout

APP = "agentsh"


def _xdg(var: str, fallback: str) -> str:
    value = os.environ.get(var, "").strip()
    if not value:
        value = os.path.expanduser(fallback)
    return os.path.join(value, APP)


def _platformdirs(kind: str) -> str:
    import platformdirs  # lazy: only off Linux (there the XDG rule is computed here)

    return getattr(platformdirs, f"user_{kind}_dir")(APP, appauthor=False)


def state_dir() -> str:
    """Lock, trust records, sandbox records."""
    if sys.platform.startswith("linux"):
        return _xdg("XDG_STATE_HOME", "~/.local/state")
    return _platformdirs("state")


def config_dir() -> str:
    """The user's config.toml (and, later, the credential key)."""
    if sys.platform.startswith("linux"):
        return _xdg("XDG_CONFIG_HOME", "~/.config")
    return _platformdirs("config")


def data_dir() -> str:
    """Bulky things the user may want back: worktrees, credential records."""
    if sys.platform.startswith("linux"):
        return _xdg("XDG_DATA_HOME", "~/.local/share")
    return _platformdirs("data")


def cache_dir() -> str:
    """What can be fetched again: devcontainer features from registries, by digest."""
    if sys.platform.startswith("linux"):
        return _xdg("XDG_CACHE_HOME", "~/.cache")
    return _platformdirs("cache")


def run_dir(sandbox: str) -> str:
    """The host directory of a sandbox's exec socket: in /run/user/UID when the system keeps one
    (a tmpfs owned by the user), else under the state dir. Chosen without reading the environment,
    so every shell and every ab-* command agrees on it."""
    base = f"/run/user/{os.getuid()}"
    try:
        st = os.stat(base)
        own = st.st_uid == os.getuid()
    except OSError:
        own = False
    root = os.path.join(base, APP) if own else os.path.join(state_dir(), "run")
    return os.path.join(root, sandbox)


def user_config_file() -> str:
    return os.path.join(config_dir(), layout.USER_CONFIG)


def home_dir() -> str:
    """The real path of the user's home, which is never a project."""
    return os.path.realpath(os.path.expanduser("~"))
