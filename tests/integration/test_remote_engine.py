"""A remote engine: Podman reached through CONTAINER_HOST, a `podman system service` on a private Unix socket.

Podman-only: the service is rootful Podman's own (so its containers and
images are the ones `podman` shows, and the usual clean-up applies).
The case of a remote machine that does not share the project is made with a
service in a mount namespace of its own, where a tmpfs covers the project.
"""

import json
import subprocess
import time

import pytest

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
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
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
