"""direnv-style opt-in for project files.

A project file is honoured only while the hash of (its real path + its bytes)
matches what `ab-allow` recorded; any edit makes it untrusted again. A denial
is keyed by the path alone, so it survives edits. Records live in the state
store: trust/allow/<path hash>.json and trust/deny/<path hash>.json.
`ab-allow --session` trusts the bytes for one shell session only (the id the
cd hook exports as AGENTSH_SESSION): trust/session/<id>/<path hash>.json.
"""

import os
import time

from .digest import sha256_hex
from .errors import AgentshError

ALLOWED = "allowed"
DENIED = "denied"
BLOCKED = "blocked"  # present but never allowed, or changed since
SESSION_ENV = "AGENTSH_SESSION"
_SESSION_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


def _path_key(real_path):
    return sha256_hex(real_path)


def session_id(environ=None):
    """This shell session's id (exported by the cd hook), or None if absent or malformed.

    It names a directory in the store, so anything but a plain token is refused.
    """
    value = (os.environ if environ is None else environ).get(SESSION_ENV, "")
    return value if 8 <= len(value) <= 64 and _SESSION_CHARS.issuperset(value) else None


def _session_rel(session, key):
    return f"trust/session/{session}/{key}.json"


def was_allowed(store, real_path):
    """Whether ab-allow ever recorded this path (to tell "changed" from "never allowed")."""
    return os.path.exists(store.path(f"trust/allow/{_path_key(real_path)}.json"))


def anchor(project):
    """The file a project's trust is recorded for: its project file, else its devcontainer.json.

    A devcontainer.json decides what runs as much as the project file does,
    so a project with only one still needs `ab-allow` before it is honoured.
    """
    if project.config_file:
        return project.config_file
    from .devcontainer import find

    return find(project.root)


def covered_files(anchor_path):
    """Files besides the anchor that the trust hash covers: devcontainer.json and its Dockerfile."""
    from . import devcontainer
    from .errors import ConfigError

    if os.path.basename(anchor_path) == ".agentsh.toml":
        root = os.path.dirname(anchor_path)
        dc_path = devcontainer.find(root)
        files = [dc_path] if dc_path else []
    else:  # the anchor is the devcontainer.json itself
        dc_path = anchor_path
        root = os.path.dirname(os.path.dirname(dc_path)) if os.path.basename(os.path.dirname(dc_path)) == \
            ".devcontainer" else os.path.dirname(dc_path)
        files = []
    if dc_path:
        try:
            dc = devcontainer.load(root)
        except (ConfigError, OSError, UnicodeDecodeError):
            dc = None  # unreadable: its own bytes are still covered, and loading it says what is wrong
        if dc is not None and dc.dockerfile:
            files.append(dc.dockerfile)
    return files


def _covered_bytes(anchor_path):
    """The covered files' names (relative to the anchor's directory) and bytes, as one string."""
    base = os.path.dirname(anchor_path)
    out = b""
    for path in covered_files(anchor_path):
        data = _read_or_none(path)
        out += b"\0" + os.path.relpath(path, base).encode("utf-8", "surrogateescape") + b"\0" + (
            b"<missing>" if data is None else data)
    return out


def content_hash(real_path, data):
    """Hash of the anchor's path and bytes, and of every file it covers (none: as before)."""
    return sha256_hex(real_path.encode("utf-8", "surrogateescape") + b"\0" + data + _covered_bytes(real_path))


def status(store, real_path, data, session=None):
    """ALLOWED, DENIED or BLOCKED for a project file's path and bytes.

    A session allow record counts too: `session` names the shell session
    (None: this process's AGENTSH_SESSION; False: permanent records only).
    """
    key = _path_key(real_path)
    if os.path.exists(store.path(f"trust/deny/{key}.json")):
        return DENIED
    wanted = content_hash(real_path, data)
    record = store.read(f"trust/allow/{key}.json")
    if record and record.get("hash") == wanted:
        return ALLOWED
    session = session_id() if session is None else session
    if session:
        record = store.read(_session_rel(session, key))
        if record and record.get("hash") == wanted:
            return ALLOWED
    # A linked worktree's copy inherits the main checkout's trust while it is
    # byte-identical to the main checkout's file (git links both ways).
    from .worktree import main_checkout_path

    main_file = main_checkout_path(real_path)
    if (main_file and _read_or_none(main_file) == data and _covered_bytes(main_file) == _covered_bytes(real_path)
            and status(store, main_file, data, session) == ALLOWED):
        return ALLOWED
    return BLOCKED


def _read_or_none(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def read_file(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise AgentshError(f"cannot read {path}: {e.strerror}") from None


def allow(store, real_path, session=None):
    """Trust the file's current bytes (and lift a denial of its path).

    With `session`, only for that shell session, and a denial stays in force.
    """
    data = read_file(real_path)
    key = _path_key(real_path)
    if session:
        with store.lock():
            if os.path.exists(store.path(f"trust/deny/{key}.json")):
                raise AgentshError(f"{real_path} is denied",
                                   "run 'ab-allow' without --session to lift the denial")
            store.write(_session_rel(session, key), {"path": real_path, "session": session,
                                                     "hash": content_hash(real_path, data),
                                                     "allowed_at": int(time.time())})
        return
    with store.lock():
        store.remove(f"trust/deny/{key}.json")
        store.write(
            f"trust/allow/{key}.json",
            {"path": real_path, "hash": content_hash(real_path, data), "allowed_at": int(time.time())},
        )


def deny(store, real_path):
    """Block the path whatever its content, until allowed again."""
    key = _path_key(real_path)
    with store.lock():
        store.remove(f"trust/allow/{key}.json")
        store.write(f"trust/deny/{key}.json", {"path": real_path, "denied_at": int(time.time())})
