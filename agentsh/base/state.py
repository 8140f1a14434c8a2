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
from agentsh.base.errors import FileError, StateError

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
            _makedirs(os.path.dirname(path))
            self._locks[name] = _Checked(file_lock(path, timeout=timeout))
        return self._locks[name]

    def read(self, rel: str) -> dict | None:
        """The record at `rel` as a dict, or None when there is none; its fields' types are checked (FIELDS)."""
        path = self.path(rel)
        raw = read_bytes(path)
        return None if raw is None else check_fields(decode(raw, path), rel, path)

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
            except OSError as e:
                raise FileError(self.path(rel), e, "remove") from None

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


def _makedirs(directory: str) -> None:
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    except OSError as e:
        raise FileError(e.filename if isinstance(e.filename, str) else directory, e, "create") from None


class _Checked:
    """A lock whose OS errors (a read-only or full state dir) are one-line FileErrors."""

    def __init__(self, lock: FileLock) -> None:
        self._lock = lock

    def __getattr__(self, name: str):
        return getattr(self._lock, name)

    def acquire(self, timeout: float | None = None) -> _Checked:
        try:
            self._lock.acquire(timeout)
        except OSError as e:
            raise FileError(self._lock.path, e, "open the lock") from None
        return self

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> _Checked:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


def atomic_write(path: str, data: bytes, mode: int = 0o600) -> None:
    """Write bytes to `path` so that it is either old or new, never partial.

    Any OS error (a full or read-only filesystem, say) removes the temp
    file and is a FileError naming `path` and the fix.
    """
    directory = os.path.dirname(path)
    _makedirs(directory)
    tmp = f"{path}{_TMP_MARK}{os.getpid()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    except OSError as e:
        raise FileError(path, e) from None
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise FileError(path, e) from None
        raise
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass  # the record is in place; only its durability across a power cut is less sure


# The types of the fields each kind of record may hold (by its first path component); a field that
# is there must have its type, those in REQUIRED must be there. A record edited by hand (or by an older
# or newer agentsh) that breaks this is a StateError naming the file, never a TypeError later.
_STR, _INT, _BOOL, _DICT, _NONE = str, int, bool, dict, type(None)
STRS = "list of strings"
FIELDS = {
    layout.SANDBOXES: {"name": _STR, "project": _STR, "image": _STR, "spec": _STR, "publish": STRS, "id": _STR,
                       "created": _INT, "pid": (_INT, _NONE), "pid_start": (_INT, _NONE), "pending": _BOOL},
    layout.GRANTS: {"project": _STR, "names": STRS, "ssh_agent": (_DICT, _NONE, _BOOL)},
    layout.WORKTREES: {"name": _STR, "repo": _STR, "path": _STR, "branch": _STR, "from": (_STR, _NONE),
                       "created_branch": _BOOL, "created": _INT},
    "projects": {"root": _STR, "git": (_DICT, _NONE)},
    "trust": {"path": _STR, "hash": _STR, "allowed_at": _INT, "denied_at": _INT, "session": _STR,
              "build": (_DICT, _NONE)},
    "net": {"mode": _STR, "allow": STRS, "lockdown": _BOOL, "sandbox": _STR, "project": _STR,
            "pid": (_INT, _NONE), "pid_start": (_INT, _NONE), "sandbox_pid": (_INT, _NONE),
            "sandbox_start": (_INT, _NONE), "extra": (_STR, _NONE), "log": _STR, "port": _INT},
}
REQUIRED = {layout.WORKTREES: ("name", "path", "branch")}
_NAMES = {_STR: "a string", _INT: "an integer", _BOOL: "true or false", _DICT: "an object", _NONE: "null"}


def _fits(value: object, kind: object) -> bool:
    if kind == STRS:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if isinstance(kind, tuple):
        return any(_fits(value, k) for k in kind)
    if kind is _INT:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _kind_name(kind: object) -> str:
    if isinstance(kind, tuple):
        return " or ".join(_kind_name(k) for k in kind)
    return kind if isinstance(kind, str) else _NAMES.get(kind, getattr(kind, "__name__", str(kind)))


def check_fields(record: dict, rel: str, path: str) -> dict:
    """`record` (read from `rel` at `path`) when its fields have their types (FIELDS); else a StateError."""
    kind = rel.split("/", 1)[0]
    fields = FIELDS.get(kind)
    if not fields:
        return record
    fix = f"remove it (rm '{path}') and repeat the command that made it"
    for name in REQUIRED.get(kind, ()):
        if name not in record:
            raise StateError(f"state record {path} has no field '{name}' (edited by hand?)", fix)
    for name, value in record.items():
        want = fields.get(name)
        if want is not None and not _fits(value, want):
            import json  # lazy: json (~2 ms), only to show a wrong-typed field's value

            shown = json.dumps(value)[:60]
            raise StateError(f"state record {path}: field '{name}' must be {_kind_name(want)}, not {shown} "
                             "(edited by hand?)", fix)
    return record
