"""direnv-style opt-in for project files.

A project file is honoured only while the hash of (its real path + its bytes)
matches what `ab-allow` recorded; any edit makes it untrusted again. A denial
is keyed by the path alone, so it survives edits. Records live in the state
store: trust/allow/<path hash>.json and trust/deny/<path hash>.json.
`ab-allow --session` trusts the bytes for one shell session only (the id the
cd hook exports as AGENTSH_SESSION): trust/session/<id>/<path hash>.json.
"""

import os
import re
import time

from .digest import sha256_hex
from .errors import AgentshError

ALLOWED = "allowed"
DENIED = "denied"
BLOCKED = "blocked"  # present but never allowed, or changed since
SESSION_ENV = "AGENTSH_SESSION"
_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{8,64}\Z")


def _path_key(real_path):
    return sha256_hex(real_path)


def session_id(environ=None):
    """This shell session's id (exported by the cd hook), or None if absent or malformed.

    It names a directory in the store, so anything but a plain token is refused.
    """
    value = (os.environ if environ is None else environ).get(SESSION_ENV, "")
    return value if _SESSION_ID.match(value) else None


def _session_rel(session, key):
    return f"trust/session/{session}/{key}.json"


def was_allowed(store, real_path):
    """Whether ab-allow ever recorded this path (to tell "changed" from "never allowed")."""
    return os.path.exists(store.path(f"trust/allow/{_path_key(real_path)}.json"))


def content_hash(real_path, data):
    return sha256_hex(real_path.encode("utf-8", "surrogateescape") + b"\0" + data)


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
    if main_file and _read_or_none(main_file) == data and status(store, main_file, data, session) == ALLOWED:
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
