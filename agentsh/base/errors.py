"""One error type for everything agentsh reports to a user.

Each error carries a one-line message naming the problem and, where there is
one, the command or edit that fixes it; the CLI prints it and exits with its
code, never a traceback.
"""

from __future__ import annotations

# Exit status for agentsh's or the engine's own failure before the user's
# command ran (as `podman run` uses it).
EXIT_FAILURE = 125
EXIT_USAGE = 2


class AgentshError(Exception):
    """A failure the user can act on: message, optional fix, exit code."""

    def __init__(self, message: str, fix: str | None = None, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix
        self.code = code

    def __str__(self) -> str:
        if self.fix:
            return f"{self.message}; {self.fix}"
        return self.message


class UsageError(AgentshError):
    """Bad flags or arguments: exit status 2."""

    def __init__(self, message: str, fix: str | None = None) -> None:
        super().__init__(message, fix, EXIT_USAGE)


class StateError(AgentshError):
    """A state record that cannot be read (torn, empty, unknown schema)."""


class ConfigError(AgentshError):
    """A config file that cannot be used: file, line or key in the message."""


class EngineError(AgentshError):
    """The container engine is missing, stopped, or refused a request."""


class CredentialError(AgentshError):
    """A credential that cannot be stored, found or opened."""


def os_error_fix(path: str, errno_: int | None) -> str:
    """What to do about an OS error on one of agentsh's own files, by its errno."""
    import errno  # lazy: only to name an OS error's fix
    import os  # lazy: only to name an OS error's fix

    directory = os.path.dirname(path) or path
    if errno_ == errno.ENOSPC or errno_ == errno.EDQUOT:
        return f"free some space on the filesystem holding {directory} (df -h {directory}), then run it again"
    if errno_ == errno.EROFS:
        return (f"{directory} is on a read-only filesystem: remount it read-write, or point XDG_STATE_HOME "
                "(XDG_DATA_HOME, XDG_CONFIG_HOME) at a writable directory")
    if errno_ in (errno.EACCES, errno.EPERM):
        return f"make {directory} yours and writable (ls -ld {directory}; chmod u+rwx {directory})"
    if errno_ in (errno.ENOTDIR, errno.EISDIR, errno.ENOENT, errno.EEXIST):
        return f"something unexpected is at {path}: move it aside, then run it again"
    return "check that path (ls -ld), then run it again"


class FileError(StateError, OSError):
    """An OS error on one of agentsh's own files (state, data, cache): one line naming the path and the fix.

    Also an OSError (errno, strerror, filename kept), so code that treats a failed cache write as a
    miss (`except OSError`) still does.
    """

    def __init__(self, path: str, err: OSError, doing: str = "write") -> None:
        super().__init__(f"cannot {doing} {path}: {err.strerror or err}", os_error_fix(path, err.errno))
        self.path, self.errno, self.strerror, self.filename = path, err.errno, err.strerror, path


def from_os_error(err: OSError, doing: str | None = None) -> AgentshError:
    """An OSError that escaped (it names a file) as a one-line error, exit 125."""
    if isinstance(err, AgentshError):
        return err
    path = err.filename if isinstance(err.filename, str) else (
        err.filename.decode("utf-8", "replace") if isinstance(err.filename, bytes) else None)
    if path is None:
        return AgentshError(f"{err.strerror or err}", "check the disk and permissions of agentsh's directories "
                            "(ab-doctor), then run it again")
    return FileError(path, err, doing or "use")
