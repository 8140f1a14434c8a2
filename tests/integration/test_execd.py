"""ab-exec through the sandbox's exec server: the same semantics as the engine's exec, without the engine; on
Podman and on Docker (the private dockerd)."""

import json
import os
import subprocess
import time

import pytest

from tests.conftest import TINY_IMAGE, ab, each_engine, on_engine


@pytest.fixture(params=["podman", "docker"])
def engine(request, user_config, monkeypatch):
    yield from each_engine(request, user_config, monkeypatch, TINY_IMAGE, "tiny_image")


pytestmark = pytest.mark.usefixtures("engine")


def _up(repo):
    return json.loads(ab("ab-up", "--json", str(repo), check=True).stdout)["name"]


SERVED = "p=$(cut -d' ' -f4 /proc/$PPID/stat); cat /proc/$p/comm"  # the run script's parent


def _served(repo):
    """Whether ab-exec's command ran under the exec server (not under the engine's exec)."""
    return ab("ab-exec", "--", "sh", "-c", SERVED, cwd=repo).stdout.strip() == b"execd"


def test_the_sandbox_keep_alive_is_the_exec_server(repo, engine):
    name = _up(repo)
    info = json.loads(on_engine(engine, "container", "inspect", name).stdout)[0]
    assert info["Config"]["Cmd"] == ["/run/agentsh/lib/execd", "/run/agentsh/io/execd.sock"]
    mounts = {m["Destination"]: m for m in info["Mounts"]}
    assert mounts["/run/agentsh/io"]["RW"] is True and mounts["/run/agentsh/lib"]["RW"] is False
    host_dir = mounts["/run/agentsh/io"]["Source"]
    st = os.stat(host_dir)
    assert (st.st_mode & 0o777, st.st_uid) == (0o700, os.getuid())


def test_an_exec_runs_under_the_server_not_the_engine(repo):
    _up(repo)
    assert _served(repo)
    proc = ab("ab-exec", "--", "sh", "-c", "echo out; echo err >&2; exit 7", cwd=repo)
    assert (proc.returncode, proc.stdout, proc.stderr) == (7, b"out\n", b"err\n")


@pytest.mark.parametrize("script, status", [
    ("exit 0", 0), ("exit 3", 3), ("kill -TERM $$", 143), ("kill -KILL $$", 137), ("kill -INT $$", 130),
])
def test_exit_status_is_the_commands(repo, script, status):
    _up(repo)
    assert ab("ab-exec", "--", "sh", "-c", script, cwd=repo).returncode == status


def test_missing_and_unrunnable_commands(repo):
    _up(repo)
    proc = ab("ab-exec", "--", "no-such-command", cwd=repo)
    assert proc.returncode == 127 and proc.stderr == b"ab-exec: no-such-command: command not found in the sandbox\n"
    (repo / "notexec").write_text("#!/bin/sh\n")
    assert ab("ab-exec", "--", "./notexec", cwd=repo).returncode == 126


def test_bytes_pass_exactly_and_stdin_ends(repo):
    _up(repo)
    data = bytes(range(256)) * 4096  # 1 MiB, every byte value
    proc = ab("ab-exec", "--", "cat", cwd=repo, input=data)
    assert proc.returncode == 0 and proc.stdout == data
    proc = ab("ab-exec", "--", "sh", "-c", "wc -c", cwd=repo, input=b"")
    assert proc.stdout.strip() == b"0"


def test_cwd_env_allowlist_and_e_values(repo, monkeypatch):
    _up(repo)
    (repo / "sub").mkdir()
    monkeypatch.setenv("SECRET_ON_HOST", "leak")
    monkeypatch.setenv("PASSED", "by-name")
    proc = ab("ab-exec", "-e", "PASSED", "-e", "SET=by-value", "--", "sh", "-c",
              'pwd; echo "$PASSED $SET ${SECRET_ON_HOST:-none} $HOME"', cwd=repo / "sub", check=True)
    assert proc.stdout.decode().splitlines() == [str(repo / "sub"), "by-name by-value none /home/agent"]


def test_files_a_command_makes_get_the_umask_the_engines_exec_gives(repo):
    """Not the server's own umask 0 (which it needs only to make its socket): no world-writable files."""
    _up(repo)
    served = ab("ab-exec", "--", "sh", "-c", "umask; touch made-served", cwd=repo, check=True).stdout
    engine = ab("ab-exec", "--", "sh", "-c", "umask; touch made-engine", cwd=repo, check=True,
                env={**os.environ, "AGENTSH_EXEC_SERVER": "0"}).stdout
    assert served == engine == b"0022\n"
    assert (repo / "made-served").stat().st_mode & 0o777 == (repo / "made-engine").stat().st_mode & 0o777 == 0o644


def test_a_signal_to_ab_exec_reaches_the_command(repo):
    _up(repo)
    marker = repo / "got-term"
    proc = subprocess.Popen(["ab-exec", "--", "sh", "-c", f"trap 'touch {marker}; exit 5' TERM; "
                             "while :; do sleep 0.1; done"], cwd=repo, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(1.5)
    proc.terminate()
    assert proc.wait(timeout=20) == 5
    assert marker.exists()


def test_a_terminal_is_made_inside_never_passed_in(repo):
    pexpect = pytest.importorskip("pexpect")
    _up(repo)
    child = pexpect.spawn("ab-exec", ["-t", "--", "sh", "-c", "tty; stty size; read x; echo got-$x"],
                          cwd=str(repo), dimensions=(33, 101), timeout=30)
    child.expect(r"/dev/pts/\d+")
    child.expect("33 101")
    child.sendline("line")
    child.expect("got-line")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_a_terminal_stdin_is_never_handed_to_a_pipe_mode_command(repo):
    pexpect = pytest.importorskip("pexpect")
    _up(repo)
    # stdin a terminal, stdout a pipe: no pty, and what the command sees as stdin is not a terminal.
    child = pexpect.spawn("sh", ["-c", "ab-exec -- sh -c '[ -t 0 ] && echo TTY-IN || echo PIPE-IN' | cat"],
                          cwd=str(repo), timeout=30)
    child.expect(pexpect.EOF)
    assert b"PIPE-IN" in child.before and b"TTY-IN" not in child.before


def _fake_server(name, answer_hello):
    """What a hostile sandbox process can do: put its own listener where the server's socket was."""
    import socket
    import threading

    from agentsh.base.paths import run_dir

    dir_fd = os.open(run_dir(name), os.O_PATH | os.O_DIRECTORY)
    path = f"/proc/self/fd/{dir_fd}/execd.sock"  # (the real path may be longer than a socket's may be)
    os.unlink(path)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(8)
    held = []

    def serve():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            held.append(conn)
            if answer_hello:
                conn.sendall(b"agentsh-execd 1\n")  # then read the request and never answer

    threading.Thread(target=serve, daemon=True).start()
    return srv, held


def test_a_replaced_socket_that_never_answers_costs_a_second_then_the_engine_takes_over(repo, engine):
    name = _up(repo)
    srv, _held = _fake_server(name, answer_hello=False)
    try:
        start = time.monotonic()
        proc = ab("ab-exec", "--", "sh", "-c", "echo still-works", cwd=repo)
        assert proc.returncode == 0 and proc.stdout == b"still-works\n"
        assert time.monotonic() - start < 10
    finally:
        srv.close()
    assert not _served(repo)  # the engine's exec did it
    on_engine(engine, "restart", "-t", "0", name)  # the server is back with a fresh socket
    assert _served(repo)


def test_a_stand_in_server_that_stalls_is_left_on_a_second_ctrl_c(repo, engine):
    import signal

    name = _up(repo)
    srv, held = _fake_server(name, answer_hello=True)
    err = repo.parent / "stand-in.err"
    try:
        with open(err, "wb") as err_file:
            proc = subprocess.Popen(["ab-exec", "--", "true"], cwd=repo, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=err_file)
        time.sleep(1.5)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 130
        assert b"left the command after a second signal" in err.read_bytes()
    finally:
        if proc.poll() is None:
            proc.kill()
        for conn in held:  # it holds the descriptors ab-exec sent, as any reader of the socket could
            conn.close()
        srv.close()
        on_engine(engine, "restart", "-t", "0", name)


def test_a_killed_server_takes_its_sandbox_down_and_the_next_exec_restarts_it(repo, engine):
    name = _up(repo)
    on_engine(engine, "exec", name, "sh", "-c", "kill -KILL $(pidof execd) 2>/dev/null; true", check=False)
    proc = ab("ab-exec", "--", "sh", "-c", "echo ok", cwd=repo)
    assert proc.returncode == 0 and proc.stdout == b"ok\n"
    assert _served(repo)


def test_twenty_concurrent_execs_in_one_sandbox(repo):
    _up(repo)
    procs = [subprocess.Popen(["ab-exec", "--", "sh", "-c", f"echo {i}; exit {i % 7}"], cwd=repo,
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE) for i in range(20)]
    results = [(p.communicate(timeout=60)[0], p.returncode) for p in procs]
    assert results == [(f"{i}\n".encode(), i % 7) for i in range(20)]


def _engine_logged(tmp_path, engine):
    """An environment whose `podman` (or `docker`) logs each subcommand to the returned file, then runs the
    real one."""
    import shutil

    log, wrap = tmp_path / "engine.log", tmp_path / "logged-bin"
    wrap.mkdir()
    (wrap / engine).write_text(f'#!/bin/sh\necho "$1" >> {log}\nexec {shutil.which(engine)} "$@"\n')
    (wrap / engine).chmod(0o755)
    return {**os.environ, "PATH": f"{wrap}{os.pathsep}{os.environ['PATH']}"}, log


def test_credential_files_go_in_and_come_back_through_the_server(repo, tmp_path, engine):
    """A file credential is written into the sandbox, and a refreshed one read back, with no engine exec."""
    _up(repo)
    ab("ab-creds", "set", "SRV_TOKEN", "--file", "~/.tool/token.json", "--writeback", input=b"v1-" * 30000,
       check=True)  # 90 kB: more than a pipe holds, so the stdin is written as the command reads it
    ab("ab-creds", "grant", "SRV_TOKEN", str(repo), check=True)
    env, log = _engine_logged(tmp_path, engine)
    proc = ab("ab-exec", "--", "sh", "-c", "wc -c < ~/.tool/token.json; printf v2 > ~/.tool/token.json",
              cwd=repo, env=env)
    assert (proc.returncode, proc.stdout.strip(), proc.stderr) == (0, b"90000", b"")
    assert ab("ab-creds", "get", "SRV_TOKEN", check=True).stdout == b"v2"
    calls = log.read_text().split() if log.exists() else []
    assert "exec" not in calls and _served(repo)


def test_a_stand_in_server_that_stalls_credential_files_costs_its_timeout_then_the_engine_writes_them(repo, tmp_path, engine):
    """A socket that greets and then says nothing: credential files still arrive (by the engine), within the timeout."""
    name = _up(repo)
    ab("ab-creds", "set", "STALL_TOKEN", "--file", "~/.tool/stall", input=b"s3cret", check=True)
    ab("ab-creds", "grant", "STALL_TOKEN", str(repo), check=True)
    srv, held = _fake_server(name, answer_hello=True)
    try:
        env, log = _engine_logged(tmp_path, engine)
        start = time.monotonic()
        proc = subprocess.Popen(["ab-exec", "--", "cat", "/home/agent/.tool/stall"], cwd=repo, env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        # The files go by the engine after the server's 10 s; the command itself then goes to the same
        # stand-in, which never answers: ab-exec is left with two Ctrl-Cs, as a stalled command is.
        time.sleep(13)
        assert "exec" in log.read_text().split()  # the engine wrote the files once the stand-in stalled
        proc.send_signal(2)
        time.sleep(0.5)
        proc.send_signal(2)
        proc.wait(timeout=10)
        assert time.monotonic() - start < 30
    finally:
        if proc.poll() is None:
            proc.kill()
        for conn in held:
            conn.close()
        srv.close()
        on_engine(engine, "restart", "-t", "0", name)
    assert ab("ab-exec", "--", "cat", "/home/agent/.tool/stall", cwd=repo, check=True).stdout == b"s3cret"
