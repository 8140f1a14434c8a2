"""A remote engine: Podman reached through CONTAINER_HOST, a `podman system service` on a private Unix socket,
directly and over SSH to localhost (a private sshd, tests/sshd.py), by URL and as a `podman system connection`.

Podman-only: the service is rootful Podman's own (so its containers and
images are the ones `podman` shows, and the usual clean-up applies).
The case of a remote machine that does not share the project is made with a
service in a mount namespace of its own, where a tmpfs covers the project.
"""

import json
import os
import shutil
import subprocess
import time

import pytest

from tests import sshd
from tests.conftest import ab, podman

pytestmark = pytest.mark.usefixtures("sandbox_env")


class Service:
    def __init__(self, directory, hide=None):
        self.socket = directory / "podman.sock"
        argv = ["podman", "system", "service", "--time=0", f"unix://{self.socket}"]
        if hide:  # the service's machine has an empty directory where the project is
            argv = ["unshare", "-m", "--propagation", "private", "sh", "-c",
                    'mount -t tmpfs none "$1" && shift && exec "$@"', "sh", str(hide), *argv]
        self.log = open(directory / "service.log", "wb")
        # A containers.conf of the service's own: the conmon processes it starts keep CONTAINERS_CONF (of
        # their environment, little else), which is how stop() tells them from any other engine's
        conf = directory / "service-containers.conf"
        if os.environ.get("CONTAINERS_CONF"):
            shutil.copyfile(os.environ["CONTAINERS_CONF"], conf)
        else:
            conf.write_text("")
        self.marker = f"CONTAINERS_CONF={conf}"
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env={**os.environ, "CONTAINERS_CONF": str(conf)})
        for _ in range(100):
            if self.socket.exists():
                break
            time.sleep(0.1)
        else:
            self.stop()
            raise AssertionError("podman system service did not make its socket")
        self.url = f"unix://{self.socket}"

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        # Podman's service leaves two conmon processes per exec session, which end only after the engine's
        # exit_command_delay (5 minutes; podman#20415): the ones this service started go now.
        for pid in started_by(self.marker):
            try:
                os.kill(pid, 9)
            except OSError:
                pass


def started_by(marker):
    """Pids of the processes whose environment holds `marker` (NAME=VALUE)."""
    want = marker.encode() + b"\0"
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if want in f.read() + b"\0":
                        yield int(entry)
            except OSError:
                pass


@pytest.fixture
def service(tmp_path, monkeypatch):
    srv = Service(tmp_path)
    monkeypatch.setenv("CONTAINER_HOST", srv.url)
    yield srv
    # The service's containers are rootful Podman's own: sandbox_env's clean-up, which runs after this,
    # must ask the local engine, not a stopped service
    monkeypatch.delenv("CONTAINER_HOST", raising=False)
    srv.stop()


def test_the_remote_case_keeps_same_path_mounts_the_exec_server_and_a_warm_up_without_the_engine(repo, service,
                                                                                                 monkeypatch):
    up = json.loads(ab("ab-up", "--json", cwd=repo, check=True).stdout)
    info = json.loads(podman("container", "inspect", up["name"]).stdout)[0]
    assert any(m["Source"] == str(repo) and m["Destination"] == str(repo) for m in info["Mounts"])
    (repo / "sub").mkdir()
    proc = ab("ab-exec", "--", "sh", "-c", "pwd; echo made > f; exit 5", cwd=repo / "sub")
    assert proc.returncode == 5 and proc.stdout == f"{repo}/sub\n".encode(), proc.stderr
    assert (repo / "sub" / "f").read_text() == "made\n"
    assert json.loads(ab("ab-status", "--json", cwd=repo, check=True).stdout)["exec"] == "server"
    ab("ab-up", cwd=repo, check=True)  # the first ab-up after the creation sees it running (one inspect)
    # The sandbox's init was seen to be a process of this host: a warm ab-up asks no engine at all,
    # which shows with an engine that cannot be reached.
    monkeypatch.setenv("CONTAINER_HOST", f"unix://{service.socket}.nowhere")
    warm = ab("ab-up", cwd=repo)
    assert warm.returncode == 0 and warm.stdout.decode().strip() == up["name"], warm.stderr
    cold = ab("ab-ls")
    assert cold.returncode == 125  # (the listing does ask it)


def test_a_missing_command_and_recovery_through_the_service(repo, service):
    name = ab("ab-up", cwd=repo, check=True).stdout.decode().strip()
    missing = ab("ab-exec", "--", "no-such-program", cwd=repo)
    assert missing.returncode == 127
    assert missing.stderr == b"ab-exec: no-such-program: command not found in the sandbox\n"
    podman("rm", "-f", "-t", "0", name)
    back = ab("ab-exec", "--", "echo", "back", cwd=repo)
    assert back.returncode == 0 and back.stdout == b"back\n" and b"created sandbox" in back.stderr, back.stderr


def test_a_project_the_engine_cannot_see_is_refused_in_one_line(repo, tmp_path, monkeypatch):
    (repo / "only-here.txt").write_text("x\n")
    hidden = Service(tmp_path, hide=repo)
    try:
        monkeypatch.setenv("CONTAINER_HOST", hidden.url)
        proc = ab("ab-up", cwd=repo)
        err = proc.stderr.decode()
        assert proc.returncode == 125 and err.count("\n") == 1, err
        assert f"the project {repo} is not visible to the podman engine at {hidden.url}" in err
        assert "same path" in err
        assert podman("ps", "-a", "--filter", f"label=io.agentsh.project={repo}", "--format", "{{.Names}}").stdout \
            == ""
    finally:
        hidden.stop()


# -- over SSH: the Linux server reached with ssh:// (what `podman system connection add` records) -------------

SSH_SECRET = "ssh-secret-5e0b7d"
SSH_FILE_SECRET = "ssh-file-secret-c41a96"


@pytest.fixture
def ssh_daemon(tmp_path, monkeypatch):
    """A private sshd letting root in with a key of the test's own; the client's HOME holds its known_hosts."""
    reason = sshd.problem()
    if reason:
        if os.environ.get("AGENTSH_REQUIRE_ENGINE") == "1" and os.geteuid() == 0:
            pytest.fail(f"the SSH remote-engine tests need a private sshd: {reason}")  # test-setup installs it
        pytest.skip(reason)
    daemon = sshd.Sshd(tmp_path / "ssh").start()
    monkeypatch.setenv("HOME", str(daemon.home))  # ~/.ssh/known_hosts: the host key is checked, nothing else read
    yield daemon
    daemon.stop()


def through_ssh(how, daemon, service, tmp_path, monkeypatch):
    """Point agentsh's Podman at `service` through `daemon`: by CONTAINER_HOST, or by a named connection."""
    url = daemon.url(service.socket)
    monkeypatch.delenv("CONTAINER_HOST", raising=False)
    if how == "url":
        monkeypatch.setenv("CONTAINER_SSHKEY", str(daemon.key))
        monkeypatch.setenv("CONTAINER_HOST", url)
        return url
    # A connection as `podman system connection add` writes it, in a containers.conf of the test's own
    # (Podman 4.3's `add` drops the socket path of an ssh URL, and makes the first connection the default)
    conf = tmp_path / "containers.conf"
    base = os.environ.get("CONTAINERS_CONF")
    if base:
        shutil.copyfile(base, conf)
    with open(conf, "a") as f:
        f.write(f'\n[engine.service_destinations.abtest]\nuri = "{url}"\nidentity = "{daemon.key}"\n')
    monkeypatch.setenv("CONTAINERS_CONF", str(conf))
    if how == "default":  # `podman system connection default abtest` and `remote = true`: no variable at all
        text = conf.read_text()
        keys = 'remote = true\nactive_service = "abtest"\n'
        conf.write_text(text.replace("[engine]\n", "[engine]\n" + keys, 1) if "[engine]\n" in text
                        else f"[engine]\n{keys}{text}")
        monkeypatch.delenv("CONTAINER_CONNECTION", raising=False)
    else:
        monkeypatch.setenv("CONTAINER_CONNECTION", "abtest")
    return "connection abtest"


def ssh_logins(daemon):
    return (daemon.dir / "sshd.log").read_text(errors="replace").count("Accepted publickey for root")


@pytest.mark.parametrize("how", ["url", "connection", "default"])
def test_up_exec_and_down_work_over_ssh(repo, ssh_daemon, tmp_path, monkeypatch, how):
    srv = Service(tmp_path)
    try:
        through_ssh(how, ssh_daemon, srv, tmp_path, monkeypatch)
        up = ab("ab-up", "--json", cwd=repo)
        assert up.returncode == 0 and up.stderr == b"", up.stderr  # (no ssh warnings on the user's terminal)
        name = json.loads(up.stdout)["name"]
        assert ssh_logins(ssh_daemon) > 0  # it went through the daemon
        info = json.loads(podman("container", "inspect", name).stdout)[0]
        assert info["State"]["Running"]
        assert any(m["Source"] == str(repo) and m["Destination"] == str(repo) for m in info["Mounts"])
        (repo / "sub").mkdir()
        proc = ab("ab-exec", "--", "sh", "-c", "pwd; echo made > f; exit 5", cwd=repo / "sub")
        assert proc.returncode == 5 and proc.stdout == f"{repo}/sub\n".encode(), proc.stderr
        assert (repo / "sub" / "f").read_text() == "made\n"
        missing = ab("ab-exec", "--", "no-such-program", cwd=repo)
        assert missing.returncode == 127
        assert missing.stderr == b"ab-exec: no-such-program: command not found in the sandbox\n"
        logins = ssh_logins(ssh_daemon)
        down = ab("ab-down", "--rm", "--json", cwd=repo)
        assert down.returncode == 0 and json.loads(down.stdout) == [name], down.stderr
        assert ssh_logins(ssh_daemon) > logins
        assert podman("container", "exists", name, check=False).returncode == 1
    finally:
        # the home volume too, while the engine is reachable the way the test set up (the clean-up after the
        # test may still see this test's containers.conf, whose engine is then gone)
        ab("ab-down", "--rm", "--volumes", cwd=repo)
        srv.stop()


@pytest.mark.parametrize("how", ["url", "default"])
def test_a_project_the_engine_cannot_see_over_ssh_is_refused_in_one_line(repo, ssh_daemon, tmp_path, monkeypatch,
                                                                         how):
    """Also with no variable at all (containers.conf's `remote = true`): the podman command goes remote by
    itself, and agentsh must know it, or it would take the engine for this host's and mount what it cannot see."""
    (repo / "only-here.txt").write_text("x\n")
    hidden = Service(tmp_path, hide=repo)
    try:
        url = through_ssh(how, ssh_daemon, hidden, tmp_path, monkeypatch)
        proc = ab("ab-up", cwd=repo)
        err = proc.stderr.decode()
        assert proc.returncode == 125 and err.count("\n") == 1, err
        assert f"the project {repo} is not visible to the podman engine at {url}" in err
        assert podman("ps", "-a", "--filter", f"label=io.agentsh.project={repo}", "--format", "{{.Names}}").stdout \
            == ""
    finally:
        hidden.stop()


def cmdlines():
    """Every process's argv, as bytes."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    yield int(entry), f.read()
            except OSError:
                pass


def test_credentials_over_ssh_are_on_no_argv_and_not_in_inspect(repo, ssh_daemon, tmp_path, monkeypatch):
    srv = Service(tmp_path)
    try:
        through_ssh("url", ssh_daemon, srv, tmp_path, monkeypatch)
        ab("ab-creds", "set", "API_KEY", input=SSH_SECRET.encode() + b"\n", check=True)
        ab("ab-creds", "set", "TOKEN", "--file", "~/.tool/token", input=SSH_FILE_SECRET.encode(), check=True)
        ab("ab-creds", "grant", "API_KEY", str(repo), check=True)
        ab("ab-creds", "grant", "TOKEN", str(repo), check=True)
        seen = repo / "seen"
        # The command holds the exec (and the engine's ssh session) open while every argv is read.
        run = subprocess.Popen(["ab-exec", "--", "sh", "-c",
                                'printf "%s %s" "$API_KEY" "$(cat ~/.tool/token)" > seen.tmp && mv seen.tmp seen; '
                                'while [ ! -e done ]; do sleep 0.1; done'],
                               cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            for _ in range(300):
                if seen.exists() or run.poll() is not None:
                    break
                time.sleep(0.1)
            assert seen.exists(), run.communicate(timeout=30)
            assert seen.read_text() == f"{SSH_SECRET} {SSH_FILE_SECRET}"
            assert ssh_daemon.sessions()  # the engine's connection is open now
            on_argv = [pid for pid, argv in cmdlines()
                       if SSH_SECRET.encode() in argv or SSH_FILE_SECRET.encode() in argv]
            assert on_argv == []
        finally:
            (repo / "done").write_text("")
            out, err = run.communicate(timeout=60)
        assert run.returncode == 0, err
        name = ab("ab-up", cwd=repo, check=True).stdout.decode().strip()
        inspected = podman("container", "inspect", name).stdout
        assert SSH_SECRET not in inspected and SSH_FILE_SECRET not in inspected
    finally:
        srv.stop()


def test_the_private_sshd_leaves_nothing_running(tmp_path):
    reason = sshd.problem()
    if reason:
        pytest.skip(reason)
    daemon = sshd.Sshd(tmp_path / "ssh").start()
    had_privsep = not daemon.made_privsep
    probe = subprocess.run(["ssh", "-i", str(daemon.key), "-p", str(daemon.port), "-o", "BatchMode=yes",
                            "-o", f"UserKnownHostsFile={daemon.home}/.ssh/known_hosts", "-o", "StrictHostKeyChecking=yes",
                            "-N", "-f", "root@127.0.0.1"], capture_output=True, timeout=30)  # a session left open
    assert probe.returncode == 0, probe.stderr
    pid = daemon.proc.pid
    assert daemon.sessions()
    daemon.stop()
    assert daemon.proc.poll() is not None and daemon.sessions() == []
    for _ in range(50):  # the client sees its connection closed and exits
        left = [pid for pid, argv in cmdlines() if f"{tmp_path}/ssh".encode() in argv]
        if not left:
            break
        time.sleep(0.1)
    assert left == [], "a process of the daemon or its client is left"
    assert not daemon.dir.exists() and sshd.PRIVSEP.exists() == had_privsep
    assert not os.path.exists(f"/proc/{pid}")


def test_an_ordinary_user_reaches_their_rootless_podman_over_ssh(rootless_user, ssh_daemon):
    """The usual remote case: a user's own rootless Podman on a server, reached over SSH as that user."""
    import uuid

    user = rootless_user
    with open("/etc/shadow") as f:
        if any(line.startswith(f"{user.name}:!") for line in f):
            pytest.skip(f"{user.name}'s account is locked ('!' in /etc/shadow): sshd lets no key in; the suite makes "
                        "its own user unlocked")
    key = user.home / f".ab-ssh-key-{uuid.uuid4().hex[:8]}"
    shutil.copyfile(ssh_daemon.key, key)
    os.chown(key, user.uid, user.gid)
    os.chmod(key, 0o600)
    dot_ssh = user.home / ".ssh"
    made_dot_ssh = not dot_ssh.exists()
    dot_ssh.mkdir(mode=0o700, exist_ok=True)
    os.chown(dot_ssh, user.uid, user.gid)
    authorized = user.home / ssh_daemon.user_keys
    authorized.write_bytes((ssh_daemon.dir / "client_key.pub").read_bytes())
    os.chown(authorized, user.uid, user.gid)
    known = dot_ssh / "known_hosts"
    old_known = known.read_bytes() if known.exists() else None
    known.write_bytes((old_known or b"") + (ssh_daemon.home / ".ssh" / "known_hosts").read_bytes())
    os.chown(known, user.uid, user.gid)
    sock = user.runtime_dir / f"ab-ssh-{uuid.uuid4().hex[:8]}.sock"
    service = subprocess.Popen(user.argv("podman", "system", "service", "--time=0", f"unix://{sock}"),
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    repo = user.mkdir(f"work/ssh-{uuid.uuid4().hex[:8]}")
    user.run("git", "init", "-q", str(repo), check=True)
    remote = ("env", f"CONTAINER_HOST={ssh_daemon.url(sock, user=user.name)}", f"CONTAINER_SSHKEY={key}")
    try:
        for _ in range(100):
            if sock.exists():
                break
            time.sleep(0.1)
        assert sock.exists(), "the user's podman system service made no socket"
        up = user.run(*remote, "ab-up", "--json", str(repo))
        assert up.returncode == 0 and up.stderr == b"", up.stderr
        name = json.loads(up.stdout)["name"]
        assert (ssh_daemon.dir / "sshd.log").read_text(errors="replace").count(
            f"Accepted publickey for {user.name}") > 0  # it went through the daemon, as the user
        info = json.loads(user.run("podman", "container", "inspect", name, check=True).stdout)[0]
        assert info["State"]["Running"]
        proc = user.run(*remote, "sh", "-c", f'cd "{repo}" && ab-exec -- sh -c "echo made > f; cat f; exit 3"')
        assert proc.returncode == 3, proc.stderr
        assert proc.stdout == b"made\n", (proc.stdout, proc.stderr)
        made = repo / "f"
        assert made.read_text() == "made\n"
        assert (made.stat().st_uid, made.stat().st_gid) == (user.uid, user.gid)  # the user's own file on the host
        down = user.run(*remote, "ab-down", "--rm", "--json", str(repo))
        assert down.returncode == 0 and json.loads(down.stdout) == [name], down.stderr
        assert user.run("podman", "container", "exists", name).returncode == 1
    finally:
        user.run("ab-down", "--rm", "--volumes", str(repo))
        service.terminate()
        try:
            service.wait(timeout=20)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait()
        user.run("pkill", "-f", f"system service --time=0 unix://{sock}")
        user.run("rm", "-rf", str(repo))
        key.unlink(missing_ok=True)
        sock.unlink(missing_ok=True)
        authorized.unlink(missing_ok=True)
        if made_dot_ssh:
            shutil.rmtree(dot_ssh)
        elif old_known is None:
            known.unlink()
        else:
            known.write_bytes(old_known)
