"""`ab-exec`'s core: one `exec` call on the hot path, with pass-through I/O.

stdin and stdout are handed to the engine untouched (byte for byte). stderr
is relayed, only so that the engine's own "no such container" / "not
running" error can be recognised instead of being shown. A command that may
have started is never run a second time: only an engine whose containers
are not local processes (where ab-exec could not check first that the
sandbox runs) starts the sandbox and tries once more, and only when the
engine failed before running anything (status 125). Otherwise the sandbox
went away during the command: `SandboxGone` is raised, and the caller says
so in one line. The engine does not forward signals to an exec'd process,
so we do: every process the command started carries a marker in its
environment, and a signal to us is re-sent to them. The engine process is
tied to ours (a parent-death signal), so a killed ab-exec leaves no engine
process behind.
"""

import os

from agentsh.base.errors import UsageError
from agentsh.policy.config import ENV_NAME

try:  # the C module behind `signal`, without the enum import (~3 ms) on the hot path
    import _signal as signal
except ImportError:  # pragma: no cover - other interpreters
    import signal
import sys

from agentsh.base.fdio import write_all as _write_all
from agentsh.host.engine import GONE_STATUSES, is_gone_message, tied

HOST_ENV = ("TERM", "LANG", "COLORTERM", "TZ")
FORWARDED_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")
MARKER = "AGENTSH_EXEC_ID"
_NOT_FOUND = b"executable file not found"
# How the engine's exec says it found no program to run: Podman's "Error: ..." (status 127) and Docker's
# "OCI runtime exec failed: ... executable file not found in $PATH: unknown" (status 126), or, for a path,
# "stat /x: no such file or directory".
_ENGINE_ERRORS = (b"Error: ", b"OCI runtime exec failed")
_NO_FILE = b"no such file or directory"
_RUN_NOT_FOUND = b"ab-exec: "  # the in-sandbox run script's own "command not found" line
# Sent into the sandbox on a signal: re-send it to every process carrying the marker.
_KILL_SCRIPT = (
    'for d in /proc/[0-9]*; do '
    'if tr "\\000" "\\n" < "$d/environ" 2>/dev/null | grep -qxF "$2"; then kill -s "$1" "${d#/proc/}" 2>/dev/null; fi; '
    'done'
)


def host_env_names(environ):
    """The host variables every exec inherits: TERM, LANG, LC_*, COLORTERM, TZ."""
    return [n for n in environ if n in HOST_ENV or n.startswith("LC_")]


def parse_env_args(items, environ):
    """-e NAME or -e NAME=VALUE -> (names, values to set in the engine's env)."""
    names, values = [], {}
    for item in items:
        name, eq, value = item.partition("=")
        if not ENV_NAME.match(name):
            raise UsageError(f"-e {item!r}: {name!r} is not a valid variable name")
        if eq:
            values[name] = value
        elif name not in environ:
            continue  # like `podman exec -e NAME`: unset stays unset
        names.append(name)
    return names, values


def new_token():
    """A fresh id for one exec: its signal marker, and the name of its secrets and git export files."""
    return f"{os.getpid()}-{os.urandom(6).hex()}"


from agentsh.base.layout import LIB, RUN_SCRIPT  # noqa: E402 (kept beside its use)

# What bash in a sandbox does with a command it cannot find: `ab` and `ab-*` say where the shell is
# (agentsh/data/sandbox/shrc). Given to bash as an exported function, which outlives /etc/profile.
_BASH_NOT_FOUND = ("'BASH_FUNC_command_not_found_handle%%=() { case $1 in ab|ab-*) . " + LIB + "/shrc; "
                   '_agentsh_not_here "$1";; *) printf "bash: %s: command not found\\n" "$1" >&2; return 127;; '
                   "esac; }'")


def wrapped(cmd, token):
    """cmd as the sandbox runs it: through agentsh's in-sandbox `run` script.

    A shell with a fallback (bash, else sh) is chosen inside: the `run`
    script's sh is there anyway, and on a terminal the engine's output is
    the terminal's, where a "not found" could not be told from the shell's.
    """
    fallback = getattr(cmd, "fallback", None)
    if fallback:
        first, then = " ".join(cmd), " ".join(fallback)
        start = f"exec {first}"
        if cmd[0] == "bash":
            start = f"{{ command -v env >/dev/null 2>&1 && exec env {_BASH_NOT_FOUND} {first}; {start}; }}"
        cmd = ["sh", "-c", f"command -v {cmd[0]} >/dev/null 2>&1 && {start}; exec {then}"]
    return ["sh", RUN_SCRIPT, token, *cmd]


def run_served(conn, cmd, workdir, env, tty, token):
    """Run cmd through the sandbox's exec server (sandbox.execd); returns its exit status."""
    from agentsh.sandbox import execd  # lazy: socket; the engine's exec (AGENTSH_EXEC_SERVER=0) needs none

    try:
        return execd.run(conn, wrapped(cmd, token), workdir, env, tty, signal)
    except execd.ServerGone:
        raise SandboxGone(125) from None


def server_runner(sandbox):
    """Runs agentsh's own short commands (credential files in and out) through the sandbox's exec server.

    The runner returns (status, stdout, stderr text), or None when the server
    does not answer or goes away first; creds.delivery then uses the engine's exec.
    """
    def run(cmd, data):
        from agentsh.sandbox import execd  # lazy: socket; only when a credential file is delivered

        conn = execd.connect(sandbox)
        if conn is None:
            return None
        try:
            status, out, err = execd.call(conn, cmd, data)
        except execd.ServerGone:
            return None
        return status, out, err.decode("utf-8", "replace")

    return run


class SandboxGone(Exception):
    """The sandbox was removed or stopped while the command ran (or the exec server went away).

    `status`: what the engine or the server reported. The caller finds out
    which it was and says so in one line; the command is never run again.
    """

    def __init__(self, status, held=None):
        super().__init__(status)
        self.status, self.held = status, held


class PidsLimit(Exception):
    """The exec could not start a process in the sandbox (runc's "read init-p": the pids limit, usually)."""

    def __init__(self, status, held):
        super().__init__(status)
        self.status, self.held = status, held


def run(engine, name, cmd, workdir, env_names, env_values, tty, recover, token=None):
    """Run cmd in sandbox `name` (through the in-sandbox `run` script); returns its exit status.

    `recover()` (None: never) is called when the engine says the sandbox is
    missing or stopped before it ran anything (status 125); it starts it, and
    the command is tried once more. Pass None where the caller checked that
    the sandbox runs: a "gone" answer then means it went away during the
    command (SandboxGone), and the command may have run. `env_values` are for
    names that are not secret: the engine keeps them in its database.
    """

    marker = token or new_token()
    env = dict(os.environ, **env_values)
    env[MARKER] = marker
    names = list(dict.fromkeys([*env_names, MARKER]))
    argv = tied(engine.exec_argv(name, wrapped(cmd, marker), workdir=workdir, env_names=names, tty=tty))

    # Without a terminal, the engine gets its own process group so a Ctrl-C
    # or kill reaches only us, and we pass it on; the command's exit status
    # then still comes back through the engine.
    own_group = not tty and not os.isatty(0)
    recovered = False
    while True:
        forwarder = _Forwarder(engine, name, marker)
        previous = forwarder.install()  # before the spawn: no signal falls between the two
        err_fd = None
        try:
            if forwarder.received:  # a signal before the command started: it is not started at all
                return 128 + forwarder.received[0]
            pid, err_fd = _spawn(argv, env, own_group)
            forwarder.started()
            held, kind = _relay_stderr(err_fd)
            status = _wait(pid)
        finally:
            _restore(previous)
            if err_fd is not None:
                os.close(err_fd)
        if kind == _GONE and recover is not None and not recovered and status in GONE_STATUSES:
            recover()
            recovered = True
            continue
        if kind == _GONE:
            raise SandboxGone(status, held)
        if kind == _PIDS:
            raise PidsLimit(status, held)
        if kind == _MISSING and status in (126, 127) and getattr(cmd, "fallback", None):
            cmd.fell_back = True  # the image lacks the preferred shell: the caller may remember it
            cmd = cmd.fallback
            argv = tied(engine.exec_argv(name, wrapped(cmd, marker), workdir=workdir, env_names=names, tty=tty))
            continue
        if kind == _MISSING:
            held, status = _missing_line(held, cmd), 127  # one line and one status, whatever the engine
        if held is not None:
            _write_all(2, held)
        return 128 - status if status < 0 else status


def _missing_line(held, cmd):
    """agentsh's one line for a program not found, naming the program the engine names when it is not cmd's."""
    if held.startswith(_RUN_NOT_FOUND):
        return held
    what = cmd[0].encode(errors="surrogateescape")
    start = held.find(b'exec: "')
    if start >= 0:
        end = held.find(b'"', start + 7)
        named = held[start + 7:end] if end > start else b""
        if named and named != what and named in (b"sh", b"/bin/sh"):  # the `run` script's own interpreter
            return (b"ab-exec: the sandbox's image has no sh, which agentsh runs every command with; "
                    b"use an image with a POSIX shell\n")
    return b"ab-exec: " + what + b": command not found in the sandbox\n"


def _wait(pid):
    """The engine's exit status; a signal to us meanwhile is forwarded by its handler, not an error."""
    while True:
        try:
            return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        except InterruptedError:  # pragma: no cover - PEP 475 retries, but a handler may raise
            continue


def _spawn(argv, env, own_group):
    """Start the engine with our stdin/stdout and a pipe as stderr: (pid, read end).

    posix_spawn rather than subprocess, whose import alone costs a few ms on
    the hot path.
    """
    read_end, write_end = os.pipe()
    try:
        group = {"setpgroup": 0} if own_group else {}
        pid = os.posix_spawn(argv[0], argv, env, file_actions=[(os.POSIX_SPAWN_DUP2, write_end, 2)], **group)
    except OSError:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
    return pid, read_end


_GONE, _MISSING, _PIDS = "gone", "missing", "pids"
_INIT_P = (b"read init-p", b"resource temporarily unavailable")  # runc could not start the process


def _relay_stderr(fd):
    """Copy fd to our stderr until EOF.

    The engine's own first line is held back when it says the sandbox is
    gone, the command does not exist, or no process could be started (the
    caller acts on it): returns (held bytes, _GONE / _MISSING / _PIDS), or
    (None, None).
    """
    first = True
    held = kind = None
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return held, kind
        if first and is_gone_message(chunk):
            held, kind = chunk, _GONE
        elif first and ((chunk.startswith(_RUN_NOT_FOUND) and b": command not found in the sandbox" in chunk)
                        or (chunk.startswith(_ENGINE_ERRORS) and (_NOT_FOUND in chunk or (
                            chunk.startswith(_ENGINE_ERRORS[1]) and _NO_FILE in chunk)))):
            held, kind = chunk, _MISSING
        elif first and chunk.startswith(b"Error: ") and any(m in chunk[:400].lower() for m in _INIT_P):
            held, kind = chunk, _PIDS
        else:
            if held is not None:
                _write_all(2, held)
                held = kind = None
            _write_all(2, chunk)
        first = False


class _Forwarder:
    """Signal handlers that pass a signal on to every process of the command (by its marker).

    A handler may run again while it runs (two quick Ctrl-Cs): it only
    spawns, imports nothing and takes no lock, so that is harmless.
    """

    def __init__(self, engine, name, marker):
        self.engine, self.name, self.marker = engine, name, marker
        self.received = []
        self.running = False

    def install(self):
        names = {int(getattr(signal, n)): n.removeprefix("SIG") for n in FORWARDED_SIGNALS}
        self.names = names
        return {signum: signal.signal(signum, self._handle) for signum in names}

    def started(self):
        self.running = True
        for signum in self.received:  # arrived between the spawn and now
            self._send(signum)

    def _handle(self, signum, _frame):
        signum = int(signum)
        self.received.append(signum)
        if self.running:
            self._send(signum)

    def _send(self, signum):
        argv = self.engine.argv("exec", self.name, "sh", "-c", _KILL_SCRIPT, "sh", self.names[signum],
                                f"{MARKER}={self.marker}")
        try:
            null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
            try:
                os.posix_spawn(argv[0], argv, os.environ, setpgroup=0,
                               file_actions=[(os.POSIX_SPAWN_DUP2, null, 0), (os.POSIX_SPAWN_DUP2, null, 1),
                                             (os.POSIX_SPAWN_DUP2, null, 2)])
            finally:
                os.close(null)
        except OSError:
            pass  # the engine is gone: the command ends with its sandbox


def _restore(previous):
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def pids_at_limit(pid):
    """Whether the pids cgroup of process `pid` (a sandbox's init) is at or near its limit, or None when unknown."""
    try:
        with open(f"/proc/{int(pid)}/cgroup") as f:
            lines = f.read().splitlines()
    except (OSError, ValueError, TypeError):
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "pids" or (controllers == "" and len(lines) == 1):
            base = "/sys/fs/cgroup/pids" if controllers == "pids" else "/sys/fs/cgroup"
            try:
                with open(f"{base}{path}/pids.max") as f:
                    limit = f.read().strip()
                with open(f"{base}{path}/pids.current") as f:
                    current = int(f.read())
            except (OSError, ValueError):
                return None
            return limit != "max" and current >= int(limit) - 2
    return None


def stdio_is_terminal():
    return sys.stdin.isatty() and sys.stdout.isatty()
