"""The state store's lock: an exclusive flock on a file, re-entrant per process.

This is the same lock filelock's UnixFileLock takes (flock on the lock file),
without the ~25 ms filelock costs to import (logging, inspect, hashlib...),
which every state write would pay on a hot path. The kernel drops a flock
when its holder dies, so a kill -9 never leaves the store locked. A process
using filelock on the same file excludes us and we it (tests/unit/test_lock.py).
"""

from __future__ import annotations

import fcntl
import os
import time

from agentsh.base.errors import AgentshError

POLL = 0.05


class Timeout(AgentshError):
    """Another process held the lock for longer than we were willing to wait."""

    def __init__(self, path: str, waited: float) -> None:
        super().__init__(f"another agentsh process has held {path} for {waited:g} s",
                         f"wait for it to finish, or find it with: fuser {path}")
        self.path = path


class FileLock:
    """acquire()/release() or `with`; nested use in one process only counts."""

    def __init__(self, path: str, timeout: float = -1) -> None:
        self.path = path
        self.timeout = timeout
        self._fd = None
        self._depth = 0

    @property
    def is_locked(self) -> bool:
        return self._depth > 0

    def acquire(self, timeout: float | None = None) -> FileLock:
        if self._depth:
            self._depth += 1
            return self
        timeout = self.timeout if timeout is None else timeout
        deadline = None if timeout is None or timeout < 0 else time.monotonic() + timeout
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    os.close(fd)
                    raise Timeout(self.path, timeout) from None
                time.sleep(POLL)
        self._fd, self._depth = fd, 1
        return self

    def release(self) -> None:
        if not self._depth:
            return
        self._depth -= 1
        if not self._depth:
            os.close(self._fd)  # closing the only descriptor drops the flock
            self._fd = None

    def __enter__(self) -> FileLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def file_lock(path: str, timeout: float = -1) -> FileLock:
    return FileLock(path, timeout)
