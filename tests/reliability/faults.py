"""Helpers shared by the fault-injection tests: the faults are made by the test itself."""

import os
import subprocess
import time

from tests.conftest import BIN

# Every traceback agentsh could print, and its last-resort line for an unexpected exception.
NO_TRACE = (b"Traceback", b"internal error")


def wait_for(path, timeout=30):
    """Until `path` exists and is not empty (a command in the sandbox wrote it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if os.path.getsize(path):
                return
        except OSError:
            pass
        time.sleep(0.02)
    raise AssertionError(f"{path} did not appear within {timeout} s")


def one_line(err):
    """The single line a fault may print on stderr (no traceback)."""
    assert not any(m in err for m in NO_TRACE), err.decode(errors="replace")
    lines = [line for line in err.decode(errors="replace").splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def popen(*args, cwd=None, env=None, user=None, **kw):
    """An ab-* command in the background (as `user`, a conftest.RootlessUser, when given)."""
    argv = [str(BIN / args[0]) if "/" not in args[0] and user is None else args[0], *args[1:]]
    if user is not None:
        argv = ["runuser", "-u", user.name, "--", "env", "-i", *(f"{k}={v}" for k, v in {**user.env, **(env or {})}.items()),
                *argv]
        env = None
    elif env is not None:
        env = {**os.environ, **env}
    kw = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **kw}
    return subprocess.Popen(argv, cwd=cwd, env=env, **kw)


def engine_processes(name):
    """Pids of engine processes (`podman exec ...`) naming sandbox `name`, from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and os.path.basename(argv[0]) == b"podman" and b"exec" in argv and name.encode() in argv:
            if b"-c" in argv and any(a.startswith(b"for d in /proc/") for a in argv):
                continue  # a signal forwarder: short-lived by design
            found.append(int(entry))
    return found


def until(predicate, timeout=10, step=0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(step)
