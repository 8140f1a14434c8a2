"""isolation = "gvisor": the same sandbox on gVisor's kernel (runsc), rootful and rootless, every network mode.

The git protections run under gVisor too: tests/security/conftest.py's `side` has gvisor sides.
"""

import json
import os

import pytest

from agentsh.sandbox.isolation import runsc
from tests.conftest import ab, inspect, podman
from tests.integration import test_network as net

pytestmark = [pytest.mark.usefixtures("sandbox_env"),
              pytest.mark.skipif(runsc() is None, reason="gVisor's runsc is not installed (scripts/test-setup "
                                                         "installs it)")]

SERVED = "p=$(cut -d' ' -f4 /proc/$PPID/stat); cat /proc/$p/comm"  # the run script's parent: execd when served


def _gvisor(user_config, tiny_image, more=""):
    user_config(f'image = "{tiny_image}"\nisolation = "gvisor"\n{more}')


def _up(repo, *flags, env=None):
    return json.loads(ab("ab-up", "--json", *flags, str(repo), check=True, env=env).stdout)["name"]


def _sh(repo, script, env=None):
    proc = ab("ab-exec", "--", "sh", "-c", script, cwd=repo, env=env)
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


def test_the_sandbox_runs_on_gvisors_kernel_through_its_exec_server(repo, user_config, tiny_image):
    _gvisor(user_config, tiny_image)
    name = _up(repo)
    info = inspect(name)
    runtime = info["OCIRuntime"]
    assert runtime.endswith("/runsc") and runtime.startswith(os.environ["XDG_DATA_HOME"])  # the wrapper
    with open(runtime) as f:
        assert "--host-uds=create" in f.read()
    status, out, err = _sh(repo, f"uname -r; {SERVED}")
    release, parent = out.split()
    assert (status, parent) == (0, "execd") and release != os.uname().release
    # exit statuses and bytes as under runc
    assert _sh(repo, "exit 7")[0] == 7 and _sh(repo, "kill -TERM $$")[0] == 143
    assert ab("ab-exec", "--", "no-such-command", cwd=repo).returncode == 127
    data = bytes(range(256)) * 4096
    assert ab("ab-exec", "--", "cat", cwd=repo, input=data, check=True).stdout == data


def test_files_the_sandbox_writes_are_the_users_with_the_usual_mode(repo, user_config, tiny_image):
    _gvisor(user_config, tiny_image)
    _sh(repo, "mkdir made-dir && echo hi > made-dir/file")
    st = (repo / "made-dir" / "file").stat()
    assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid()) and st.st_mode & 0o777 == 0o644
    assert (repo / "made-dir").stat().st_mode & 0o777 == 0o755


def test_a_switch_recreates_the_sandbox_and_keeps_its_home(repo, user_config, tiny_image):
    user_config(f'image = "{tiny_image}"\n')
    name = _up(repo)
    first = inspect(name)["Id"]
    assert _sh(repo, "echo kept > ~/note; uname -r")[1].strip() == os.uname().release
    _gvisor(user_config, tiny_image)
    _up(repo)
    assert inspect(name)["Id"] != first
    status, out, _ = _sh(repo, "cat ~/note; uname -r")
    assert status == 0 and out.splitlines()[0] == "kept" and out.splitlines()[1] != os.uname().release
    _up(repo, "--isolation", "container")  # the flag beats the config
    assert ab("ab-exec", "--isolation", "container", "--", "uname", "-r", cwd=repo,
              check=True).stdout.decode().strip() == os.uname().release


def test_a_restart_by_the_engine_keeps_the_runtime_flags(repo, user_config, tiny_image):
    """Podman keeps a container's runtime, not --runtime-flag: the wrapper carries them across a restart."""
    _gvisor(user_config, tiny_image)
    name = _up(repo)
    podman("restart", "-t", "0", name)
    status, out, _ = _sh(repo, SERVED)
    assert (status, out.strip()) == (0, "execd")


def test_network_none_is_gvisors_loopback_only(repo, user_config, tiny_image):
    _gvisor(user_config, tiny_image, '[network]\nmode = "none"\n')
    name = _up(repo)
    with open(inspect(name)["OCIRuntime"]) as f:
        assert "--network=none" in f.read()
    status, out, _ = _sh(repo, "ls /sys/class/net 2>/dev/null || cat /proc/net/dev; "
                               "wget -q -T 3 -O- http://host.containers.internal:9/ 2>&1; echo status=$?")
    assert "eth0" not in out and "status=0" not in out


def _get(host, port, via=None):
    """sh: an HTTP/1.0 GET with busybox nc (busybox's wget fails under runsc's network=host, docs/security.md)."""
    target, line = (via, f"http://{host}:{port}/") if via else (f"{host} {port}", "/")
    return f"printf 'GET {line} HTTP/1.0\\r\\nHost: {host}\\r\\n\\r\\n' | nc -w 10 {target}"


def test_network_full_reaches_the_host(repo, user_config, tiny_image, server):
    _gvisor(user_config, tiny_image)
    status, out, _ = _sh(repo, _get("host.containers.internal", server))
    assert status == 0 and out.endswith("\r\n\r\nhello from the host\n")


def test_an_allowlist_through_the_proxy_and_its_log(repo, user_config, tiny_image, server):
    _gvisor(user_config, tiny_image, f'[network]\nmode = "allow"\nallow = ["host.containers.internal:{server}"]\n')
    status, out, _ = _sh(repo, f"{_get('host.containers.internal', server, via='127.0.0.1 3128')}; "
                               f"{_get('other.example', 80, via='127.0.0.1 3128')}")
    assert status == 0 and "hello from the host\n" in out and " 403 " in out
    denied = json.loads(ab("ab-log", "--denied", "--json", str(repo), check=True).stdout)
    assert [e["host"] for e in denied] == ["other.example"]
    assert _sh(repo, "uname -r")[1].strip() != os.uname().release


def test_learn_mode_logs_and_proposes(repo, user_config, tiny_image, server):
    _gvisor(user_config, tiny_image, f'[network]\nmode = "learn"\nallow = ["host.containers.internal:{server}"]\n')
    status, out, _ = _sh(repo, f"{_get('host.containers.internal', server, via='127.0.0.1 3128')}; "
                               f"{_get('learned.example', 80, via='127.0.0.1 3128')}")
    assert status == 0 and "hello from the host\n" in out
    proposal = json.loads(ab("ab-net", "propose", "--json", str(repo), check=True).stdout)
    assert "learned.example" in " ".join(proposal["allow"])


def test_ab_doctor_starts_a_container_on_gvisor(user_config, tiny_image):
    _gvisor(user_config, tiny_image)
    checks = {c["name"]: c for c in json.loads(ab("ab-doctor", "--json", timeout=300).stdout)}
    assert checks["gvisor"]["status"] == "ok" and "started on gVisor's kernel" in checks["gvisor"]["detail"]


class TestProgramsThatIgnoreProxyVariablesOnGvisor(net.TestProgramsThatIgnoreProxyVariables):
    """The transparent-egress class again, its sandbox on gVisor: DNS answerer, steering, JVM, git, restarts."""

    @pytest.fixture(scope="class")
    @classmethod
    def steered(cls, internet, tmp_path_factory):
        yield from net.steered_sandbox(internet, tmp_path_factory, 'isolation = "gvisor"\n')

    def test_the_sandbox_cannot_change_the_steering(self, steered):
        """No capability and no port 53, as under runc. gVisor accepts SO_MARK (where runc refuses it without
        CAP_NET_ADMIN) and drops it: the host's socket carries no mark."""
        import subprocess
        import time

        script = """
import socket, time
eff = int(open("/proc/self/status").read().split("CapEff:")[1].split()[0], 16)
print("NET_BIND_SERVICE", bool(eff & 1 << 10), "NET_ADMIN", bool(eff & 1 << 12), flush=True)
try:
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).bind(("127.0.0.2", 53))
    print("bound 53", flush=True)
except PermissionError:
    print("no port 53", flush=True)
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, 36, 0x77)
s.connect(("127.0.0.1", 3128))
time.sleep(4)
"""
        proc = subprocess.Popen(["ab-exec", "--", "python3", "-c", script], cwd=steered.repo, env=steered.env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        try:
            time.sleep(2.5)
            name = json.loads(ab("ab-net", "show", "--json", str(steered.repo), check=True,
                                 env=steered.env).stdout)["sandbox"]
            pid = str(inspect(name)["State"]["Pid"])
            sockets = subprocess.run(["nsenter", "-t", pid, "-n", "ss", "-tie", "dst", "127.0.0.1:3128"],
                                     capture_output=True, text=True, check=True).stdout
        finally:
            out = proc.communicate(timeout=30)[0].decode()
        assert out.splitlines() == ["NET_BIND_SERVICE False NET_ADMIN False", "no port 53"]
        assert "ESTAB" in sockets and "fwmark" not in sockets

    def test_the_sandbox_is_on_gvisor(self, steered):
        rc, out = net.outcome(steered.run("uname -r"))
        assert rc == 0 and out.strip() != os.uname().release


internet, server = net.internet, net.server  # the fixtures of test_network


@pytest.mark.rootless
def test_rootless_gvisor_sandbox(rootless_user, server):
    """Rootless: runsc cannot start in keep-id's user namespace, so the sandbox is that of Podman's root,
    which is the user on the host; files, exec server and the proxy work as rootful."""
    user = rootless_user
    project_dir = user.mkdir(f"work/gvisor-{os.urandom(4).hex()}")
    user.run("git", "init", "-q", str(project_dir), check=True)
    config = user.home / "xdg/config/agentsh/config.toml"
    user.run("sh", "-c", f"cat > {config}", check=True, input=(
        f'image = "localhost/agentsh-test-tiny:latest"\nisolation = "gvisor"\n[network]\nmode = "allow"\n'
        f'allow = ["host.containers.internal:{server}"]\n').encode())
    user.run("rm", "-rf", str(user.home / "xdg/state/agentsh/net"), check=True)
    try:
        proc = user.run("ab-exec", "--dir", str(project_dir), "--", "sh", "-c",
                        f"uname -r; {SERVED}; touch made; "
                        f"{_get('host.containers.internal', server, via='127.0.0.1 3128')}")
        assert proc.returncode == 0, proc.stderr
        release, parent, *rest = proc.stdout.decode().splitlines()
        assert release != os.uname().release and parent == "execd" and rest[-1] == "hello from the host"
        st = (project_dir / "made").stat()
        assert (st.st_uid, st.st_gid) == (user.uid, user.gid)
    finally:
        user.run("ab-down", "--rm", "--volumes", str(project_dir))
        user.run("sh", "-c", f"printf 'image = \"localhost/agentsh-test-tiny:latest\"\\n' > {config}")
        user.run("rm", "-rf", str(project_dir))


def test_docker_is_refused_in_one_line(repo, user_config, tiny_image):
    _gvisor(user_config, tiny_image)
    proc = ab("ab-up", str(repo), env={**os.environ, "AGENTSH_ENGINE": "docker"})
    assert proc.returncode != 0 and b"not available with docker" in proc.stderr
    assert len(proc.stderr.decode().strip().splitlines()) == 1
