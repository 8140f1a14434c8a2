"""Bound credentials in a real sandbox (rootful): a placeholder inside, the value added by the proxy on the way out.

A local HTTPS server with its own test CA stands in for the API; the proxy
trusts that CA upstream (AGENTSH_UPSTREAM_CA), the sandbox does not. The
sandbox reaches it as host.containers.internal (bound) and host.docker.internal
(the same server, not bound).
"""

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from agentsh.host import project
from agentsh.host.liveness import alive
from tests.conftest import ab, git_init, own_dirs_env, podman, remove_sandboxes_under
from tests.tls_origin import TLSOrigin

DEFAULT_IMAGE = "localhost/agentsh:latest"
REAL = "sk-ant-api03-" + "R3aLv4lu3-x_" * 7 + "AA"
BOUND, UNBOUND = "host.containers.internal", "host.docker.internal"
NO_PROXY_VARS = "env " + " ".join(f"-u {v}" for v in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy",
                                                      "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"))


@pytest.fixture(scope="class")
def bound(tmp_path_factory):
    if podman("image", "exists", DEFAULT_IMAGE, check=False).returncode != 0:
        pytest.fail(f"{DEFAULT_IMAGE} is missing: build it with 'ab-image build'")
    base = tmp_path_factory.mktemp("swap")
    origin = TLSOrigin(base, [BOUND, UNBOUND], bind="0.0.0.0", reflect=False)
    env = own_dirs_env(base, DEFAULT_IMAGE)
    env["AGENTSH_UPSTREAM_CA"] = origin.ca
    with open(os.path.join(env["XDG_CONFIG_HOME"], "agentsh", "config.toml"), "a") as f:
        f.write(f'[network]\nmode = "allow"\nallow = ["{BOUND}:{origin.port}", "{UNBOUND}:{origin.port}"]\n')
    repo = git_init(base / "repo")
    shutil.copy(origin.ca, repo / "test-ca.pem")  # for the unbound host only: the sandbox trusts the API directly
    ab("ab-creds", "set", "API_KEY", "--bind-host", BOUND, "--bind-header", "x-api-key", input=REAL.encode(),
       check=True, env=env)
    ab("ab-creds", "grant", "API_KEY", str(repo), check=True, env=env)

    def run(script):
        return ab("ab-exec", "--", "sh", "-c", script, cwd=repo, env=env, timeout=180)

    url = f"https://{{}}:{origin.port}/v1/messages"
    try:
        placeholder = run('printf %s "$API_KEY"').stdout.decode()
        calls = {
            "bound": run(f'curl -sS -H "x-api-key: $API_KEY" {url.format(BOUND)}'),
            "bound_again": run(f'curl -sS -H "x-api-key: $API_KEY" {url.format(BOUND)} {url.format(BOUND)}'),
            "wrong_header": run(f'curl -sS -H "Authorization: Bearer $API_KEY" {url.format(BOUND)}'),
            "unbound": run(f'curl -sS --cacert test-ca.pem -H "x-api-key: $API_KEY" {url.format(UNBOUND)}'),
            # no proxy variables: the connection is steered (DNS answerer, transparent listener)
            "steered": run(f'{NO_PROXY_VARS} curl -sS -H "x-api-key: $API_KEY" {url.format(BOUND)}/steered'),
            # the agents are Node programs: fetch ignores proxy variables (steered) and trusts the bundle
            # through NODE_EXTRA_CA_CERTS, which the sandbox sets
            "node": run("node -e 'fetch(process.argv[1], {headers: {\"x-api-key\": process.env.API_KEY}})"
                        ".then(r => r.text()).then(t => process.stdout.write(t))' " + url.format(BOUND) + "/node"),
        }
        environ = run("for f in /proc/[0-9]*/environ; do cat $f; echo; done 2>/dev/null; "
                      "cat /run/agentsh/secrets/* 2>/dev/null; true").stdout
        name = ab("ab-up", str(repo), check=True, env=env).stdout.decode().strip()
        holder = subprocess.Popen(["ab-exec", "--", "sh", "-c", 'sleep 60; echo "$API_KEY"'], cwd=repo, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            memory = b""
            for _ in range(100):  # until the long-lived process holding the variable is there
                memory = process_memory(name)
                if placeholder.encode() in memory:
                    break
                time.sleep(0.1)
        finally:
            holder.kill()
            holder.wait()
        yield SimpleNamespace(repo=repo, env=env, origin=origin, placeholder=placeholder, calls=calls,
                              environ=environ, memory=memory, name=name)
    finally:
        origin.close()
        stop_proxy(env, repo)
        remove_sandboxes_under(str(base))


def stop_proxy(env, repo):
    """SIGTERM the sandbox's proxy and wait for it (it would stop by itself within a second of the sandbox)."""
    import time

    from agentsh.base.state import Store
    from agentsh.egress import network
    from agentsh.host.liveness import alive

    store = Store(os.path.join(env["XDG_STATE_HOME"], "agentsh"))
    for name in store.names("net"):
        record = store.read(f"net/{name}.json") or {}
        network.stop(store, name)
        for _ in range(50):
            if not alive(record.get("pid"), record.get("pid_start")):
                break
            time.sleep(0.1)


def process_memory(name):
    """Every readable mapping of every process of the sandbox, read from the host (rootful: as root)."""
    pids = podman("top", name, "hpid").stdout.split()[1:]
    blobs = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/maps") as f:
                maps = f.read().splitlines()
            with open(f"/proc/{pid}/mem", "rb", 0) as mem:
                for line in maps:
                    fields = line.split()
                    start, end = (int(x, 16) for x in fields[0].split("-"))
                    if "r" not in fields[1] or end - start > (256 << 20) or line.endswith(("[vvar]", "[vsyscall]")):
                        continue
                    try:
                        mem.seek(start)
                        blobs.append(mem.read(end - start))
                    except (OSError, ValueError, OverflowError):
                        continue
        except OSError:
            continue
    return b"".join(blobs)


def files_holding(needle, *roots):
    found = []
    for root in roots:
        for d, _, names in os.walk(root):
            for n in names:
                path = os.path.join(d, n)
                if os.path.isfile(path) and not os.path.islink(path):
                    try:
                        with open(path, "rb") as f:
                            if needle in f.read():
                                found.append(path)
                    except OSError:
                        continue
    return found


def log(bound, *flags):
    return ab("ab-log", *flags, str(bound.repo), check=True, env=bound.env).stdout.decode()


class TestABoundCredential:
    def test_the_sandbox_sees_a_placeholder_of_the_same_shape(self, bound):
        p = bound.placeholder
        assert p != REAL and p.startswith("sk-ant-api03-") and len(p) == len(REAL)

    def test_the_bound_host_receives_the_value(self, bound):
        for name in ("bound", "bound_again"):
            assert bound.calls[name].returncode == 0, bound.calls[name].stderr
        keys = [s["headers"].get("x-api-key") for s in bound.origin.seen if s["path"] == "/v1/messages"]
        assert keys.count(REAL) == 3  # one request, then two on one kept-alive connection

    def test_a_steered_connection_to_the_bound_host_gets_the_value_too(self, bound):
        assert bound.calls["steered"].returncode == 0, bound.calls["steered"].stderr
        [seen] = [s for s in bound.origin.seen if s["path"].endswith("/steered")]
        assert seen["headers"]["x-api-key"] == REAL
        entries = json.loads(log(bound, "--json"))
        assert any(e["method"] == "TLS" and "credentials added: 1 of 1" in e["reason"] for e in entries)

    def test_node_fetch_gets_the_value_added_too(self, bound):
        assert bound.calls["node"].returncode == 0, bound.calls["node"].stderr
        [seen] = [s for s in bound.origin.seen if s["path"].endswith("/node")]
        assert seen["headers"]["x-api-key"] == REAL

    def test_the_unbound_host_gets_the_placeholder_even_in_the_bound_header(self, bound):
        assert bound.calls["unbound"].returncode == 0, bound.calls["unbound"].stderr
        assert bound.placeholder in [s["headers"].get("x-api-key") for s in bound.origin.seen]

    def test_a_placeholder_in_another_header_goes_unchanged_and_ab_log_warns(self, bound):
        assert f"Bearer {bound.placeholder}" in [s["headers"].get("Authorization") for s in bound.origin.seen]
        warnings = [line for line in log(bound).splitlines() if " WARN " in line]
        assert warnings and "placeholder of API_KEY sent unchanged" in warnings[0]
        entries = json.loads(log(bound, "--json"))
        assert any("credentials added: 1 of 1 requests" in e["reason"] for e in entries)

    def test_the_value_is_nowhere_in_the_sandbox_environment(self, bound):
        assert bound.placeholder.encode() in bound.environ  # the read did see the variable
        assert REAL.encode() not in bound.environ
        assert REAL[13:40].encode() not in bound.environ

    def test_the_value_is_in_no_process_memory_and_no_file_of_the_sandbox(self, bound):
        assert bound.placeholder.encode() in bound.memory  # the scan did read the processes holding the variable
        assert REAL.encode() not in bound.memory
        info = json.loads(podman("container", "inspect", bound.name).stdout)[0]
        upper = info["GraphDriver"]["Data"]["UpperDir"]
        home = podman("volume", "inspect", "--format", "{{.Mountpoint}}", f"{bound.name}-home").stdout.strip()
        assert files_holding(REAL.encode(), upper, home) == []
        assert REAL not in podman("container", "inspect", bound.name).stdout

    def test_the_ca_key_is_not_inside_and_the_cert_is_trusted(self, bound):
        out = ab("ab-exec", "--", "sh", "-c", "grep -c 'BEGIN CERTIFICATE' $CURL_CA_BUNDLE; "
                 "grep -rl 'PRIVATE KEY' /run/agentsh 2>/dev/null; true", cwd=bound.repo, env=bound.env)
        assert int(out.stdout.split()[0]) > 1 and b"/run/agentsh" not in out.stdout


# -- removal: a removed sandbox's placeholders and CA go with it ------------------------------------------


def _credential_state(repo, name):
    """(placeholder map, CA dir, combined CA bundles, proxy record) of a sandbox, in this test's state dir."""
    state = Path(os.environ["XDG_STATE_HOME"]) / "agentsh"
    record = json.loads((state / "net" / f"{name}.json").read_text())
    return (state / "net" / "swap" / f"{name}.json", state / "net" / "ca" / name,
            sorted((state / "ca").glob(f"*-{name}.pem")), record)


def _bound_sandbox(user_config, tiny_image, repo):
    """A sandbox in mode allow holding a bound credential's placeholder: (name, placeholder)."""
    user_config(f'image = "{tiny_image}"\n[network]\nmode = "allow"\nallow = ["{BOUND}:443"]\n')
    ab("ab-creds", "set", "API_KEY", "--bind-host", BOUND, input=REAL.encode(), check=True)
    ab("ab-creds", "grant", "API_KEY", str(repo), check=True)
    placeholder = ab("ab-exec", "--", "sh", "-c", 'printf %s "$API_KEY"', cwd=repo, check=True).stdout.decode()
    assert placeholder.startswith("sk-ant-api03-") and placeholder != REAL
    return project.find(str(repo)).sandbox, placeholder


def test_ab_down_rm_removes_the_placeholder_map_and_the_ca(sandbox_env, user_config, tiny_image, repo):
    name, placeholder = _bound_sandbox(user_config, tiny_image, repo)
    swap_record, ca_dir, bundles, proxy = _credential_state(repo, name)
    assert swap_record.is_file() and (ca_dir / "ca.key").is_file() and bundles
    old_ca = (ca_dir / "ca.crt").read_bytes()
    assert alive(proxy["pid"], proxy["pid_start"])
    ab("ab-down", "--rm", str(repo), check=True)
    assert podman("container", "exists", name, check=False).returncode != 0
    assert not swap_record.exists() and not ca_dir.exists() and not any(b.exists() for b in bundles)
    assert not alive(proxy["pid"], proxy["pid_start"])
    # the next sandbox of the project gets a CA and placeholders of its own
    again = ab("ab-exec", "--", "sh", "-c", 'printf %s "$API_KEY"', cwd=repo, check=True).stdout.decode()
    assert again != placeholder and again.startswith("sk-ant-api03-")
    assert (ca_dir / "ca.crt").read_bytes() != old_ca
    inside = ab("ab-exec", "--", "cat", "/run/agentsh/ca-bundle.crt", cwd=repo, check=True).stdout
    assert (ca_dir / "ca.crt").read_bytes().strip() in inside and old_ca.strip() not in inside


@pytest.mark.committed
def test_ab_wt_rm_removes_the_worktree_sandboxs_placeholder_map_and_ca(sandbox_env, user_config, tiny_image, repo):
    user_config(f'image = "{tiny_image}"\n[network]\nmode = "allow"\nallow = ["{BOUND}:443"]\n')
    path = ab("ab-wt", "new", "w", cwd=repo, check=True).stdout.decode().strip()
    name, _ = _bound_sandbox(user_config, tiny_image, Path(path))
    swap_record, ca_dir, bundles, _ = _credential_state(path, name)
    assert swap_record.is_file() and ca_dir.is_dir() and bundles
    ab("ab-wt", "rm", "w", cwd=repo, check=True)
    assert not swap_record.exists() and not ca_dir.exists() and not any(b.exists() for b in bundles)
