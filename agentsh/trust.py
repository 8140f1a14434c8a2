"""direnv-style opt-in for project files.

A project file is honoured only while the hash of (its real path + its bytes)
matches what `ab-allow` recorded; any edit makes it untrusted again. A denial
is keyed by the path alone, so it survives edits. Records live in the state
store: trust/allow/<path hash>.json and trust/deny/<path hash>.json.
"""

import os
import time

from .digest import sha256_hex
from .errors import AgentshError

ALLOWED = "allowed"
DENIED = "denied"
BLOCKED = "blocked"  # present but never allowed, or changed since


def _path_key(real_path):
    return sha256_hex(real_path)


def content_hash(real_path, data):
    return sha256_hex(real_path.encode("utf-8", "surrogateescape") + b"\0" + data)


def status(store, real_path, data):
    """ALLOWED, DENIED or BLOCKED for a project file's path and bytes."""
    key = _path_key(real_path)
    if os.path.exists(store.path(f"trust/deny/{key}.json")):
        return DENIED
    record = store.read(f"trust/allow/{key}.json")
    if record and record.get("hash") == content_hash(real_path, data):
        return ALLOWED
    return BLOCKED


def read_file(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise AgentshError(f"cannot read {path}: {e.strerror}") from None


def allow(store, real_path):
    """Trust the file's current bytes (and lift a denial of its path)."""
    data = read_file(real_path)
    key = _path_key(real_path)
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
