"""Network policy against real sandboxes: a local HTTP server on the host stands in for the internet."""

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest

from tests.conftest import ab, git_init, inspect, own_dirs_env, podman, remove_sandboxes_under

pytestmark = pytest.mark.usefixtures("sandbox_env")


class Hello(BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"hello from the host\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    """An HTTP server on every host address (containers reach it as host.containers.internal)."""
    srv = ThreadingHTTPServer(("0.0.0.0", 0), Hello)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def configure(user_config, tiny_image, network_toml):
    user_config(f'image = "{tiny_image}"\n{network_toml}')


def sh(repo, script, *flags, env=None):
    return ab("ab-exec", *flags, "--", "sh", "-c", script, cwd=repo, env=env)


def log_entries(repo, *flags, env=None):
    return json.loads(ab("ab-log", "--json", *flags, str(repo), check=True, env=env).stdout)


def wait_for_entry(repo, predicate, tries=50, env=None):
    """Allowed connections are logged when they close: poll briefly (bounded)."""
    import time

    for _ in range(tries):
        found = [e for e in log_entries(repo, env=env) if predicate(e)]
        if found:
            return found
        time.sleep(0.1)
    return []


@pytest.fixture(scope="class")
def allowlisted(tiny_image, tmp_path_factory):
    """A sandbox allowed one host (a local server): a GET, a CONNECT and a refused GET through its proxy."""
    srv = ThreadingHTTPServer(("0.0.0.0", 0), Hello)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    port = srv.server_address[1]
    base = tmp_path_factory.mktemp("allowlist")
    env = own_dirs_env(base, tiny_image)
    with open(os.path.join(env["XDG_CONFIG_HOME"], "agentsh", "config.toml"), "a") as f:
        f.write(f'[network]\nmode = "allow"\nallow = ["host.containers.internal:{port}"]\n')
    repo = git_init(base / "repo")
    tunnel = (f"printf 'CONNECT host.containers.internal:{port} HTTP/1.1\\r\\n\\r\\nGET / HTTP/1.0\\r\\n\\r\\n'"
              " | nc 127.0.0.1 3128")
    try:
        yield SimpleNamespace(
            repo=repo, env=env, port=port,
            get=sh(repo, f"echo $http_proxy; wget -q -O- http://host.containers.internal:{port}/", env=env),
            connect=sh(repo, tunnel, env=env),
            refused=sh(repo, "wget -q -O- http://not-listed.example/ 2>&1; echo status=$?", env=env))
    finally:
        srv.shutdown()
        srv.server_close()
        remove_sandboxes_under(str(base))


class TestAnAllowlist:
    def test_an_allowed_host_answers_through_the_proxy(self, allowlisted):
        assert allowlisted.get.returncode == 0, allowlisted.get.stderr
        assert allowlisted.get.stdout.decode().splitlines() == ["http://127.0.0.1:3128", "hello from the host"]

    def test_connect_to_an_allowed_host_tunnels(self, allowlisted):
        out = allowlisted.connect.stdout.decode()
        assert out.startswith("HTTP/1.1 200 Connection established") and "hello from the host" in out

    def test_a_host_not_on_the_list_is_refused(self, allowlisted):
        out = allowlisted.refused.stdout.decode()
        assert "status=0" not in out and "403" in out

    def test_the_refusal_is_logged_as_denied(self, allowlisted):
        denied = log_entries(allowlisted.repo, "--denied", env=allowlisted.env)
        assert [(e["host"], e["port"], e["allowed"]) for e in denied] == [("not-listed.example", 80, False)]

    def test_the_allowed_request_is_logged_with_its_bytes(self, allowlisted):
        allowed = wait_for_entry(allowlisted.repo, lambda e: e["allowed"] and e["method"] == "GET",
                                 env=allowlisted.env)
        assert allowed, "no allowed GET in the log"
        assert allowed[0]["host"] == "host.containers.internal" and allowed[0]["port"] == allowlisted.port
        assert allowed[0]["bytes_received"] > len("hello from the host")
        assert set(allowed[0]) >= {"time", "sandbox", "host", "port", "allowed", "bytes_sent", "bytes_received"}

    def test_ab_log_denied_shows_only_the_refusal(self, allowlisted):
        text = ab("ab-log", "--denied", str(allowlisted.repo), check=True, env=allowlisted.env).stdout.decode()
        assert "DENY" in text and "not-listed.example:80" in text and "ALLOW" not in text


def test_raw_connections_outside_the_proxy_fail(repo, server, user_config, tiny_image):
    configure(user_config, tiny_image, '[network]\nmode = "allow"\nallow = ["@github"]\n')
    # Where the server is, as a normally networked container sees it: the control.
    control = podman("run", "--rm", tiny_image, "sh", "-c",
                     "awk '/host.containers.internal/ {print $1; exit}' /etc/hosts; "
                     f"echo | nc -w 3 host.containers.internal {server} >/dev/null && echo reached")
    host_ip, reached = control.stdout.split()[:2]
    assert reached == "reached"
    for ip in {host_ip, "10.88.0.1", "1.1.1.1"}:
        proc = sh(repo, f"echo | nc -w 3 {ip} {server}; echo status=$?")
        assert "status=0" not in proc.stdout.decode(), ip
    interfaces = sh(repo, "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '").stdout.decode().split()
    assert interfaces == ["lo"]
    assert sh(repo, "cat /proc/net/route | tail -n +2").stdout.strip() == b""


def test_net_allow_takes_effect_on_the_next_request(repo, server, user_config, tiny_image):
    configure(user_config, tiny_image, f'[network]\nmode = "allow"\nallow = ["host.containers.internal:{server}"]\n')
    other = f"http://host.docker.internal:{server}/"  # the host too, under a name not on the list
    assert sh(repo, f"wget -q -O- {other}").returncode != 0
    name = ab("ab-up", str(repo), check=True).stdout.decode().strip()
    container, proxy = inspect(name)["Id"], json.loads(ab("ab-net", "show", "--json", str(repo), check=True).stdout)
    assert proxy["proxy"]["running"] and proxy["mode"] == "allow"
    out = json.loads(ab("ab-net", "allow", f"host.docker.internal:{server}", str(repo), "--json", check=True).stdout)
    assert out == {"project": str(repo), "allowed": f"host.docker.internal:{server}", "added": True}
    proc = sh(repo, f"wget -q -O- {other}")
    assert proc.returncode == 0 and proc.stdout == b"hello from the host\n"
    after = json.loads(ab("ab-net", "show", "--json", str(repo), check=True).stdout)
    assert inspect(name)["Id"] == container and after["proxy"]["pid"] == proxy["proxy"]["pid"]  # no restart
    assert after["added"] == [f"host.docker.internal:{server}"]


def test_learn_mode_logs_everything_and_propose_makes_an_allowlist(repo, server, user_config, tiny_image):
    configure(user_config, tiny_image, '[network]\nmode = "learn"\n')
    proc = sh(repo, f"wget -q -O- http://host.containers.internal:{server}/")
    # Learn mode lets through what it is asked, except the host's loopback, which needs a listed rule.
    assert proc.returncode != 0
    sh(repo, "wget -q -O- http://github.com/ >/dev/null 2>&1; true")
    proposal = json.loads(ab("ab-net", "propose", "--json", str(repo), check=True).stdout)
    assert f"host.containers.internal:{server}" in proposal["allow"] and "@github" in proposal["allow"]
    text = ab("ab-net", "propose", str(repo), check=True).stdout.decode()
    assert 'mode = "allow"' in text and f'"host.containers.internal:{server}",' in text


def test_network_none_leaves_only_loopback(repo):
    proc = ab("ab-exec", "--network", "none", "--", "sh", "-c", "tail -n +3 /proc/net/dev | cut -d: -f1", cwd=repo)
    assert proc.returncode == 0 and proc.stdout.decode().split() == ["lo"]
    name = ab("ab-up", "--network", "none", str(repo), check=True).stdout.decode().strip()
    assert inspect(name)["HostConfig"]["NetworkMode"] == "none"


def test_lockdown_no_credentials_no_host_writes(repo, server, user_config, tiny_image, monkeypatch):
    configure(user_config, tiny_image, 'env = ["HOST_SECRET"]\ncredentials = ["LOCK_TOKEN"]\n')
    monkeypatch.setenv("HOST_SECRET", "env-secret-lockdown")
    ab("ab-creds", "set", "LOCK_TOKEN", input=b"cred-secret-lockdown\n", check=True)
    ab("ab-creds", "grant", "LOCK_TOKEN", str(repo), check=True)
    (repo / "kept.txt").write_text("original\n")
    # Unlocked, both reach the sandbox (the control).
    env = sh(repo, "env").stdout.decode()
    assert "env-secret-lockdown" in env and "cred-secret-lockdown" in env
    script = ("env; ls -A /run/agentsh/secrets; echo changed > kept.txt; echo new > made.txt; cat kept.txt; "
              "echo home > ~/h; grep ' /home/agent ' /proc/mounts")
    proc = sh(repo, script, "--lockdown", "-e", "NAMED=on-the-command-line")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.decode()
    assert "env-secret-lockdown" not in out and "cred-secret-lockdown" not in out and "SSH_AUTH_SOCK" not in out
    assert "NAMED=on-the-command-line" in out and "HTTPS_PROXY=http://127.0.0.1:3128" in out
    assert "changed" in out and " tmpfs " in out  # writes land in the copy-on-write layer; home is ephemeral
    assert (repo / "kept.txt").read_text() == "original\n" and not (repo / "made.txt").exists()
    from agentsh.base import paths

    upper = os.path.join(paths.data_dir(), "lockdown", inspect_name(repo), "upper")
    assert open(os.path.join(upper, "made.txt")).read() == "new\n"  # where the user takes changes from
    show = json.loads(ab("ab-net", "show", "--json", str(repo), check=True).stdout)
    assert show["lockdown"] and show["mode"] == "allow" and "api.anthropic.com" in show["allow"]
    assert sh(repo, f"wget -q -O- http://host.containers.internal:{server}/", "--lockdown").returncode != 0


def inspect_name(repo):
    from agentsh.host import project

    return project.find(str(repo)).sandbox


def test_rootless_sandbox_reaches_only_allowed_hosts(rootless_user, server):
    user = rootless_user
    project_dir = user.mkdir("work/netproj")
    config = user.home / "xdg/config/agentsh/config.toml"
    text = (f'image = "localhost/agentsh-test-tiny:latest"\n[network]\nmode = "allow"\n'
            f'allow = ["host.containers.internal:{server}"]\n')
    user.run("sh", "-c", f"cat > {config}", input=text.encode(), check=True)
    user.run("rm", "-rf", str(user.home / "xdg/state/agentsh/net"), check=True)  # the user outlives runs
    try:
        proc = user.run("ab-exec", "--dir", str(project_dir), "--", "sh", "-c",
                        f"wget -q -O- http://host.containers.internal:{server}/; "
                        f"wget -q -O- http://other.example/ 2>&1; echo | nc -w 3 10.88.0.1 {server}; echo raw=$?")
        out = proc.stdout.decode()
        assert proc.returncode == 0, proc.stderr
        assert out.startswith("hello from the host\n") and "403" in out and "raw=0" not in out
        denied = json.loads(user.run("ab-log", "--denied", "--json", str(project_dir), check=True).stdout)
        assert [e["host"] for e in denied] == ["other.example"]
    finally:
        user.run("ab-down", "--rm", "--volumes", str(project_dir))
        user.run("sh", "-c", f"printf 'image = \"localhost/agentsh-test-tiny:latest\"\\n' > {config}")
