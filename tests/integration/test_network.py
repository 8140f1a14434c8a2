"""Network policy against real sandboxes: a local HTTP server on the host stands in for the internet."""

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest

from tests.conftest import TINY_IMAGE, ab, git_init, inspect, own_dirs_env, podman, remove_sandboxes_under

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


@pytest.fixture(scope="class", params=["podman", "docker"])
def allowlisted(request, tmp_path_factory):
    """A sandbox allowed one host (a local server): a GET, a CONNECT and a refused GET through its proxy; on
    Podman and on Docker (the private dockerd)."""
    if request.param == "docker":
        docker_host = request.getfixturevalue("docker_daemon").host
    else:
        request.getfixturevalue("tiny_image")
    srv = ThreadingHTTPServer(("0.0.0.0", 0), Hello)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    port = srv.server_address[1]
    base = tmp_path_factory.mktemp("allowlist")
    env = own_dirs_env(base, TINY_IMAGE)
    if request.param == "docker":
        env.update(DOCKER_HOST=docker_host, AGENTSH_ENGINE="docker")
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
        if request.param == "podman":  # (the private dockerd goes whole at the end of the run)
            remove_sandboxes_under(str(base))
        else:  # its proxy ends with its sandbox
            ab("ab-down", "--rm", "--volumes", str(repo), env=env)


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


def proxy_alive(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"agentsh.egress.proxy" in f.read()
    except OSError:
        return False


def test_down_rm_removes_every_file_the_proxy_and_its_answerer_kept(repo, server, user_config, tiny_image,
                                                                     isolated_dirs):
    """The name map, the record, the proxy's stderr, the CA: gone with the sandbox; the audit log until --volumes."""
    from agentsh.base import layout

    configure(user_config, tiny_image, f'[network]\nmode = "allow"\nallow = ["host.containers.internal:{server}"]\n')
    name = ab("ab-up", str(repo), check=True).stdout.decode().strip()
    proc = sh(repo, "nslookup host.containers.internal 2>/dev/null | awk '/^Address/ {a=$NF} END {print a}'; "
                    f"wget -q -O- http://host.containers.internal:{server}/")
    ip, hello = proc.stdout.decode().splitlines()
    assert ip.startswith("198.18.") and hello == "hello from the host", proc.stdout
    state = isolated_dirs["XDG_STATE_HOME"] / "agentsh"
    names = state / layout.dns_names_file(name)
    assert [json.loads(line) for line in names.read_text().splitlines()] == [
        {"name": "host.containers.internal", "addr": ip}]
    assert (state / layout.proxy_record(name)).is_file() and (state / layout.proxy_err_file(name)).exists()
    assert wait_for_entry(repo, lambda e: e["allowed"])
    made = [rel for rel in (layout.proxy_record(name), layout.proxy_err_file(name), layout.dns_names_file(name),
                            layout.sandbox_ca(name), layout.audit_log(name)) if (state / rel).exists()]
    pid = json.loads(ab("ab-net", "show", "--json", str(repo), check=True).stdout)["proxy"]["pid"]
    assert proxy_alive(pid)

    ab("ab-down", "--rm", str(repo), check=True)
    left = sorted(str(p.relative_to(state)) for p in (state / "net").rglob("*") if name in p.name)
    assert left == [layout.audit_log(name)], (made, left)  # the log stays: ab-log and ab-net propose read it
    assert not proxy_alive(pid)
    assert not [p for p in (state / layout.CA_COPIES).glob(f"*-{name}.pem")]  # bundles holding its CA
    assert podman("container", "exists", name, check=False).returncode == 1

    ab("ab-up", str(repo), check=True)  # a fresh sandbox starts a fresh map, then --volumes removes the log too
    assert not names.exists() or "host.containers.internal" not in names.read_text()
    ab("ab-down", "--rm", "--volumes", str(repo), check=True)
    assert sorted(str(p.relative_to(state)) for p in (state / "net").rglob("*") if name in p.name) == []


def test_net_show_reports_the_steering(repo, server, user_config, tiny_image):
    configure(user_config, tiny_image, f'[network]\nmode = "allow"\nallow = ["host.containers.internal:{server}"]\n')
    before = json.loads(ab("ab-net", "show", "--json", str(repo), check=True).stdout)
    assert before["steering"] == {"active": False, "dns": "127.0.0.1:53", "synthetic": "198.18.0.0/15",
                                  "listener": "127.0.0.1:3129", "problem": None}
    ab("ab-up", str(repo), check=True)
    show = json.loads(ab("ab-net", "show", "--json", str(repo), check=True).stdout)
    assert show["steering"] == {**before["steering"], "active": True}
    # What it claims is so: the answerer gives a synthetic address, and TCP to it reaches the server by name.
    script = ("ip=$(nslookup host.containers.internal 2>/dev/null | awk '/^Address/ {a=$NF} END {print a}'); "
              f"printf 'GET / HTTP/1.0\\r\\nHost: host.containers.internal\\r\\n\\r\\n' | nc $ip {server} | tail -n 1")
    assert sh(repo, f"unset http_proxy HTTP_PROXY; {script}").stdout == b"hello from the host\n"
    text = ab("ab-net", "show", str(repo), check=True).stdout.decode()
    assert "steering  active: DNS 127.0.0.1:53 answers from 198.18.0.0/15" in text
    ab("ab-down", str(repo), check=True)  # stopped: the proxy is gone, so nothing is steered
    assert json.loads(ab("ab-net", "show", "--json", str(repo), check=True).stdout)["steering"]["active"] is False


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


# -- programs that ignore proxy variables: the DNS answerer and transparent steering ------------------

DEFAULT_IMAGE = "localhost/agentsh:latest"
JDK = "/usr/lib/jvm/java-17-openjdk-amd64"  # Debian's openjdk-17-jdk-headless
FETCH_JAVA = """
public class Fetch {
    public static void main(String[] args) throws Exception {
        var client = java.net.http.HttpClient.newHttpClient();  // ignores proxy variables and properties unless told
        for (String url : args) {
            try {
                var r = client.send(java.net.http.HttpRequest.newBuilder(java.net.URI.create(url)).build(),
                                    java.net.http.HttpResponse.BodyHandlers.ofString());
                System.out.print(r.body());
            } catch (java.io.IOException e) {
                System.out.println("refused " + e.getClass().getSimpleName());
            }
        }
    }
}
"""
NO_PROXY_VARS = "env " + " ".join(f"-u {v}" for v in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy",
                                                       "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"))


class HostsEntry:
    """Names for this machine's loopback in the host's /etc/hosts, so the proxy's resolver finds them.

    The line carries a marker of its own and is removed (the file rewritten
    in place, never replaced) when the test ends.
    """

    def __init__(self, *names):
        import uuid

        self.marker = f"agentsh-test-{uuid.uuid4().hex[:8]}"
        self.names = names
        with open("/etc/hosts", "a") as f:
            f.write(f"127.0.0.1 {' '.join(names)} # {self.marker}\n")

    def remove(self):
        with open("/etc/hosts", "r+") as f:
            kept = [line for line in f.read().splitlines(keepends=True) if self.marker not in line]
            f.seek(0)
            f.write("".join(kept))
            f.truncate()


def self_signed(name, directory):
    """A key and a self-signed certificate for `name` (the CA the sandbox's programs are told to trust)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return cert_path, key_path


def web_servers(root, cert, key):
    """An HTTPS and an HTTP server on 0.0.0.0 serving `root` (a page and a git repository); (servers, ports)."""
    import functools
    import ssl
    from http.server import SimpleHTTPRequestHandler

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=root)
    servers = [ThreadingHTTPServer(("0.0.0.0", 0), handler) for _ in range(2)]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    servers[0].socket = context.wrap_socket(servers[0].socket, server_side=True)
    for srv in servers:
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    return servers, [srv.server_address[1] for srv in servers]


@pytest.fixture(scope="class")
def internet(tmp_path_factory):
    """'The internet' for programs that resolve names themselves: names in the host's resolver, real servers.

    NAME and DENIED are fresh names; only NAME is in /etc/hosts (for
    127.0.0.1), serving a page and a git repository over HTTPS and HTTP.
    """
    import subprocess
    import uuid

    tag = uuid.uuid4().hex[:8]
    name, denied = f"origin-{tag}.agentsh.test", f"denied-{tag}.agentsh.test"
    base = tmp_path_factory.mktemp("internet")
    root = base / "www"
    root.mkdir()
    (root / "index.html").write_text(f"hello from {name}\n")
    work = base / "work"
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@e", "-c", "init.defaultBranch=main"]
    subprocess.run([*git, "init", "-q", str(work)], check=True)
    (work / "file").write_text("cloned through the proxy\n")
    subprocess.run([*git, "-C", str(work), "add", "file"], check=True)
    subprocess.run([*git, "-C", str(work), "commit", "-qm", "one"], check=True)
    subprocess.run([*git, "clone", "-q", "--bare", str(work), str(root / "repo.git")], check=True)
    subprocess.run(["git", "-C", str(root / "repo.git"), "update-server-info"], check=True)
    cert, key = self_signed(name, str(base))
    hosts = HostsEntry(name)
    servers, (https_port, http_port) = web_servers(str(root), cert, key)
    try:
        yield SimpleNamespace(name=name, denied=denied, https=https_port, http=http_port, cert=cert)
    finally:
        hosts.remove()
        for srv in servers:
            srv.shutdown()
            srv.server_close()


@pytest.fixture(scope="class")
def steered(internet, tmp_path_factory):
    """A sandbox of the default image allowed NAME on the two ports; every program run with no proxy variables."""
    yield from steered_sandbox(internet, tmp_path_factory)


def steered_sandbox(internet, tmp_path_factory, config=""):
    """The `steered` fixture's body; `config`: more of the user config (test_gvisor runs the class again)."""
    if podman("image", "exists", DEFAULT_IMAGE, check=False).returncode != 0:
        pytest.fail(f"{DEFAULT_IMAGE} is missing: build it with 'ab-image build'")
    base = tmp_path_factory.mktemp("steered")
    env = own_dirs_env(base, DEFAULT_IMAGE)
    jvm = [d for d in (JDK, "/etc/java-17-openjdk") if os.path.isdir(d)]
    with open(os.path.join(env["XDG_CONFIG_HOME"], "agentsh", "config.toml"), "a") as f:
        # The host's JDK, read-only, for a JVM test (the default image has none; no registry is reachable to add one).
        f.write(f"mounts = {json.dumps([f'{d}:{d}:ro' for d in jvm])}\n{config}")
        f.write(f'[network]\nmode = "allow"\nallow = ["{internet.name}:{internet.https}", '
                f'"{internet.name}:{internet.http}"]\n')
    repo = git_init(base / "repo")
    import shutil
    import subprocess

    shutil.copy(internet.cert, repo / "ca.pem")  # the sandbox sees the project at the same path
    if len(jvm) == 2:
        subprocess.run([f"{JDK}/bin/keytool", "-importcert", "-noprompt", "-alias", "origin", "-file", internet.cert,
                        "-keystore", str(repo / "trust.p12"), "-storetype", "PKCS12", "-storepass", "changeit"],
                       check=True, capture_output=True)
    try:
        ab("ab-up", str(repo), check=True, env=env)
        yield SimpleNamespace(repo=repo, env=env, ca=str(repo / "ca.pem"),
                              run=lambda script: sh(repo, f"{NO_PROXY_VARS} sh -c {shlex_quote(script)}",
                                                    env=env))
    finally:
        remove_sandboxes_under(str(base))


def shlex_quote(text):
    import shlex

    return shlex.quote(text)


def outcome(proc):
    return proc.returncode, proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")


class TestProgramsThatIgnoreProxyVariables:
    """curl --noproxy '*', Python urllib and sockets, Node's fetch and git, their proxy variables unset."""

    def entries(self, steered, host):
        return [e for e in log_entries(steered.repo, env=steered.env) if e["host"] == host]

    def test_the_environment_has_no_proxy_variables(self, steered):
        rc, out = outcome(steered.run("env | grep -i _proxy; echo done"))
        assert out.strip() == "done"

    def test_curl_reaches_an_allowed_name_over_https(self, steered, internet):
        rc, out = outcome(steered.run(f"curl --noproxy '*' -sS -m 20 --cacert {steered.ca} "
                                      f"https://{internet.name}:{internet.https}/"))
        assert (rc, out) == (0, f"hello from {internet.name}\n")
        allowed = wait_for_entry(steered.repo, lambda e: e["host"] == internet.name and e["method"] == "TLS"
                                 and e["allowed"], env=steered.env)
        assert allowed and allowed[0]["port"] == internet.https and allowed[0]["bytes_received"] > 100

    def test_curl_cannot_resolve_a_denied_name_and_the_denial_is_logged(self, steered, internet):
        rc, out = outcome(steered.run(f"curl --noproxy '*' -sS -m 20 https://{internet.denied}/"))
        assert rc == 6 and "Could not resolve host" in out
        denied = self.entries(steered, internet.denied)
        assert denied and all((e["method"], e["allowed"], e["reason"]) == ("DNS", False, "not on the allowlist")
                              for e in denied)
        text = ab("ab-log", "--denied", str(steered.repo), check=True, env=steered.env).stdout.decode()
        assert f"{internet.denied}:0" in text and "DNS" in text

    def test_python_urllib_and_sockets(self, steered, internet):
        script = f"""
import socket, urllib.request
print(urllib.request.urlopen("http://{internet.name}:{internet.http}/", timeout=20).read().decode(), end="")
with socket.create_connection(("{internet.name}", {internet.http}), timeout=20) as s:
    s.sendall(b"GET / HTTP/1.0\\r\\nHost: {internet.name}\\r\\n\\r\\n")
    print(b"".join(iter(lambda: s.recv(65536), b"")).split(b"\\r\\n\\r\\n", 1)[1].decode(), end="")
for host in ("{internet.denied}",):
    try:
        socket.create_connection((host, 80), timeout=20)
    except socket.gaierror as e:
        print("refused", host, e.errno == socket.EAI_NONAME)
"""
        rc, out = outcome(steered.run(f"python3 -c {shlex_quote(script)}"))
        assert (rc, out) == (0, f"hello from {internet.name}\n" * 2 + f"refused {internet.denied} True\n")
        gets = wait_for_entry(steered.repo, lambda e: e["host"] == internet.name and e["method"] == "GET",
                              env=steered.env)
        assert gets and all(e["allowed"] and e["port"] == internet.http for e in gets)

    def test_node_fetch(self, steered, internet):
        script = ("const [u, d] = process.argv.slice(1);"
                  "fetch(u).then(r => r.text()).then(t => process.stdout.write(t))"
                  ".then(() => fetch(d)).then(() => console.log('reached'), e => console.log('refused', e.cause.code))")
        rc, out = outcome(steered.run(f"NODE_EXTRA_CA_CERTS={steered.ca} node -e {shlex_quote(script)} "
                                      f"https://{internet.name}:{internet.https}/ https://{internet.denied}/"))
        assert (rc, out) == (0, f"hello from {internet.name}\nrefused ENOTFOUND\n")

    def test_a_jvm(self, steered, internet):
        """Java's own HttpClient (it reads no proxy variable), over https and http, and a denied name."""
        if not os.path.exists(steered.repo / "trust.p12"):
            pytest.skip(f"no JDK at {JDK} on this host (apt-get install openjdk-17-jdk-headless)")
        (steered.repo / "Fetch.java").write_text(FETCH_JAVA)
        rc, out = outcome(steered.run(
            f"{JDK}/bin/java -Djavax.net.ssl.trustStore={steered.repo}/trust.p12 "
            f"-Djavax.net.ssl.trustStorePassword=changeit {steered.repo}/Fetch.java "
            f"https://{internet.name}:{internet.https}/ http://{internet.name}:{internet.http}/ "
            f"http://{internet.denied}/"))
        assert (rc, out) == (0, f"hello from {internet.name}\n" * 2 + "refused ConnectException\n")
        assert self.entries(steered, internet.denied)[-1]["method"] == "DNS"

    def test_git_clone_over_https(self, steered, internet):
        rc, out = outcome(steered.run(
            f"GIT_SSL_CAINFO={steered.ca} git clone -q https://{internet.name}:{internet.https}/repo.git "
            f"/tmp/clone && cat /tmp/clone/file; git clone -q https://{internet.denied}/repo.git /tmp/no 2>&1"))
        assert out.startswith("cloned through the proxy\n") and "Could not resolve host" in out
        tls = wait_for_entry(steered.repo, lambda e: e["host"] == internet.name and e["method"] == "TLS"
                             and e["bytes_received"] > 300, env=steered.env)
        assert tls

    def test_a_port_no_rule_opens_is_refused_at_the_proxy(self, steered, internet):
        rc, out = outcome(steered.run(f"curl --noproxy '*' -sS -m 20 -o /dev/null -w '%{{http_code}}' "
                                      f"http://{internet.name}:{internet.http + 1}/"))
        assert (rc, out) == (0, "403")
        refused = self.entries(steered, internet.name)
        assert any(e["port"] == internet.http + 1 and not e["allowed"] and e["reason"] == "not on the allowlist"
                   for e in refused)

    def test_a_tls_server_name_other_than_the_address_was_given_for_is_refused(self, steered, internet):
        """Domain fronting the other way round: the allowed name's address, another name in the ClientHello."""
        script = f"""
import socket, ssl
ctx = ssl.create_default_context(cafile="{steered.ca}")
ctx.check_hostname = False
for sni in ("{internet.denied}", "{internet.name}"):
    raw = socket.create_connection(("{internet.name}", {internet.https}), timeout=20)
    try:
        with ctx.wrap_socket(raw, server_hostname=sni) as s:
            s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
            print(sni, "reached", b"hello" in b"".join(iter(lambda: s.recv(65536), b"")))
    except (OSError, ssl.SSLError) as e:
        print(sni, "refused")
"""
        rc, out = outcome(steered.run(f"python3 -c {shlex_quote(script)}"))
        assert out == f"{internet.denied} refused\n{internet.name} reached True\n"
        refused = self.entries(steered, internet.name)
        assert any(not e["allowed"] and e["reason"].startswith(f"TLS server name '{internet.denied}' does not match")
                   for e in refused)

    def test_an_http_host_other_than_the_address_was_given_for_is_refused(self, steered, internet):
        script = f"""
import socket
s = socket.create_connection(("{internet.name}", {internet.http}), timeout=20)
s.sendall(b"GET / HTTP/1.1\\r\\nHost: {internet.denied}\\r\\n\\r\\n")
print(s.recv(65536).split(b"\\r\\n")[0].decode())
"""
        rc, out = outcome(steered.run(f"python3 -c {shlex_quote(script)}"))
        assert out == "HTTP/1.1 403 Forbidden\n"
        assert any(not e["allowed"] and e["reason"].startswith(f"HTTP Host '{internet.denied}' does not match")
                   for e in self.entries(steered, internet.name))

    def test_no_address_but_the_synthetic_ones_and_no_udp_but_dns(self, steered, internet):
        """An unassigned synthetic address, the host's addresses and UDP anywhere but the answerer reach nothing."""
        script = """
import socket
for addr in ("198.19.255.254", "10.88.0.1", "1.1.1.1"):
    try:
        print("reached" if socket.create_connection((addr, 443), timeout=5).recv(1) else "closed", addr)
    except OSError:
        print("no", addr)
for addr in ("1.1.1.1", "10.88.0.1"):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.sendto(b"x", (addr, 53))
        print("sent", addr)
    except OSError as e:
        print("no udp", addr, e.strerror)
"""
        rc, out = outcome(steered.run(f"python3 -c {shlex_quote(script)}"))
        assert out.splitlines() == ["no 198.19.255.254", "no 10.88.0.1", "no 1.1.1.1",
                                    "no udp 1.1.1.1 Network is unreachable", "no udp 10.88.0.1 Network is unreachable"]
        assert any(e["host"] == "198.19.255.254" and "no address this sandbox's DNS answered" in e["reason"]
                   for e in log_entries(steered.repo, "--denied", env=steered.env))

    def test_programs_preferring_ipv6_get_out_over_ipv4_and_nothing_leaves_over_ipv6(self, steered, internet):
        """AAAA is answered empty, so IPv6-first programs use the steered IPv4 address; IPv6 has no route at all."""
        script = f"""
import socket, struct
name, denied, port = "{internet.name}", "{internet.denied}", {internet.http}
infos = socket.getaddrinfo(name, port, socket.AF_UNSPEC, socket.SOCK_STREAM)
print("families", sorted({{i[0].name for i in infos}}))
try:
    socket.getaddrinfo(name, port, socket.AF_INET6, socket.SOCK_STREAM)
    print("v6 address")
except socket.gaierror:
    print("no v6 address")

def query(host, qtype):
    q = struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + b"".join(
        bytes([len(p)]) + p.encode() for p in host.split(".")) + b"\\0" + struct.pack("!HH", qtype, 1)
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.settimeout(5)
    u.sendto(q, ("127.0.0.1", 53))
    r = u.recv(4096)
    return "rcode", r[3] & 15, "answers", struct.unpack("!H", r[6:8])[0]
print("AAAA", *query(name, 28))
print("AAAA denied", *query(denied, 28))
first = sorted(infos, key=lambda i: i[0] != socket.AF_INET6)[0]  # IPv6 first, as an IPv6-preferring program does
with socket.create_connection(first[4][:2], timeout=20) as s:
    s.sendall(b"GET / HTTP/1.0\\r\\nHost: " + name.encode() + b"\\r\\n\\r\\n")
    print("v6-first got", b"".join(iter(lambda: s.recv(65536), b"")).split(b"\\r\\n\\r\\n", 1)[1].decode().strip())
for addr in ("2606:4700:4700::1111", "64:ff9b::101:101", "2002:101:101::1", "fe80::1"):
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        s = socket.socket(socket.AF_INET6, kind)
        s.settimeout(5)
        try:
            s.connect((addr, 443)) if kind == socket.SOCK_STREAM else s.sendto(b"x", (addr, 53))
            print("LEAK", addr, kind)
        except OSError as e:
            pass
        finally:
            s.close()
routes = {{line.split()[-1] for line in open("/proc/net/ipv6_route")}}  # gVisor lists none, not even lo's
print("v6 routes off loopback", sorted(routes - {{"lo"}}))
"""
        rc, out = outcome(steered.run(f"python3 -c {shlex_quote(script)}"))
        assert out.splitlines() == [
            "families ['AF_INET']", "no v6 address", "AAAA rcode 0 answers 0", "AAAA denied rcode 3 answers 0",
            f"v6-first got hello from {internet.name}", "v6 routes off loopback []"], out
        # Node asked to put IPv6 first reaches the name all the same, and the denied AAAA query is logged by name.
        node = ("fetch(process.argv[1]).then(r => r.text()).then(t => process.stdout.write(t), "
                "e => console.log('refused', e.cause && e.cause.code))")
        rc, out = outcome(steered.run(f"node --dns-result-order=ipv6first -e {shlex_quote(node)} "
                                      f"http://{internet.name}:{internet.http}/"))
        assert (rc, out) == (0, f"hello from {internet.name}\n")
        assert any(e["method"] == "DNS" and not e["allowed"] for e in self.entries(steered, internet.denied))

    def test_the_sandbox_cannot_change_the_steering(self, steered):
        """No capability: no CAP_NET_ADMIN (routes, nat rules, SO_MARK), no CAP_NET_BIND_SERVICE (port 53)."""
        script = """
import socket
eff = int(open("/proc/self/status").read().split("CapEff:")[1].split()[0], 16)
print("NET_BIND_SERVICE", bool(eff & 1 << 10), "NET_ADMIN", bool(eff & 1 << 12))
try:
    socket.socket().setsockopt(socket.SOL_SOCKET, 36, 1)  # SO_MARK needs CAP_NET_ADMIN
    print("mark set")
except PermissionError:
    print("no CAP_NET_ADMIN")
try:
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).bind(("127.0.0.2", 53))
    print("bound 53")
except PermissionError:
    print("no port 53")
"""
        rc, out = outcome(steered.run(f"python3 -c {shlex_quote(script)}"))
        assert out.splitlines() == ["NET_BIND_SERVICE False NET_ADMIN False", "no CAP_NET_ADMIN", "no port 53"]

    def test_steering_survives_down_and_up(self, steered, internet):
        ab("ab-down", str(steered.repo), check=True, env=steered.env)
        ab("ab-up", str(steered.repo), check=True, env=steered.env)
        rc, out = outcome(steered.run(f"curl --noproxy '*' -sS -m 20 http://{internet.name}:{internet.http}/"))
        assert (rc, out) == (0, f"hello from {internet.name}\n")
        show = json.loads(ab("ab-net", "show", "--json", str(steered.repo), check=True, env=steered.env).stdout)
        assert show["proxy"]["running"]


    def test_a_proxy_that_dies_is_restarted_on_its_own(self, steered, internet):
        """The proxy's supervisor keeps the planted sockets and starts a new proxy: no ab-up needed."""
        import signal
        import time

        show = json.loads(ab("ab-net", "show", "--json", str(steered.repo), check=True, env=steered.env).stdout)
        supervisor = show["proxy"]["pid"]

        def worker():
            with open(f"/proc/{supervisor}/task/{supervisor}/children") as f:
                return [int(p) for p in f.read().split()]

        [first] = worker()
        os.kill(first, signal.SIGKILL)
        for _ in range(50):
            if worker() and worker() != [first]:
                break
            time.sleep(0.1)
        assert worker() and worker() != [first]
        rc, out = outcome(steered.run(f"curl --noproxy '*' -sS -m 20 http://{internet.name}:{internet.http}/"))
        assert (rc, out) == (0, f"hello from {internet.name}\n")
        after = json.loads(ab("ab-net", "show", "--json", str(steered.repo), check=True, env=steered.env).stdout)
        assert after["proxy"]["pid"] == supervisor

    def test_nothing_gets_out_while_the_proxy_is_down_and_ab_up_restarts_it(self, steered, internet):
        import signal
        import time

        show = json.loads(ab("ab-net", "show", "--json", str(steered.repo), check=True, env=steered.env).stdout)
        pid = show["proxy"]["pid"]
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            assert b"agentsh.egress.proxy" in f.read()
        os.kill(pid, signal.SIGKILL)
        for _ in range(50):
            if not os.path.exists(f"/proc/{pid}"):
                break
            time.sleep(0.1)
        url = f"http://{internet.name}:{internet.http}/"
        names = os.path.join(steered.env["XDG_STATE_HOME"], "agentsh", "net", f"{show['sandbox']}.names.jsonl")
        with open(names) as f:  # the address the answerer gave our name, which programs may have cached
            ip = next(e["addr"] for e in map(json.loads, f) if e["name"] == internet.name)
        down = steered.run(f"curl --noproxy '*' -sS -m 10 {url}; echo status=$?; "
                           f"curl --noproxy '*' -sS -m 10 -H 'Host: {internet.name}' http://{ip}:{internet.http}/; "
                           "echo status=$?")
        out = down.stdout.decode()
        assert "hello" not in out and "status=0" not in out, out
        ab("ab-up", str(steered.repo), check=True, env=steered.env)
        rc, out = outcome(steered.run(f"curl --noproxy '*' -sS -m 20 {url}"))
        assert (rc, out) == (0, f"hello from {internet.name}\n")


def test_learn_mode_records_names_and_propose_turns_them_into_rules(repo, internet, user_config):
    """Learn mode with a rule naming the host (its address is this machine's loopback, which learn alone refuses)."""
    user_config(f'image = "{DEFAULT_IMAGE}"\n[network]\nmode = "learn"\nallow = ["{internet.name}:{internet.http}"]\n')
    script = (f"curl --noproxy '*' -sS -m 20 http://{internet.name}:{internet.http}/; "
              f"curl --noproxy '*' -sS -m 20 https://{internet.denied}:8443/ >/dev/null 2>&1; echo status=$?")
    proc = sh(repo, f"{NO_PROXY_VARS} sh -c {shlex_quote(script)}")
    out = proc.stdout.decode()
    assert out.startswith(f"hello from {internet.name}\n") and "status=0" not in out
    entries = wait_for_entry(repo, lambda e: e["host"] == internet.name and e["allowed"])
    assert entries
    hosts = {e["host"] for e in log_entries(repo)}
    assert hosts == {internet.name, internet.denied}  # names, never the synthetic addresses
    proposal = json.loads(ab("ab-net", "propose", "--json", str(repo), check=True).stdout)
    assert f"{internet.name}:{internet.http}" in proposal["allow"] and f"{internet.denied}:8443" in proposal["allow"]


def test_rootless_steering_and_dns(rootless_user, internet):
    """Rootless: the helper sets the route and rule through `podman unshare`; busybox resolves and connects itself."""
    user = rootless_user
    project_dir = user.mkdir("work/steerproj")
    config = user.home / "xdg/config/agentsh/config.toml"
    user.run("sh", "-c", f"cat > {config}", check=True, input=(
        f'image = "localhost/agentsh-test-tiny:latest"\n[network]\nmode = "allow"\n'
        f'allow = ["{internet.name}:{internet.http}"]\n').encode())
    user.run("rm", "-rf", str(user.home / "xdg/state/agentsh/net"), check=True)
    script = (f"ip=$(nslookup {internet.name} 2>/dev/null | awk '/^Address/ {{a=$NF}} END {{print a}}'); "
              "echo ip=$ip; "
              f"printf 'GET / HTTP/1.0\\r\\nHost: {internet.name}\\r\\n\\r\\n' | timeout 20 nc $ip {internet.http} "
              "| tail -n 1; "
              f"nslookup {internet.denied} >/dev/null 2>&1; echo denied=$?")
    try:
        proc = user.run("ab-exec", "--dir", str(project_dir), "--", "sh", "-c", script)
        assert proc.returncode == 0, proc.stderr
        lines = proc.stdout.decode().splitlines()
        assert lines[0].startswith("ip=198.18.") and lines[1:] == [f"hello from {internet.name}", "denied=1"], lines
        entries = json.loads(user.run("ab-log", "--json", str(project_dir), check=True).stdout)
        assert {(e["host"], e["method"], e["allowed"]) for e in entries} == {
            (internet.name, "GET", True), (internet.denied, "DNS", False)}
        show = json.loads(user.run("ab-net", "show", "--json", str(project_dir), check=True).stdout)
        assert show["steering"]["active"] and show["steering"]["problem"] is None
        net = user.home / "xdg/state/agentsh/net"
        assert (net / f"{show['sandbox']}.names.jsonl").is_file()
        user.run("ab-down", "--rm", str(project_dir), check=True)  # the map, record and CA go; the log stays
        left = sorted(str(p.relative_to(net)) for p in net.rglob("*") if show["sandbox"] in p.name)
        assert left == [f"log/{show['sandbox']}.jsonl"], left
    finally:
        user.run("ab-down", "--rm", "--volumes", str(project_dir))
        user.run("sh", "-c", f"printf 'image = \"localhost/agentsh-test-tiny:latest\"\\n' > {config}")
