"""The exec server's channel, attacked from the sandbox: rootful and rootless.

What crosses the socket is the command's three descriptors (pipes, or
/dev/null) and the request; a hostile sandbox may remove the socket, put a
listener of its own in its place or kill the server. None of that may reach
a host file the user did not hand over, or hang the user's `ab-exec`.
"""

import shlex
import textwrap
import time

STAND_IN = textwrap.dedent("""\
    import os, socket, sys, time
    os.chdir(os.path.dirname(sys.argv[1]))  # (the full path may be longer than a socket's may be)
    name = os.path.basename(sys.argv[1])
    os.unlink(name)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(name)
    srv.listen(8)
    open(sys.argv[2], "w").close()
    held = []
    deadline = time.monotonic() + 60
    srv.settimeout(1)
    while time.monotonic() < deadline:
        try:
            held.append(srv.accept()[0])  # never says hello
        except socket.timeout:
            pass
""")


def _socket_path(side, name):
    """The exec server's socket on the host, as the side's user sees it."""
    out = side.run("python3", "-c", f"from agentsh.base.paths import run_dir; print(run_dir({name!r}))",
                   check=True).stdout.decode().strip()
    return f"{out}/execd.sock"


def _served(side, repo):
    """Whether ab-exec's command ran under the exec server (not under the engine's exec)."""
    proc = side.ab("ab-exec", "--", "sh", "-c", "p=$(cut -d' ' -f4 /proc/$PPID/stat); cat /proc/$p/comm", cwd=repo)
    return proc.stdout.strip() == b"execd"


def test_a_host_file_given_as_stdin_cannot_be_written_through_its_descriptor(side):
    repo = side.repo()
    side.sandbox(repo)
    outside = side.base / "notes.txt"  # a host file outside every mount, writable by the user
    side.run("sh", "-c", f"echo original > {outside}", check=True)
    attack = "cat; echo pwned >> /proc/$$/fd/0; echo pwned > /proc/self/fd/0; true"
    proc = side.run("sh", "-c", f"ab-exec -- sh -c {shlex.quote(attack)} < {outside}", cwd=repo)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"original\n"  # the command read the file, relayed
    assert side.run("cat", str(outside), check=True).stdout == b"original\n"
    assert _served(side, repo)  # and that was the exec server's path, not the engine's


def test_a_file_the_user_redirects_output_to_gets_exactly_the_output(side):
    repo = side.repo()
    side.sandbox(repo)
    out = side.base / "out.bin"
    proc = side.run("sh", "-c", f"ab-exec -- sh -c 'head -c 300000 /dev/zero; echo end' > {out}", cwd=repo)
    assert proc.returncode == 0, proc.stderr
    data = side.run("cat", str(out), check=True).stdout
    assert len(data) == 300004 and data.endswith(b"end\n")


def test_a_command_holds_only_its_three_descriptors_and_they_are_pipes(side):
    repo = side.repo()
    side.sandbox(repo)
    script = "sleep 30 & p=$!; sleep 0.3; for f in /proc/$p/fd/*; do echo ${f##*/} $(readlink $f); done; kill $p"
    proc = side.ab("ab-exec", "--", "sh", "-c", script, cwd=repo, input=b"")
    assert proc.returncode == 0, proc.stderr
    fds = dict(line.split(" ", 1) for line in proc.stdout.decode().splitlines())
    assert set(fds) == {"0", "1", "2"}, fds
    assert fds["0"] == "/dev/null"  # a background job's stdin, as sh makes it
    assert fds["1"].startswith("pipe:") and fds["2"].startswith("pipe:"), fds


def test_a_socket_removed_from_inside_leaves_ab_exec_working(side):
    repo = side.repo()
    side.sandbox(repo)
    side.inside(repo, "rm -f /run/agentsh/io/execd.sock")
    start = time.monotonic()
    proc = side.ab("ab-exec", "--", "sh", "-c", "echo still-works", cwd=repo)
    assert proc.returncode == 0 and proc.stdout == b"still-works\n", proc.stderr
    assert time.monotonic() - start < 20
    assert not _served(side, repo)  # the engine's exec did it
    side.ab("ab-up", "--recreate", str(repo), check=True)  # a new sandbox has its server again
    assert _served(side, repo)


def test_a_stand_in_listener_that_never_answers_costs_about_a_second(side):
    repo = side.repo()
    name = side.sandbox(repo)
    sock = _socket_path(side, name)
    script, ready = side.base / "stand-in.py", side.base / "stand-in.ready"
    side.run("sh", "-c", f"cat > {script}", input=STAND_IN.encode(), check=True)
    run = (f"python3 {script} {shlex.quote(sock)} {ready} & s=$!; "
           f"i=0; while [ ! -e {ready} ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done; "
           f"t0=$(date +%s%N); ab-exec -- sh -c 'echo via-engine'; rc=$?; t1=$(date +%s%N); "
           f"kill $s; echo rc=$rc ms=$(( (t1 - t0) / 1000000 ))")
    proc = side.run("sh", "-c", run, cwd=repo)
    out = proc.stdout.decode()
    assert "via-engine\n" in out and "rc=0" in out, (out, proc.stderr)
    ms = int(out.rsplit("ms=", 1)[1])
    assert ms < 15000, out  # one connect timeout, then the engine's exec: never a hang


def test_killing_the_server_from_inside_ends_the_sandbox_and_the_next_exec_restarts_it(side):
    repo = side.repo()
    side.sandbox(repo)
    side.ab("ab-exec", "--", "sh", "-c", "kill -KILL $(pidof execd)", cwd=repo)
    proc = side.ab("ab-exec", "--", "sh", "-c", "echo back", cwd=repo)
    assert proc.returncode == 0 and proc.stdout == b"back\n", proc.stderr
    assert _served(side, repo)
