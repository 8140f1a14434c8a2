"""The host side of the sandbox's exec server (agentsh/data/sandbox/execd.c).

The server is the sandbox's keep-alive, started by the container under
--init, so what it forks is inside every wall the container has; agentsh
never enters the sandbox's namespaces itself. `run` connects to its socket
(in the sandbox's own host directory, paths.run_dir), reads the version
line, sends one request (argv, cwd, environment, terminal size) and relays
until the exit status comes back: one connect instead of the engine's
start-up, conmon and `runc exec`.

What crosses: without a terminal, the command's stdin, stdout and stderr
as file descriptors (SCM_RIGHTS), exactly the ones the user gave ab-exec,
except that a terminal is never passed (a tty fd would let the sandbox push
input into the host's terminal): each of those is replaced by a pipe this
process relays. With a terminal, no fd at all: the server makes a pty
inside the sandbox and its bytes travel as frames.

A sandbox process can replace the socket or speak the protocol. That gets
it the request (environment values granted to this very sandbox) and the
descriptors above, which its own commands receive anyway. A missing or
silent server costs at most CONNECT_TIMEOUT before the engine's exec is
used instead; once the request is sent the command may have started, so it
is never tried a second way.
"""

import _socket
import os
import stat

from agentsh.base.digest import sha256_hex
from agentsh.base.fdio import write_all as _write_all  # noqa: F401 (spec_args uses EXECD)
from agentsh.base.layout import EXECD, EXECD_SOCKET, IO_DIR
from agentsh.base.paths import run_dir

HELLO = b"agentsh-execd 1\n"
CONNECT_TIMEOUT = 1.0
CALL_TIMEOUT = 10.0  # agentsh's own commands through the server (credential files in and out)
SOCKET_NAME = os.path.basename(EXECD_SOCKET)
FORWARDED = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")


BINARY = "execd"
MISSING = "execd.missing"  # why there is no server binary (read by ab-status and ab-doctor)


def build(lib_dir):
    """Compile the exec server (static, so it runs in any image) into lib_dir; False if it cannot be.

    The binary is kept in the user's cache dir under the hash of its source,
    so each version is compiled once per user, not once per state dir.
    """
    import shutil  # lazy: only when the exec server is compiled
    import subprocess  # lazy: only when the exec server is compiled


    source = os.path.join(lib_dir, "execd.c")
    with open(source, "rb") as f:
        digest = sha256_hex(f.read())[:16]
    cache_root = os.environ.get("XDG_CACHE_HOME", "").strip() or os.path.expanduser("~/.cache")
    cached = os.path.join(cache_root, "agentsh", f"execd-{digest}")
    target = os.path.join(lib_dir, BINARY)
    if os.access(cached, os.X_OK):
        shutil.copy2(cached, target)
        return True
    cc = shutil.which("cc") or shutil.which("gcc")
    why = "no C compiler (cc) on this host"
    if cc:
        proc = subprocess.run([cc, "-O2", "-static", "-o", target, source], capture_output=True, text=True)
        if proc.returncode == 0:
            tmp = f"{cached}.{os.getpid()}"
            try:
                os.makedirs(os.path.dirname(cached), mode=0o700, exist_ok=True)
                shutil.copy2(target, tmp)
                os.replace(tmp, cached)
            except OSError:  # no cache: the next state dir compiles again
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
            return True
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        why = f"cc could not build it: {(lines or ['exit status %d' % proc.returncode])[-1][:200]}"
    with open(os.path.join(lib_dir, MISSING), "w") as f:
        f.write(why + "\n")
    return False


def available(lib_dir):
    """Whether this agentsh's lib dir holds a built exec server."""
    return os.access(os.path.join(lib_dir, BINARY), os.X_OK)


def spec_args(lib_dir, sandbox):
    """(-v arguments, keep-alive command): the server when it is built, else a plain sleep."""
    if not available(lib_dir):
        return [], ["sleep", "infinity"]
    return ["-v", f"{run_dir(sandbox)}:{IO_DIR}"], [EXECD, EXECD_SOCKET]


def prepare(sandbox):
    """The sandbox's host directory for its socket: the user's, mode 0700."""
    os.makedirs(run_dir(sandbox), mode=0o700, exist_ok=True)
    os.chmod(run_dir(sandbox), 0o700)


def socket_path(sandbox):
    return os.path.join(run_dir(sandbox), SOCKET_NAME)


def _frame(kind, data=b""):
    n = len(data)
    return kind + bytes((n >> 24 & 255, n >> 16 & 255, n >> 8 & 255, n & 255)) + data


def _request(cmd, workdir, env, tty, size):
    fields = [b"tty=1" if tty else b"tty=0", b"rows=%d" % size[0], b"cols=%d" % size[1],
              b"cwd=" + os.fsencode(workdir), b"argc=%d" % len(cmd)]
    fields += [os.fsencode(a) for a in cmd]
    fields += [os.fsencode(k) + b"=" + os.fsencode(v) for k, v in env.items()]
    if any(b"\0" in f for f in fields):
        raise ValueError("a NUL byte in an argument or a variable")
    return b"".join(f + b"\0" for f in fields)


def connect(sandbox):
    """A connected, greeted socket to the sandbox's exec server, or None (use the engine's exec)."""
    try:  # through a descriptor of the directory: a socket path may not exceed 107 bytes
        dir_fd = os.open(run_dir(sandbox), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    s.settimeout(CONNECT_TIMEOUT)
    try:
        s.connect(f"/proc/self/fd/{dir_fd}/{SOCKET_NAME}")
        hello = b""
        while not hello.endswith(b"\n") and len(hello) < 64:
            chunk = s.recv(64 - len(hello))
            if not chunk:
                break
            hello += chunk
    except OSError:
        s.close()
        return None
    finally:
        os.close(dir_fd)
    if hello != HELLO:
        s.close()
        return None
    return s


def run(conn, cmd, workdir, env, tty, signal_module):
    """Run cmd through a connected server; returns its exit status (ServerGone: it went away first)."""
    passed, made, stdin_pipe, outs = [], [], None, {}  # outs: our read end -> where its bytes go
    if not tty:
        for fd in (0, 1, 2):
            if _passable(fd):
                passed.append(fd)
                continue
            r, w = os.pipe()  # a pipe stands for it, relayed here
            if fd == 0:
                passed.append(r)
                made.append(r)
                stdin_pipe = w
            else:
                passed.append(w)
                made.append(w)
                outs[r] = fd
    size = _terminal_size() if tty else (0, 0)
    data = _frame(b"R", _request(cmd, workdir, env, tty, size))
    rights = b"".join(fd.to_bytes(4, "little") for fd in passed)
    conn.settimeout(None)
    sent = conn.sendmsg([data], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, rights)] if passed else [])
    if sent < len(data):
        conn.sendall(data[sent:])
    for fd in made:  # the server holds these now
        os.close(fd)
    return _relay(conn, tty, stdin_pipe, outs, signal_module)


def call(conn, cmd, data=b"", timeout=CALL_TIMEOUT):
    """Run agentsh's own short command through a connected server: `data` on its stdin, no terminal.

    Returns (status, stdout bytes, stderr bytes). The three descriptors passed
    are pipes made here, so nothing of the caller's crosses. ServerGone when the
    connection ends before the exit status or `timeout` seconds pass first (a
    stand-in server that never answers costs the timeout, not a hang).
    """
    import select  # lazy: not loaded by ab-up, which imports this module
    import time  # lazy: only for a deadline

    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        req = _frame(b"R", _request(cmd, "/", {}, False, (0, 0)))
        rights = b"".join(fd.to_bytes(4, "little") for fd in (in_r, out_w, err_w))
        conn.settimeout(timeout)
        sent = conn.sendmsg([req], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, rights)])
        if sent < len(req):
            conn.sendall(req[sent:])
    except OSError:
        for fd in (in_w, out_r, err_r):
            os.close(fd)
        raise ServerGone() from None
    finally:
        for fd in (in_r, out_w, err_w):
            os.close(fd)
    got = {out_r: [], err_r: []}
    poller = select.poll()
    for fd in got:
        poller.register(fd, select.POLLIN)
    poller.register(conn.fileno(), select.POLLIN)
    os.set_blocking(in_w, False)
    if data:
        poller.register(in_w, select.POLLOUT)
    else:
        os.close(in_w)
        in_w = None
    deadline = time.monotonic() + timeout
    buf, status = b"", None
    try:
        while status is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ServerGone()
            for fd, _ev in poller.poll(left * 1000):
                if fd == conn.fileno():
                    chunk = conn.recv(65536)
                    if not chunk:
                        raise ServerGone()
                    buf += chunk
                    while len(buf) >= 5 and len(buf) >= 5 + int.from_bytes(buf[1:5], "big"):
                        n = int.from_bytes(buf[1:5], "big")
                        kind, body, buf = buf[:1], buf[5:5 + n], buf[5 + n:]
                        if kind == b"X" and n == 4:
                            status = int.from_bytes(body, "big", signed=True)
                elif fd == in_w:
                    try:
                        data = data[os.write(in_w, data[:65536]):]
                    except BlockingIOError:
                        continue
                    except OSError:  # the command closed its stdin: the rest is not wanted
                        data = b""
                    if not data:
                        poller.unregister(in_w)
                        os.close(in_w)
                        in_w = None
                else:
                    chunk = os.read(fd, 65536)
                    if chunk:
                        got[fd].append(chunk)
                    else:
                        poller.unregister(fd)
        for fd in got:  # what the command wrote before it ended (a child it left may hold the pipe: no wait)
            os.set_blocking(fd, False)
            try:
                while chunk := os.read(fd, 65536):
                    got[fd].append(chunk)
            except OSError:
                pass
    finally:
        conn.close()
        for fd in (in_w, out_r, err_r):
            if fd is not None:
                os.close(fd)
    return status, b"".join(got[out_r]), b"".join(got[err_r])


def _passable(fd):
    """Whether fd may be handed to the sandbox as it is: a pipe, or /dev/null.

    Anything else is relayed through a pipe. A terminal would let the sandbox
    push input into the host's terminal (TIOCSTI). A regular file (or a
    socket, or a device) could be reopened through /proc/self/fd in another
    mode: a file given as stdin reopened for writing, where the sandbox's
    user may write it. A pipe reopened that way is the same pipe, and
    /dev/null is /dev/null.
    """
    try:
        st = os.fstat(fd)
    except OSError:
        return False
    return stat.S_ISFIFO(st.st_mode) or (stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3))


def _terminal_size():
    try:
        size = os.get_terminal_size(1)
        return size.lines, size.columns
    except OSError:
        return 24, 80


def _relay(conn, tty, stdin_pipe, outs, signal):
    names = {int(getattr(signal, n)): n for n in FORWARDED}
    previous = {}

    sent = []

    def forward(signum, _stack):
        sent.append(signum)
        if len(sent) > 1:  # the command (or whatever answers on the socket) ignored the first: leave
            raise _Abandon(signum)
        try:
            conn.sendall(_frame(b"S", bytes((int(signum),))))
        except OSError:
            pass

    def winch(_signum, _stack):
        rows, cols = _terminal_size()
        try:
            conn.sendall(_frame(b"W", bytes((rows >> 8, rows & 255, cols >> 8, cols & 255))))
        except OSError:
            pass

    for signum in names:
        previous[signum] = signal.signal(signum, forward)
    saved_tty = None
    if tty:
        previous[int(signal.SIGWINCH)] = signal.signal(signal.SIGWINCH, winch)
        saved_tty = _raw(0)
    readers = {conn.fileno(): "conn"}
    if tty:
        readers[0] = "stdin"
    elif stdin_pipe is not None:
        readers[0] = "stdin-pipe"
    for r, target in outs.items():
        readers[r] = ("out", target)
    pipes = {"stdin": stdin_pipe}
    try:
        try:
            status = _loop(conn, readers, outs, pipes)
        except _Abandon as e:
            os.write(2, b"agentsh: left the command after a second signal; it may still run in the sandbox\n")
            status = 128 + int(e.args[0])
    finally:
        if saved_tty is not None:
            import termios  # lazy: only after a terminal was made raw

            termios.tcsetattr(0, termios.TCSADRAIN, saved_tty)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        conn.close()
        for fd in [*outs, *([pipes["stdin"]] if pipes["stdin"] is not None else [])]:
            try:
                os.close(fd)
            except OSError:
                pass
    return status


class ServerGone(Exception):
    """The server closed the connection before the exit status came: the command may have run."""


class _Abandon(Exception):
    """A second signal while the command (or a stand-in server) did not end on the first."""


def _loop(conn, readers, outs, pipes):
    """Relay until the exit status arrives; returns it (ServerGone when the server went away first)."""
    import select  # lazy: not loaded by ab-up, which imports this module

    poller = select.poll()
    for fd in readers:
        poller.register(fd, select.POLLIN)
    buf = pending = b""
    status = None
    while status is None:
        for fd, _ev in poller.poll():
            role = readers.get(fd)
            if role == "conn":
                chunk = conn.recv(65536)
                if not chunk:
                    raise ServerGone()  # the caller finds out why (sandbox removed or stopped, pids limit)
                buf += chunk
                while len(buf) >= 5:
                    n = int.from_bytes(buf[1:5], "big")
                    if len(buf) < 5 + n:
                        break
                    kind, body, buf = buf[:1], buf[5:5 + n], buf[5 + n:]
                    if kind == b"O":
                        _write_all(1, body)
                    elif kind == b"X" and n == 4:
                        status = int.from_bytes(body, "big", signed=True)
            elif role == "stdin":
                data = os.read(0, 65536)
                conn.sendall(_frame(b"I", data) if data else _frame(b"E"))
                if not data:
                    poller.unregister(0)
            elif role == "stdin-pipe":  # the relayed stdin: read only what the command has room for
                data = os.read(0, 65536)
                poller.unregister(0)
                if data:
                    pending = data
                    os.set_blocking(pipes["stdin"], False)
                    readers[pipes["stdin"]] = "stdin-out"
                    poller.register(pipes["stdin"], select.POLLOUT)
                else:
                    os.close(pipes["stdin"])
                    pipes["stdin"] = None
            elif role == "stdin-out":
                try:
                    pending = pending[os.write(fd, pending):]
                except BlockingIOError:
                    continue
                except OSError:  # the command closed its stdin (or ended): what is left is not wanted
                    pending = b""
                    poller.unregister(fd)
                    del readers[fd]
                    os.close(fd)
                    pipes["stdin"] = None
                    continue
                if not pending:
                    poller.unregister(fd)
                    del readers[fd]
                    poller.register(0, select.POLLIN)
            elif isinstance(role, tuple):
                data = os.read(fd, 65536)
                if data:
                    _write_all(role[1], data)
                else:
                    poller.unregister(fd)
    for fd, target in outs.items():  # what the command wrote just before it ended
        os.set_blocking(fd, False)
        try:
            while True:
                data = os.read(fd, 65536)
                if not data:
                    break
                _write_all(target, data)
        except OSError:
            pass
    return status


def _raw(fd):
    import termios  # lazy: only with a terminal
    import tty  # lazy: only with a terminal

    try:
        saved = termios.tcgetattr(fd)
    except termios.error:
        return None
    tty.setraw(fd)
    return saved
