"""Faults while `ab-exec` runs a command, injected by the test: the sandbox removed, stopped or killed
under it, the pids limit hit, two quick signals, a killed ab-exec, a stuck engine.

Both exec paths: the sandbox's exec server, and the engine's exec (AGENTSH_EXEC_SERVER=0), where Podman
may answer a removal with status 255 and "no such container". The command is never run a second time.
"""

import json
import os
import random
import signal
import subprocess
import time

import pytest

from tests.conftest import BIN, ab, podman
from tests.reliability.faults import NO_TRACE, engine_processes, one_line, popen, until, wait_for

PATHS = [pytest.param("1", id="exec-server"), pytest.param("0", id="engine-exec")]
APPEND_AND_WAIT = "echo run >> runs.log; sleep 5"


def up(repo, env=None):
    return json.loads(ab("ab-up", "--json", str(repo), check=True, env=env).stdout)["name"]


def inject(fault, name, run=podman):
    if fault == "rm":
        run("rm", "-f", "-t", "0", name)
    elif fault == "stop":
        run("stop", "-t", "0", name)
    else:
        run("kill", name)


@pytest.mark.parametrize("server", PATHS)
@pytest.mark.parametrize("fault", ["rm", "stop", "kill"])
def test_sandbox_gone_mid_command_runs_it_once_and_says_so(sandbox_env, repo, monkeypatch, server, fault):
    monkeypatch.setenv("AGENTSH_EXEC_SERVER", server)
    for trial in range(3 if fault == "rm" else 1):  # the engine's answer to a removal varies (137, or 255)
        name = up(repo)
        (repo / "runs.log").unlink(missing_ok=True)
        proc = popen("ab-exec", "--", "sh", "-c", APPEND_AND_WAIT, cwd=repo)
        wait_for(repo / "runs.log")
        time.sleep(0.2 + 0.3 * trial)
        inject(fault, name)
        _, err = proc.communicate(timeout=120)
        assert (repo / "runs.log").read_text() == "run\n", "the command ran again"
        assert proc.returncode == 137, err
        state = "removed" if fault == "rm" else "stopped"
        assert f"sandbox {name} was {state} while the command ran" in one_line(err)


@pytest.mark.parametrize("server", PATHS)
def test_rootless_sandbox_removed_mid_command_runs_it_once(rootless_user, server):
    import uuid

    user = rootless_user
    repo = user.mkdir(f"work/faults-{uuid.uuid4().hex[:8]}")
    user.run("git", "init", "-q", str(repo), check=True)
    try:
        name = json.loads(user.run("ab-up", "--json", str(repo), check=True).stdout)["name"]
        proc = popen("ab-exec", "--", "sh", "-c", APPEND_AND_WAIT, cwd=repo, user=user,
                     env={"AGENTSH_EXEC_SERVER": server})
        wait_for(repo / "runs.log", timeout=60)
        time.sleep(0.3)
        user.run("podman", "rm", "-f", "-t", "0", name, check=True)
        _, err = proc.communicate(timeout=120)
        assert (repo / "runs.log").read_text() == "run\n"
        assert proc.returncode == 137, err
        assert f"sandbox {name} was removed while the command ran" in one_line(err)
    finally:
        user.run("ab-down", "--rm", "--volumes", str(repo))
        user.run("rm", "-rf", str(repo))


@pytest.mark.parametrize("server", PATHS)
def test_pids_limit_is_named(sandbox_env, user_config, tiny_image, repo, monkeypatch, server):
    from agentsh.sandbox.execute import pids_at_limit

    user_config(f'image = "{tiny_image}"\npids = 24\n')
    name = up(repo)
    init = json.loads(podman("container", "inspect", name).stdout)[0]["State"]["Pid"]
    # Fill the sandbox's pids cgroup: a subshell forks sleepers until a fork fails (and it exits, leaving one
    # free slot), while the command itself stays as a sleeper: no exec can start a process of its own.
    # Under load a slot can come free after the check (a filler's process ending late) and the exec then
    # fits: the sandbox is filled again, up to three times, so what is tested is the refusal, not the race.
    fillers = []
    try:
        for _ in range(3):
            monkeypatch.delenv("AGENTSH_EXEC_SERVER", raising=False)
            fillers.append(popen("ab-exec", "--", "sh", "-c",
                                 "(while :; do sleep 300 & done) </dev/null >/dev/null 2>&1 & exec sleep 300",
                                 cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            assert until(lambda: pids_at_limit(init), timeout=30)
            time.sleep(0.5)
            monkeypatch.setenv("AGENTSH_EXEC_SERVER", server)
            proc = ab("ab-exec", "--", "echo", "hi", cwd=repo, timeout=60)
            if proc.returncode != 0:
                break
        assert proc.returncode == 125, proc
        assert "the sandbox hit its pids limit (pids = 24)" in one_line(proc.stderr)
        assert b"init-p" not in proc.stderr
    finally:
        for filler in fillers:
            filler.kill()
            filler.communicate()


def test_tty_shell_without_a_terminal_is_refused_not_hung(sandbox_env, repo):
    for stdin in (subprocess.PIPE, subprocess.DEVNULL):  # a pipe that stays open, and /dev/null
        proc = subprocess.Popen([str(BIN / "ab-exec"), "-t"], cwd=repo, stdin=stdin, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 2
        assert "-t with no command needs a terminal" in one_line(err)
    # With a command, -t still gives it a terminal (its stdin is then not read as a shell's commands).
    proc = ab("ab-exec", "-t", "--", "sh", "-c", "[ -t 1 ] && echo tty", cwd=repo, input=b"", timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == b"tty"


@pytest.mark.parametrize("server", PATHS)
def test_two_quick_sigints_exit_130_without_a_traceback(sandbox_env, repo, monkeypatch, server):
    monkeypatch.setenv("AGENTSH_EXEC_SERVER", server)
    up(repo)
    rng = random.Random(20 + int(server))
    for i in range(10):  # 10 on each path: 20 double SIGINTs
        marker = repo / f"started-{i}"
        proc = popen("ab-exec", "--", "sh", "-c", f"echo x > {marker.name}; sleep 30", cwd=repo,
                     start_new_session=True)
        wait_for(marker)
        time.sleep(rng.uniform(0.0, 0.2))
        proc.send_signal(signal.SIGINT)
        time.sleep(rng.uniform(0.002, 0.008))
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert not any(m in err for m in NO_TRACE), err.decode()
        assert proc.returncode == 130, (i, proc.returncode, err)
    assert ab("ab-exec", "--", "echo", "after", cwd=repo, timeout=60).stdout == b"after\n"


@pytest.mark.parametrize("how", ["kill-9", "timeout"])
def test_engine_process_does_not_outlive_ab_exec(sandbox_env, repo, monkeypatch, how):
    monkeypatch.setenv("AGENTSH_EXEC_SERVER", "0")  # the path with an engine process per command
    name = up(repo)
    if how == "kill-9":
        proc = popen("ab-exec", "--", "sh", "-c", "echo x > started; sleep 60", cwd=repo)
        wait_for(repo / "started")
        assert engine_processes(name)
        proc.kill()
        proc.communicate()
    else:
        proc = subprocess.run(["timeout", "3", str(BIN / "ab-exec"), "--", "sleep", "60"], cwd=repo,
                              capture_output=True, timeout=60)
        assert proc.returncode == 124
        assert not any(m in proc.stderr for m in NO_TRACE)
    assert until(lambda: not engine_processes(name), timeout=10), engine_processes(name)
    started = time.monotonic()
    assert ab("ab-exec", "--", "echo", "after", cwd=repo, timeout=120).stdout == b"after\n"
    assert time.monotonic() - started < 30  # the sandbox is not wedged by a leftover exec


def test_stuck_engine_call_times_out_with_one_line(sandbox_env, repo, tmp_path):
    fake = tmp_path / "stuck-bin"
    fake.mkdir()
    (fake / "podman").write_text("#!/bin/sh\nexec sleep 600\n")
    (fake / "podman").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{BIN}:/usr/bin:/bin", "AGENTSH_ENGINE_TIMEOUT": "2"}
    for cmd in (["ab-up", str(repo)], ["ab-exec", "--", "true"]):
        started = time.monotonic()
        proc = ab(*cmd, cwd=repo, timeout=60, env=env)
        assert time.monotonic() - started < 20
        assert proc.returncode == 125
        assert "did not finish within 2 s" in one_line(proc.stderr)
    assert until(lambda: not _stuck_left(fake), timeout=5, step=0.2), "a timed-out engine call left its process"


def _stuck_left(fake):
    """Pids of the stuck fake engine's processes still running."""
    pids = subprocess.run(["pgrep", "-f", "^sleep 600$"], capture_output=True, text=True).stdout.split()
    left = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if str(fake).encode() in f.read():
                    left.append(pid)
        except OSError:
            pass
    return left


def _pids_of(*words):
    """Pids whose command line holds every one of `words`."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmdline = f.read()
            except OSError:
                continue
            if all(w.encode() in cmdline for w in words):
                found.append(int(entry))
    return found


def test_rootless_engine_process_does_not_outlive_a_killed_ab_exec(rootless_user):
    import uuid

    user = rootless_user
    repo = user.mkdir(f"work/faults-{uuid.uuid4().hex[:8]}")
    user.run("git", "init", "-q", str(repo), check=True)
    try:
        name = json.loads(user.run("ab-up", "--json", str(repo), check=True).stdout)["name"]
        tag = f"tag-{uuid.uuid4().hex[:8]}"
        proc = popen("ab-exec", "--", "sh", "-c", f"echo x > started; sleep 60 # {tag}", cwd=repo, user=user,
                     env={"AGENTSH_EXEC_SERVER": "0"})
        wait_for(repo / "started", timeout=60)
        assert engine_processes(name)
        ab_exec = [p for p in _pids_of("ab-exec", tag) if p not in _pids_of("runuser") and p not in _pids_of("podman")]
        assert ab_exec
        for pid in ab_exec:
            os.kill(pid, signal.SIGKILL)
        proc.communicate(timeout=60)
        assert until(lambda: not engine_processes(name), timeout=10), engine_processes(name)
        assert user.run("ab-exec", "--", "echo", "after", cwd=repo).stdout == b"after\n"
    finally:
        user.run("ab-down", "--rm", "--volumes", str(repo))
        user.run("rm", "-rf", str(repo))
