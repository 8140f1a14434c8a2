"""Bound credentials in a real sandbox, rootful and rootless: a placeholder inside, the value added by the proxy
on the way out.

A local HTTPS server with its own test CA stands in for the API; the proxy
trusts that CA upstream (AGENTSH_UPSTREAM_CA), the sandbox does not. The
sandbox reaches it as host.containers.internal (bound) and host.docker.internal
(the same server, not bound).
"""

import json
import os
import subprocess
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from agentsh.base.state import Store
from agentsh.egress import network
from agentsh.host import project
from agentsh.host.liveness import alive
from tests.conftest import ab, git_init, own_dirs_env, podman, remove_sandboxes_under
from tests.integration.test_agents import default_image  # noqa: F401 (the fixture: built when missing)
from tests.tls_origin import TLSOrigin

REAL = "sk-ant-api03-" + "R3aLv4lu3-x_" * 7 + "AA"
REAL_QUERY = "AIzaSy" + "Qv4lu3inTh3URL" * 2
REAL_BODY = "rt-b0dyT0k3n"  # shorter than its placeholder: the body changes length
ACCESS, REFRESH = "sk-ant-oat01-" + "AcC3ssT0k3n-_" * 7, "sk-ant-ort01-" + "R3fr3shT0k3n_" * 7
NEW_ACCESS, NEW_REFRESH = "sk-ant-oat01-" + "N3wAcc3ss_" * 9, "sk-ant-ort01-" + "N3wR3fr3sh_" * 8
LOGIN = {"claudeAiOauth": {"accessToken": ACCESS, "refreshToken": REFRESH, "expiresAt": 1, "scopes": ["user:inference"]}}
REFRESH_SCRIPT = r"""set -e
f=~/.claude/.credentials.json
field() {{ sed -n "s/.*\"$1\": *\"\([^\"]*\)\".*/\1/p"; }}
cat "$f"; echo
rt=$(field refreshToken < "$f")
answer=$(curl -sS -H 'Content-Type: application/json' --data "{{\"grant_type\": \"refresh_token\", \"refresh_token\": \"$rt\"}}" {token_url})
echo "$answer"
at=$(echo "$answer" | field access_token)
nrt=$(echo "$answer" | field refresh_token)
printf '{{"claudeAiOauth": {{"accessToken": "%s", "refreshToken": "%s", "expiresAt": 2}}}}' "$at" "$nrt" > "$f.tmp"
mv "$f.tmp" "$f"
curl -sS -H "Authorization: Bearer $at" {api}
"""
# a login made inside (no credential behind it): the agent posts its authorization code, keeps the answer, uses it
LOGIN_SCRIPT = r"""set -e
field() {{ sed -n "s/.*\"$1\": *\"\([^\"]*\)\".*/\1/p"; }}
curl -sS -H 'Content-Type: application/json' --data '{{"grant_type": "authorization_code", "code": "c0de"}}' \
    {token_url} > ~/made-inside.json
cat ~/made-inside.json; echo
curl -sS -H "Authorization: Bearer $(field access_token < ~/made-inside.json)" {api}
"""
BOUND, UNBOUND = "host.containers.internal", "host.docker.internal"
NO_PROXY_VARS = "env " + " ".join(f"-u {v}" for v in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy",
                                                      "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"))


class Rootful:
    """root's agentsh and Podman, with dirs of its own under `base`, running the default image (Node inside)."""

    kind, node = "rootful", True

    def __init__(self, base, image, upstream_ca):
        self.base = base
        self.env = own_dirs_env(base, image)
        self.env["AGENTSH_UPSTREAM_CA"] = upstream_ca
        self.env["AGENTSH_LOGIN_HOSTS"] = f"{BOUND}=claude"  # the stand-in API's host is a login's token endpoint
        self.state = Path(self.env["XDG_STATE_HOME"])
        self.config = Path(self.env["XDG_CONFIG_HOME"]) / "agentsh" / "config.toml"

    def ab(self, *args, cwd=None, input=None, check=False, timeout=180):
        return ab(*args, cwd=cwd, input=input, check=check, env=self.env, timeout=timeout)

    def argv(self, *args):
        return list(args)

    def podman(self, *args):
        return podman(*args)

    def repo(self):
        return git_init(self.base / "repo")

    def written_dir(self, name):
        """The directory holding what the container wrote (overlay: its upper dir; vfs: its whole root)."""
        info = json.loads(self.podman("container", "inspect", name).stdout)[0]
        data = info["GraphDriver"].get("Data") or {}
        if data.get("UpperDir"):
            return data["UpperDir"]
        return self.podman("unshare", "podman", "mount", name).stdout.strip()  # vfs: a plain directory

    def write(self, path, text):
        with open(path, "a") as f:
            f.write(text)

    def clean(self):
        remove_sandboxes_under(str(self.base))


class Rootless(Rootful):
    """The rootless test user's agentsh and Podman (keep-id): own config and state dirs, its usual image store."""

    kind, node = "rootless", False

    def __init__(self, user, image, upstream_ca, base):
        self.user, self.base = user, base
        self.vars = {"XDG_CONFIG_HOME": str(base / "config"), "XDG_STATE_HOME": str(base / "state"),
                     "AGENTSH_UPSTREAM_CA": upstream_ca, "AGENTSH_LOGIN_HOSTS": f"{BOUND}=claude"}
        self.state = base / "state"
        self.config = base / "config" / "agentsh" / "config.toml"
        user.run("mkdir", "-p", str(self.config.parent), str(self.state), check=True)
        self.write(self.config, f'image = "{image}"\n')
        self.env = None

    def argv(self, *args):
        return self.user.argv("env", *(f"{k}={v}" for k, v in self.vars.items()), *args)

    def ab(self, *args, cwd=None, input=None, check=False, timeout=180):
        proc = subprocess.run(self.argv(*args), cwd=cwd or self.user.home, input=input, capture_output=True,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{args} as {self.user.name} exited {proc.returncode}: {proc.stderr.decode()}")
        return proc

    def podman(self, *args):
        proc = self.user.run("podman", *args)
        assert proc.returncode == 0, proc.stderr.decode()
        return SimpleNamespace(stdout=proc.stdout.decode())

    def repo(self):
        path = self.base / "repo"
        self.user.run("git", "init", "-q", str(path), check=True)
        return path

    def write(self, path, text):
        self.user.run("sh", "-c", f"cat >> {path}", input=text.encode(), check=True)

    def clean(self):
        self.ab("ab-down", "--rm", "--volumes", str(self.base / "repo"))
        for name in ("API_KEY", "QUERY_KEY", "BODY_TOKEN", "LOGIN"):
            self.ab("ab-creds", "rm", name, "--project", str(self.base / "repo"))
        self.user.run("rm", "-rf", str(self.base))


@pytest.fixture(scope="class", params=[pytest.param("rootful", marks=pytest.mark.default_image),
                                        pytest.param("rootless", marks=pytest.mark.rootless)])
def bound(request, tmp_path_factory):
    """One sandbox holding a bound credential's placeholder, and what it did; rootful (the default image,
    Node included) and rootless (the test user, an image with curl: the default image is gigabytes to copy
    into a rootless store)."""
    if request.param == "rootful":
        image = request.getfixturevalue("default_image")
        base = tmp_path_factory.mktemp("swap")
        origin_dir = base
    else:
        user = request.getfixturevalue("rootless_user")
        image = request.getfixturevalue("rootless_curl_image")
        base = user.mkdir(f"work/swap-{uuid.uuid4().hex[:8]}")
        origin_dir = base
    origin = TLSOrigin(origin_dir, [BOUND, UNBOUND], bind="0.0.0.0", reflect=False)
    who = Rootful(base, image, origin.ca) if request.param == "rootful" else Rootless(user, image, origin.ca, base)
    try:
        who.write(who.config, f'[network]\nmode = "allow"\nallow = ["{BOUND}:{origin.port}", '
                              f'"{UNBOUND}:{origin.port}"]\n')
        repo = who.repo()
        # for the unbound host only: the sandbox trusts the API directly
        who.write(repo / "test-ca.pem", Path(origin.ca).read_text())
        scope = ["--project", str(repo)] if who.kind == "rootless" else []  # the user's data dir is shared
        who.ab("ab-creds", "set", "API_KEY", *scope, "--bind-host", BOUND, "--bind-header", "x-api-key",
               input=REAL.encode(), check=True)
        # a key passed in the URL (?key=, as Google's APIs take it) and a token sent in a JSON body
        who.ab("ab-creds", "set", "QUERY_KEY", *scope, "--bind-host", BOUND, "--bind-query", "key",
               input=REAL_QUERY.encode(), check=True)
        who.ab("ab-creds", "set", "BODY_TOKEN", *scope, "--bind-host", BOUND, "--bind-body",
               input=REAL_BODY.encode(), check=True)
        # Claude Code's login file, refreshed at a token endpoint on the bound host
        who.ab("ab-creds", "set", "LOGIN", *scope, "--file", "~/.claude/.credentials.json", "--oauth", "claude",
               "--writeback", "--bind-host", BOUND, input=json.dumps(LOGIN).encode(), check=True)
        origin.server.tokens = {"token_type": "Bearer", "access_token": NEW_ACCESS, "refresh_token": NEW_REFRESH,
                                "expires_in": 28800}
        if not scope:
            for name in ("API_KEY", "QUERY_KEY", "BODY_TOKEN", "LOGIN"):
                who.ab("ab-creds", "grant", name, str(repo), check=True)

        def run(script):
            return who.ab("ab-exec", "--", "sh", "-c", script, cwd=repo)

        url = f"https://{{}}:{origin.port}/v1/messages"
        placeholder = run('printf %s "$API_KEY"').stdout.decode()
        calls = {
            "bound": run(f'curl -sS -H "x-api-key: $API_KEY" {url.format(BOUND)}'),
            "bound_again": run(f'curl -sS -H "x-api-key: $API_KEY" {url.format(BOUND)} {url.format(BOUND)}'),
            "wrong_header": run(f'curl -sS -H "Authorization: Bearer $API_KEY" {url.format(BOUND)}'),
            "unbound": run(f'curl -sS --cacert test-ca.pem -H "x-api-key: $API_KEY" {url.format(UNBOUND)}'),
            # no proxy variables: the connection is steered (DNS answerer, transparent listener)
            "steered": run(f'{NO_PROXY_VARS} curl -sS -H "x-api-key: $API_KEY" {url.format(BOUND)}/steered'),
            "query": run(f'curl -sS "{url.format(BOUND)}/query?alt=json&key=$QUERY_KEY"'),
            "body": run(f'curl -sS -H "Content-Type: application/json" '
                        f'--data "{{\\"refresh_token\\": \\"$BODY_TOKEN\\"}}" {url.format(BOUND)}/body'),
            "stand_ins": run('printf "%s %s" "$QUERY_KEY" "$BODY_TOKEN"'),
            # what an agent does: refresh with the file's refresh token, write the answer's tokens back
            # (a temporary file renamed over it), use the new access token
            "oauth": run(REFRESH_SCRIPT.format(token_url=url.format(BOUND).replace("/v1/messages", "/v1/oauth/token"),
                                               api=url.format(BOUND) + "/after-refresh")),
            "login": run(LOGIN_SCRIPT.format(token_url=url.format(BOUND).replace("/v1/messages", "/login/oauth/token"),
                                             api=url.format(BOUND) + "/after-login")),
        }
        if who.node:
            # the agents are Node programs: fetch ignores proxy variables (steered) and trusts the bundle
            # through NODE_EXTRA_CA_CERTS, which the sandbox sets
            calls["node"] = run("node -e 'fetch(process.argv[1], {headers: {\"x-api-key\": process.env.API_KEY}})"
                                ".then(r => r.text()).then(t => process.stdout.write(t))' " + url.format(BOUND)
                                + "/node")
        environ = run("for f in /proc/[0-9]*/environ; do cat $f; echo; done 2>/dev/null; "
                      "cat /run/agentsh/secrets/* 2>/dev/null; true").stdout
        name = who.ab("ab-up", str(repo), check=True).stdout.decode().strip()
        holder = subprocess.Popen(who.argv("ab-exec", "--", "sh", "-c", 'sleep 60; echo "$API_KEY"'), cwd=repo,
                                  env=who.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            memory = b""
            for _ in range(100):  # until the long-lived process holding the variable is there
                memory = process_memory(who, name)
                if placeholder.encode() in memory:
                    break
                time.sleep(0.1)
        finally:
            holder.kill()
            holder.wait()
        yield SimpleNamespace(repo=repo, who=who, origin=origin, placeholder=placeholder, calls=calls,
                              environ=environ, memory=memory, name=name)
    finally:
        origin.close()
        stop_proxy(who.state)
        who.clean()


def stop_proxy(state_home):
    """SIGTERM the sandbox's proxy and wait for it (it would stop by itself within a second of the sandbox)."""
    store = Store(os.path.join(state_home, "agentsh"))
    for name in store.names("net"):
        record = store.read(f"net/{name}.json") or {}
        network.stop(store, name)
        for _ in range(50):
            if not alive(record.get("pid"), record.get("pid_start")):
                break
            time.sleep(0.1)


def process_memory(who, name):
    """Every readable mapping of every process of the sandbox, read from the host (as root)."""
    pids = who.podman("top", name, "hpid").stdout.split()[1:]
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
    return bound.who.ab("ab-log", *flags, str(bound.repo), check=True).stdout.decode()


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
        if not bound.who.node:
            pytest.skip("the rootless run's image has no Node (the rootful run checks fetch)")
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

    def test_a_value_bound_to_a_query_parameter_or_to_bodies_is_swapped_there(self, bound):
        for name in ("query", "body", "stand_ins"):
            assert bound.calls[name].returncode == 0, bound.calls[name].stderr
        query_ph, body_ph = bound.calls["stand_ins"].stdout.decode().split()
        assert query_ph != REAL_QUERY and body_ph != REAL_BODY and len(body_ph) != len(REAL_BODY)
        [q] = [s for s in bound.origin.seen if "/query" in s["path"]]
        assert q["path"].endswith(f"/query?alt=json&key={REAL_QUERY}")
        [b] = [s for s in bound.origin.seen if s["path"].endswith("/body")]
        assert json.loads(b["body"]) == {"refresh_token": REAL_BODY}
        assert int(b["headers"]["Content-Length"]) == len(b["body"])
        for real in (REAL_QUERY, REAL_BODY):
            assert real.encode() not in bound.environ and real.encode() not in bound.memory

    def test_an_oauth_refresh_round_trip_shows_the_sandbox_only_placeholders(self, bound):
        call = bound.calls["oauth"]
        assert call.returncode == 0, call.stderr
        out = call.stdout.decode()
        for real in (ACCESS, REFRESH, NEW_ACCESS, NEW_REFRESH):
            assert real not in out and real.encode() not in bound.environ and real.encode() not in bound.memory
        file_seen, answer = (json.loads(line) for line in out.splitlines()[:2])
        assert file_seen["claudeAiOauth"]["accessToken"].startswith("sk-ant-oat01-")
        assert file_seen["claudeAiOauth"]["scopes"] == ["user:inference"]
        assert answer["access_token"].startswith("sk-ant-oat01-") and answer["expires_in"] == 28800
        [token] = [s for s in bound.origin.seen if s["path"].endswith("/v1/oauth/token")]
        assert json.loads(token["body"])["refresh_token"] == REFRESH  # the endpoint got the real one
        [after] = [s for s in bound.origin.seen if s["path"].endswith("/after-refresh")]
        assert after["headers"]["Authorization"] == f"Bearer {NEW_ACCESS}"  # the new placeholder works

    def test_a_login_made_inside_gets_placeholders_and_its_token_works(self, bound):
        """No credential stored or granted for it: the token endpoint's answer reaches the sandbox with
        placeholders (NEW_ACCESS, NEW_REFRESH: what the stand-in endpoint answers), which work toward the API."""
        call = bound.calls["login"]
        assert call.returncode == 0, call.stderr
        out = call.stdout.decode()
        answer = json.loads(out.splitlines()[0])
        assert answer["access_token"].startswith("sk-ant-oat01-") and answer["expires_in"] == 28800
        assert answer["access_token"] != NEW_ACCESS and answer["refresh_token"].startswith("sk-ant-ort01-")
        for real in (NEW_ACCESS, NEW_REFRESH):  # (the files and memory checks below cover them too)
            assert real not in out and real.encode() not in bound.environ and real.encode() not in bound.memory
        [after] = [s for s in bound.origin.seen if s["path"].endswith("/after-login")]
        assert after["headers"]["Authorization"] == f"Bearer {NEW_ACCESS}"
        assert "login:claude" not in bound.who.ab("ab-creds", "ls", check=True).stdout.decode()

    def test_after_a_refresh_the_cache_holds_the_new_real_tokens(self, bound):
        scope = ["--project", str(bound.repo)] if bound.who.kind == "rootless" else []
        stored = json.loads(bound.who.ab("ab-creds", "get", "LOGIN", *scope, check=True).stdout)["claudeAiOauth"]
        assert (stored["accessToken"], stored["refreshToken"]) == (NEW_ACCESS, NEW_REFRESH)
        assert stored["expiresAt"] == 2  # the file the agent wrote, its placeholders turned back into values
        inside = bound.who.ab("ab-exec", "--", "cat", "/home/agent/.claude/.credentials.json", cwd=bound.repo,
                              check=True).stdout.decode()
        assert NEW_ACCESS not in inside and json.loads(inside)["claudeAiOauth"]["accessToken"].startswith("sk-ant-")

    def test_the_value_is_nowhere_in_the_sandbox_environment(self, bound):
        assert bound.placeholder.encode() in bound.environ  # the read did see the variable
        assert REAL.encode() not in bound.environ
        assert REAL[13:40].encode() not in bound.environ

    def test_the_value_is_in_no_process_memory_and_no_file_of_the_sandbox(self, bound):
        assert bound.placeholder.encode() in bound.memory  # the scan did read the processes holding the variable
        assert REAL.encode() not in bound.memory
        upper = bound.who.written_dir(bound.name)
        home = bound.who.podman("volume", "inspect", "--format", "{{.Mountpoint}}",
                                f"{bound.name}-home").stdout.strip()
        assert os.path.isdir(upper) and os.path.isdir(home)
        for real in (REAL, ACCESS, REFRESH, NEW_ACCESS, NEW_REFRESH):
            assert files_holding(real.encode(), upper, home) == []
        assert REAL not in bound.who.podman("container", "inspect", bound.name).stdout

    def test_the_ca_key_is_not_inside_and_the_cert_is_trusted(self, bound):
        out = bound.who.ab("ab-exec", "--", "sh", "-c", "grep -c 'BEGIN CERTIFICATE' $CURL_CA_BUNDLE; "
                           "grep -rl 'PRIVATE KEY' /run/agentsh 2>/dev/null; true", cwd=bound.repo)
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


@pytest.mark.rootless
def test_rootless_ab_down_rm_removes_the_placeholder_map_and_the_ca(rootless_user):
    from tests.conftest import TINY_IMAGE

    who = Rootless(rootless_user, TINY_IMAGE, "", rootless_user.mkdir(f"work/swap-rm-{uuid.uuid4().hex[:8]}"))
    try:
        who.write(who.config, f'[network]\nmode = "allow"\nallow = ["{BOUND}:443"]\n')
        repo = who.repo()
        who.ab("ab-creds", "set", "API_KEY", "--project", str(repo), "--bind-host", BOUND, input=REAL.encode(),
               check=True)
        placeholder = who.ab("ab-exec", "--", "sh", "-c", 'printf %s "$API_KEY"', cwd=repo, check=True).stdout
        assert placeholder.startswith(b"sk-ant-api03-") and placeholder != REAL.encode()
        name = who.ab("ab-up", str(repo), check=True).stdout.decode().strip()
        state = who.state / "agentsh"
        made = [state / "net" / "swap" / f"{name}.json", state / "net" / "ca" / name / "ca.key",
                *sorted((state / "ca").glob(f"*-{name}.pem"))]
        assert len(made) == 3 and all(p.exists() for p in made)
        assert os.stat(made[1]).st_uid == rootless_user.uid  # the user's own state, not root's
        who.ab("ab-down", "--rm", str(repo), check=True)
        assert not any(p.exists() for p in made) and not (state / "net" / "ca" / name).exists()
    finally:
        who.clean()


@pytest.mark.committed
def test_ab_wt_rm_removes_the_worktree_sandboxs_placeholder_map_and_ca(sandbox_env, user_config, tiny_image, repo):
    user_config(f'image = "{tiny_image}"\n[network]\nmode = "allow"\nallow = ["{BOUND}:443"]\n')
    path = ab("ab-wt", "new", "w", cwd=repo, check=True).stdout.decode().strip()
    name, _ = _bound_sandbox(user_config, tiny_image, Path(path))
    swap_record, ca_dir, bundles, _ = _credential_state(path, name)
    assert swap_record.is_file() and ca_dir.is_dir() and bundles
    ab("ab-wt", "rm", "w", cwd=repo, check=True)
    assert not swap_record.exists() and not ca_dir.exists() and not any(b.exists() for b in bundles)


# -- passphrase mode: the proxy needs AGENTSH_PASSPHRASE where it starts --------------------------------------


def test_a_proxy_started_without_the_passphrase_says_so_in_one_line(sandbox_env, user_config, tiny_image, repo):
    from tests.egress_origin import Origin

    origin = Origin(b"hello")
    try:
        user_config(f'image = "{tiny_image}"\n[network]\nmode = "allow"\nallow = ["{BOUND}:{origin.port}"]\n')
        with_pass = {**os.environ, "AGENTSH_PASSPHRASE": "correct horse"}
        ab("ab-creds", "init", "--passphrase", env=with_pass, check=True)
        ab("ab-creds", "set", "API_KEY", "--bind-host", BOUND, input=REAL.encode(), env=with_pass, check=True)
        ab("ab-creds", "grant", "API_KEY", str(repo), check=True)
        ab("ab-up", str(repo), check=True)  # the proxy starts here, without the passphrase
        proc = ab("ab-exec", "--", "sh", "-c", f'printf %s "$API_KEY"; wget -q -O- http://{BOUND}:{origin.port}/',
                  cwd=repo, env=with_pass)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith(b"sk-ant-api03-") and REAL.encode() not in proc.stdout
        assert proc.stdout.endswith(b"hello")
        lines = [line for line in proc.stderr.decode().splitlines() if "AGENTSH_PASSPHRASE" in line]
        assert len(lines) == 1 and "Traceback" not in proc.stderr.decode()
        assert "was started without AGENTSH_PASSPHRASE" in lines[0] and lines[0].endswith("ab-down && ab-up")
        warned = []
        for _ in range(50):  # the proxy tells the audit log once it tried to open the placeholders
            warned = [line for line in ab("ab-log", str(repo), check=True).stdout.decode().splitlines()
                      if " WARN " in line and "cannot open the placeholders" in line]
            if warned:
                break
            time.sleep(0.1)
        assert len(warned) == 1 and "passphrase-protected" in warned[0]
        # restarted with the passphrase, it opens them: no more notice
        ab("ab-down", str(repo), env=with_pass, check=True)
        ab("ab-up", str(repo), env=with_pass, check=True)
        again = ab("ab-exec", "--", "true", cwd=repo, env=with_pass)
        assert again.returncode == 0 and b"AGENTSH_PASSPHRASE" not in again.stderr
    finally:
        origin.sock.close()
        ab("ab-down", "--rm", str(repo))  # stops the proxy too, and waits for it
