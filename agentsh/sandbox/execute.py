"""`ab-exec`'s core: one `exec` call on the hot path, with pass-through I/O.

stdin and stdout are handed to the engine untouched (byte for byte). stderr
is relayed, only so that the engine's own "no such container" / "not
running" error can be recognised and answered by starting the sandbox and
trying once more, instead of being shown. The engine does not forward
signals to an exec'd process, so we do: every process the command started
carries a marker in its environment, and a signal to us is re-sent to them.
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
from agentsh.host.engine import is_gone_message

HOST_ENV = ("TERM", "LANG", "COLORTERM", "TZ")
FORWARDED_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")
MARKER = "AGENTSH_EXEC_ID"
_NOT_FOUND = b"executable file not found"
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


from agentsh.base.layout import RUN_SCRIPT  # noqa: E402 (kept beside its use)


def wrapped(cmd, token):
    """cmd as the sandbox runs it: through agentsh's in-sandbox `run` script.

    A shell with a fallback (bash, else sh) is chosen inside: the `run`
    script's sh is there anyway, and on a terminal the engine's output is
    the terminal's, where a "not found" could not be told from the shell's.
    """
    fallback = getattr(cmd, "fallback", None)
    if fallback:
        first, then = " ".join(cmd), " ".join(fallback)
        cmd = ["sh", "-c", f"command -v {cmd[0]} >/dev/null 2>&1 && exec {first}; exec {then}"]
    return ["sh", RUN_SCRIPT, token, *cmd]


def run_served(conn, cmd, workdir, env, tty, token):
    """Run cmd through the sandbox's exec server (sandbox.execd); returns its exit status."""
    from agentsh.sandbox import execd  # lazy: socket; the engine's exec (AGENTSH_EXEC_SERVER=0) needs none

    return execd.run(conn, wrapped(cmd, token), workdir, env, tty, signal)


def run(engine, name, cmd, workdir, env_names, env_values, tty, recover, token=None):
    """Run cmd in sandbox `name` (through the in-sandbox `run` script); returns its exit status.

    `recover()` is called when the sandbox is missing or stopped; it starts
    it, and the command is tried once more. `env_values` are for names that
    are not secret: the engine keeps them in its database.
    """
    marker = token or new_token()
    env = dict(os.environ, **env_values)
    env[MARKER] = marker
    names = list(dict.fromkeys([*env_names, MARKER]))
    argv = engine.exec_argv(name, wrapped(cmd, marker), workdir=workdir, env_names=names, tty=tty)

    # Without a terminal, the engine gets its own process group so a Ctrl-C
    # or kill reaches only us, and we pass it on; the command's exit status
    # then still comes back through the engine.
    own_group = not tty and not os.isatty(0)
    recovered = False
    while True:
        pid, err_fd = _spawn(argv, env, own_group)
        previous = _forward_signals(engine, name, marker)
        try:
            held, kind = _relay_stderr(err_fd)
            status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        finally:
            _restore(previous)
            os.close(err_fd)
        if kind == _GONE and not recovered and status in (125, 255):
            recover()
            recovered = True
            continue
        if kind == _MISSING and status == 127 and getattr(cmd, "fallback", None):
            cmd.fell_back = True  # the image lacks the preferred shell: the caller may remember it
            cmd = cmd.fallback
            argv = engine.exec_argv(name, wrapped(cmd, marker), workdir=workdir, env_names=names, tty=tty)
            continue
        if kind == _MISSING:
            held = b"ab-exec: " + cmd[0].encode(errors="surrogateescape") + b": command not found in the sandbox\n"
        if held is not None:
            _write_all(2, held)
        return 128 - status if status < 0 else status


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


_GONE, _MISSING = "gone", "missing"


def _relay_stderr(fd):
    """Copy fd to our stderr until EOF.

    The engine's own first line is held back when it says the sandbox is
    gone or the command does not exist (the caller acts on it): returns
    (held bytes, _GONE / _MISSING), or (None, None).
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
                        or (chunk.startswith(b"Error: ") and _NOT_FOUND in chunk)):
            held, kind = chunk, _MISSING
        else:
            if held is not None:
                _write_all(2, held)
                held = kind = None
            _write_all(2, chunk)
        first = False




def _forward_signals(engine, name, marker):
    names = {int(getattr(signal, n)): n.removeprefix("SIG") for n in FORWARDED_SIGNALS}

    def forward(signum, _frame):
        import subprocess  # lazy: only when a signal is forwarded

        subprocess.Popen(engine.argv("exec", name, "sh", "-c", _KILL_SCRIPT, "sh", names[int(signum)],
                                     f"{MARKER}={marker}"),
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    return {signum: signal.signal(signum, forward) for signum in names}


def _restore(previous):
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def stdio_is_terminal():
    return sys.stdin.isatty() and sys.stdout.isatty()
