"""The state store: one directory, one lock, atomic versioned JSON records.

Every record is written as temp file + fsync + rename under the store's lock,
so a reader sees the old record or the new one and a kill -9 at any moment
leaves valid state (at worst a stray temp file, which readers ignore).
Records carry a schema number; a torn, empty or unknown-schema record is a
clear error naming the file, never a traceback.
"""

from __future__ import annotations

import os

from agentsh.base import layout, paths
from agentsh.base.errors import StateError

TYPE_CHECKING = False  # typing stays off the hot paths
if TYPE_CHECKING:
    from agentsh.base.lock import FileLock

SCHEMA = 1
_TMP_MARK = ".tmp."


class Store:
    """A state directory (default: the user state dir for agentsh)."""

    def __init__(self, root: str | None = None) -> None:
        self.root = root or paths.state_dir()
        self._locks = {}

    def path(self, rel: str) -> str:
        return os.path.join(self.root, rel)

    def lock(self, name: str = layout.STATE_LOCK, timeout: float = 60) -> FileLock:
        """The store's lock (or a named one, for long per-sandbox work).

        The same object is returned for the same name, so nested use in one
        process is re-entrant instead of a self-deadlock.
        """
        if name not in self._locks:
            from agentsh.base.lock import file_lock  # lazy: fcntl; the warm hot paths take no lock

            path = os.path.join(self.root, layout.lock_file(name))
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            self._locks[name] = file_lock(path, timeout=timeout)
        return self._locks[name]

    def read(self, rel: str) -> dict | None:
        """The record at `rel` as a dict, or None when there is none."""
        path = self.path(rel)
        raw = read_bytes(path)
        return None if raw is None else decode(raw, path)

    def write(self, rel: str, record: dict) -> None:
        """Atomically replace the record at `rel` (taking the store lock)."""
        with self.lock():
            atomic_write(self.path(rel), encode(record))

    def remove(self, rel: str) -> None:
        with self.lock():
            try:
                os.unlink(self.path(rel))
            except FileNotFoundError:
                pass

    def names(self, subdir: str) -> list[str]:
        """Record names (without .json) in a subdirectory, sorted."""
        try:
            entries = os.listdir(self.path(subdir))
        except FileNotFoundError:
            return []
        return sorted(e[:-5] for e in entries if e.endswith(".json") and _TMP_MARK not in e)


def read_bytes(path: str, error: type[Exception] = StateError, what: str = "state record") -> bytes | None:
    """A record file's bytes, or None when it does not exist; other failures are `error`."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise error(f"cannot read {what} {path}: {e.strerror}") from None


def encode(record: dict) -> bytes:
    import json  # only where a record is read or written: json brings re along

    return (json.dumps({**record, "schema": SCHEMA}, indent=1, sort_keys=True) + "\n").encode()


def decode(raw: bytes, path: str) -> dict:
    fix = f"remove it (rm '{path}') and repeat the command that made it"
    if not raw.strip():
        raise StateError(f"state record {path} is empty (torn write?)", fix)
    try:
        import json  # lazy: json brings re along; only where a record is read

        record = json.loads(raw)
    except ValueError:
        raise StateError(f"state record {path} is not valid JSON (torn or edited)", fix) from None
    if not isinstance(record, dict) or "schema" not in record:
        raise StateError(f"state record {path} has no schema version", fix)
    if record["schema"] != SCHEMA:
        raise StateError(
            f"state record {path} has schema {record['schema']!r}, this agentsh reads {SCHEMA}",
            "upgrade agentsh, or " + fix,
        )
    return record


def atomic_write(path: str, data: bytes, mode: int = 0o600) -> None:
    """Write bytes to `path` so that it is either old or new, never partial."""
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    tmp = f"{path}{_TMP_MARK}{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
