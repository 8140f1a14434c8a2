"""File operations in directories the sandbox can write, that never follow a link it planted.

Every path is walked one component at a time from a directory descriptor the
host opened itself, with O_NOFOLLOW, so a symlink or a swapped directory in
the tree is an error (OSError), never a way out.
"""

from __future__ import annotations

import os
import stat

from agentsh.base.errors import AgentshError, ConfigError

MAX_PROJECT_FILE = 1 << 20  # a project file, devcontainer.json or Dockerfile: far beyond any real one
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class NotRegular(AgentshError):
    """A project file that is a symlink, a directory, a FIFO or a device: never read."""

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def open_dir(path: str, rel: str = "", create: bool = False, mode: int = 0o700) -> int:
    """A descriptor of `path`/`rel`, each component of `rel` a real directory (made if `create`)."""
    fd = os.open(path, _DIR)
    try:
        for part in [p for p in rel.split("/") if p]:
            if part in (".", ".."):
                raise OSError(f"{rel!r}: '.' or '..' in a path")
            if create:
                try:
                    os.mkdir(part, mode, dir_fd=fd)
                except FileExistsError:
                    pass
            nxt = os.open(part, _DIR, dir_fd=fd)
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def read(dir_fd: int, name: str, limit: int = 1 << 20) -> bytes | None:
    """The bytes of regular file `name` in dir_fd (at most `limit`), or None if it is not there."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{name} is not a regular file")
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise OSError(f"{name} is larger than {limit} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)


def copy_out(dir_fd: int, name: str, target: str, limit: int) -> None:
    """Copy regular file `name` of dir_fd to the host path `target` (new, mode 0600)."""
    src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        st = os.fstat(src)
        if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
            raise OSError(f"{name} is not a regular file under {limit} bytes")
        dst = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            copied = 0
            while True:
                chunk = os.read(src, 1 << 20)
                if not chunk:
                    break
                copied += len(chunk)
                if copied > limit:
                    raise OSError(f"{name} grew past {limit} bytes")
                os.write(dst, chunk)
        finally:
            os.close(dst)
    finally:
        os.close(src)


def write(dir_fd: int, name: str, data: bytes, mode: int = 0o644) -> None:
    """Replace `name` in dir_fd with `data`: a new file renamed over it (a planted link is replaced, not followed)."""
    tmp = f".{name}.agentsh-tmp-{os.getpid()}"
    try:
        os.unlink(tmp, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dir_fd)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


def unlink(dir_fd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass


# -- whole files of a project, and the user config -----------------------------------


def _read_fd(fd: int, path: str, limit: int) -> bytes:
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        raise NotRegular(f"{path} is not a regular file", "agentsh reads project files only as regular files")
    chunks, size = [], 0
    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise ConfigError(f"{path} is larger than {limit} bytes", "agentsh reads no project file that large")
        chunks.append(chunk)


def read_project_file(path: str, limit: int = MAX_PROJECT_FILE) -> bytes:
    """The bytes of a file in a project: opened without following a symlink, a regular file only.

    host.gittopo.read_small opens the same way but stays separate: it returns a prefix or None and never
    raises, while a project file is read whole or refused with an error that names the fix.
    """
    try:
        fd = os.open(path, _READ_FLAGS)
    except OSError as e:
        import errno  # lazy: only on this error path

        if e.errno == errno.ELOOP:
            raise NotRegular(f"{path} is a symlink, which agentsh never follows in a project",
                             "replace it by the file itself") from None
        raise AgentshError(f"cannot read {path}: {e.strerror}") from None
    try:
        return _read_fd(fd, path, limit)
    finally:
        os.close(fd)


def _read_or_none(path: str) -> bytes | None:
    try:
        return read_project_file(path)
    except AgentshError:
        return None


def read_file(path: str) -> bytes:
    """The bytes of a file outside any project (the user config): a final symlink is followed,
    but only into a regular file (a FIFO would block, a device would never end)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise AgentshError(f"cannot read {path}: {e.strerror}") from None
    try:
        return _read_fd(fd, path, MAX_PROJECT_FILE)
    finally:
        os.close(fd)
