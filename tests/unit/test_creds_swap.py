"""Placeholders and the proxy adding bound credentials: shapes, bindings, the sealed map, interception."""

import json
import os
import socket
import ssl
import subprocess
import threading
import time

import pytest

from agentsh.base.state import Store
from agentsh.creds import delivery, swap
from agentsh.creds import vault as creds
from agentsh.egress import audit, ca, intercept, proxy
from agentsh.host import project
from agentsh.policy.rules import Policy
from tests.tls_origin import TLSOrigin

REAL = "sk-ant-api03-" + "Qx7_vR2-kLm9" * 8
SANDBOX = "ab-test-swap"
BOUND = "host.containers.internal"


# -- shapes -------------------------------------------------------------------------------------


@pytest.mark.parametrize("value,prefix", [
    (REAL, "sk-ant-api03-"), ("sk-" + "a1B2" * 12, "sk-"), ("ghp_" + "x9Y8" * 9, "ghp_"),
    ("github_pat_11AAAA_" + "b7" * 30, "github_pat_"), ("npm_" + "Z" * 36, "npm_"), ("plainsecretvalue42", ""),
])
def test_placeholders_keep_prefix_length_and_alphabet(value, prefix):
    made = {swap.placeholder(value) for _ in range(5)}
    assert len(made) == 5 and value not in made  # random each time, never the value
    for p in made:
        assert p.startswith(prefix) and len(p) == len(value)
        assert [c.isdigit() for c in p] == [c.isdigit() for c in value]
        assert [c.isupper() for c in p] == [c.isupper() for c in value]
        assert [c for c in p if not c.isalnum()] == [c for c in value if not c.isalnum()]
        assert swap.same_shape(value, p)


def test_jwt_placeholders_keep_header_and_claims_and_change_the_signature():
    value = "eyJhbGciOiJSUzI1NiJ9.eyJleHAiOjE3MDB9." + "s1G-n_" * 40
    p = swap.placeholder(value)
    assert p.split(".")[:2] == value.split(".")[:2] and p != value and len(p) == len(value)


def test_short_values_get_a_longer_placeholder():
    p = swap.placeholder("abc")
    assert len(p) >= swap.MIN_RANDOM and p != "abc"


# -- bindings ----------------------------------------------------------------------------------------


def test_bindings_are_checked_and_default_to_proxy_only_in_proxied_modes():
    clear = creds.meta(creds.ENV, "K", bind_hosts=["API.Example.com.", "api.example.com"], bind_header="X-Api-Key")
    assert clear["bind_hosts"] == ["api.example.com"] and clear["bind_header"] == "x-api-key"
    assert creds.inject_mode(clear, "allow") == creds.inject_mode(clear, "learn") == creds.PROXY
    assert creds.inject_mode(clear, "full") == creds.ENV
    assert creds.inject_mode({**clear, "inject": "env"}, "allow") == creds.ENV
    assert creds.inject_mode(creds.meta(creds.ENV, "K"), "allow") == creds.ENV
    for bad in ({"bind_hosts": ["a b"]}, {"bind_header": "x-api-key"}, {"inject": "proxy"},
                {"bind_hosts": ["h"], "bind_header": "Content-Length"}, {"bind_hosts": ["h"], "inject": "sometimes"}):
        with pytest.raises(creds.UsageError):
            creds.meta(creds.ENV, "K", **bad)
    with pytest.raises(creds.UsageError, match="environment credentials only"):
        creds.meta(creds.FILE, "/x", bind_hosts=["h"], inject="proxy")


def test_cli_set_bad_binding_is_one_line_and_exit_2():
    proc = subprocess.run(["ab-creds", "set", "K", "--bind-header", "x-api-key"], input=b"v", capture_output=True)
    assert proc.returncode == 2 and b"Traceback" not in proc.stderr
    assert b"--bind-host" in proc.stderr


def test_importers_bind_the_api_keys(monkeypatch, tmp_path):

    monkeypatch.setenv("HOME", str(tmp_path))
    for var, hosts, header in [("ANTHROPIC_API_KEY", ["api.anthropic.com"], "x-api-key"),
                               ("OPENAI_API_KEY", ["api.openai.com"], "authorization"),
                               ("GEMINI_API_KEY", ["generativelanguage.googleapis.com"], "x-goog-api-key"),
                               ("GH_TOKEN", ["api.github.com", "github.com"], "authorization")]:
        monkeypatch.setenv(var, "v-" + var)
        source = {"ANTHROPIC_API_KEY": "claude", "OPENAI_API_KEY": "codex", "GEMINI_API_KEY": "gemini",
                  "GH_TOKEN": "gh"}[var]
        proc = subprocess.run(["ab-creds", "import", source, "--json"], capture_output=True)
        assert proc.returncode == 0, proc.stderr
        row = {r["name"]: r for r in json.loads(proc.stdout)}[var]
        assert row["bind_hosts"] == hosts and row["bind_header"] == header


# -- the sealed map, through delivery ------------------------------------------------------------------


def _granted(tmp_path, mode):
    repo = tmp_path / "repo"
    repo.mkdir(exist_ok=True)
    proj = project.find(str(repo))
    store = Store()
    creds.put(store, "ANTHROPIC_API_KEY", creds.GLOBAL,
              creds.meta(creds.ENV, "ANTHROPIC_API_KEY", bind_hosts=[BOUND], bind_header="x-api-key"),
              REAL.encode())
    creds.grant(store, proj, "ANTHROPIC_API_KEY")
    cfg = {"network": {"mode": mode}, "credentials": []}
    return proj, store, cfg


def test_delivery_gives_a_stable_placeholder_and_seals_the_map(tmp_path):
    proj, store, cfg = _granted(tmp_path, "allow")
    notes = []
    first = delivery.prepare(proj, cfg, store, notes.append).env_values["ANTHROPIC_API_KEY"]
    again = delivery.prepare(proj, cfg, store, notes.append).env_values["ANTHROPIC_API_KEY"]
    assert first == again != REAL and first.startswith("sk-ant-api03-") and not notes
    path = swap.record_path(store, proj.sandbox)
    assert REAL.encode() not in open(path, "rb").read() and first.encode() not in open(path, "rb").read()
    assert os.stat(path).st_mode & 0o077 == 0
    entry = swap.read(store, proj.sandbox, creds.load_key())["ANTHROPIC_API_KEY"]
    assert entry == {"placeholder": first, "value": REAL, "hosts": [BOUND], "header": "x-api-key"}
    # moved to another sandbox's name, it does not open
    other = swap.record_path(store, "ab-other-00000000")
    os.makedirs(os.path.dirname(other), exist_ok=True)
    os.link(path, other)
    with pytest.raises(creds.CredentialError, match="integrity"):
        swap.read(store, "ab-other-00000000", creds.load_key())


def test_full_mode_keeps_the_value_and_revoking_drops_the_placeholder(tmp_path):
    proj, store, cfg = _granted(tmp_path, "full")
    assert delivery.prepare(proj, cfg, store, print).env_values["ANTHROPIC_API_KEY"] == REAL
    cfg["network"]["mode"] = "allow"
    delivery.prepare(proj, cfg, store, print)
    creds.put(store, "OTHER", creds.GLOBAL, creds.meta(creds.ENV, "OTHER"), b"x")
    creds.grant(store, proj, "OTHER")
    creds.revoke(store, proj, "ANTHROPIC_API_KEY")
    delivery.prepare(proj, cfg, store, print)
    assert swap.read(store, proj.sandbox, creds.load_key()) == {}


def test_inject_proxy_without_a_proxy_gives_a_placeholder_and_a_notice(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    proj, store = project.find(str(repo)), Store()
    creds.put(store, "K", creds.GLOBAL, creds.meta(creds.ENV, "K", bind_hosts=[BOUND], inject="proxy"), REAL.encode())
    creds.grant(store, proj, "K")
    notes = []
    got = delivery.prepare(proj, {"network": {"mode": "full"}}, store, notes.append).env_values["K"]
    assert got != REAL and got.startswith("sk-ant-api03-")
    assert len(notes) == 1 and "only its placeholder" in notes[0]


# -- the proxy ----------------------------------------------------------------------------------------------


@pytest.fixture
def origin(tmp_path):
    srv = TLSOrigin(tmp_path, [BOUND, "127.0.0.1"])
    yield srv
    srv.close()


@pytest.fixture
def setup(tmp_path, origin):
    """A proxy with one bound placeholder (for BOUND) and its CA; the origin trusted upstream only by its test CA."""
    store = Store()
    key = creds.load_key(create=True)
    placeholder = swap.placeholder(REAL)
    swap.write(store, SANDBOX, key, {"K": {"placeholder": placeholder, "value": REAL, "hosts": [BOUND],
                                           "header": "x-api-key"}})
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    log_path = tmp_path / "log.jsonl"
    log = audit.Writer(str(log_path))
    policy = proxy.StaticPolicy(Policy("allow", [f"{BOUND}:{origin.port}", f"127.0.0.1:{origin.port}"]))
    p = proxy.Proxy(listener, policy, log, SANDBOX,
                    swaps=intercept.Swaps(swap.record_path(store, SANDBOX), SANDBOX),
                    contexts=intercept.Contexts(store.root, SANDBOX, upstream_ca=origin.ca))
    threading.Thread(target=p.serve_forever, daemon=True).start()
    sandbox_ca = ca.ensure(store.root, SANDBOX)
    yield type("S", (), {"port": listener.getsockname()[1], "placeholder": placeholder, "ca": sandbox_ca,
                         "log": log_path, "store": store})
    p.close()


def connect(proxy_port, host, port, trust):
    sock = socket.create_connection(("127.0.0.1", proxy_port), timeout=10)
    sock.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    reply = b""
    while b"\r\n\r\n" not in reply:
        chunk = sock.recv(4096)
        if not chunk:
            break
        reply += chunk
    if not reply.startswith(b"HTTP/1.1 200"):
        sock.close()
        return reply, None
    ctx = ssl.create_default_context(cafile=trust)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    return reply, ctx.wrap_socket(sock, server_hostname=host)


def read_response(tls):
    """(head, body) of one response with Content-Length or chunked."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += tls.recv(65536)
    head, _, rest = buf.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head.lower():
        body = b""
        while True:
            while b"\r\n" not in rest:
                rest += tls.recv(65536)
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line, 16)
            while len(rest) < size + 2:
                rest += tls.recv(65536)
            if size == 0:
                return head, body
            body, rest = body + rest[:size], rest[size + 2:]
    length = int([h.split(b":")[1] for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")][0])
    while len(rest) < length:
        rest += tls.recv(65536)
    return head, rest[:length]


def wait_log(path, pred, tries=100):
    for _ in range(tries):
        found = [e for e in audit.read(str(path)) if pred(e)]
        if found:
            return found
        time.sleep(0.02)
    return []


def test_bound_host_gets_the_value_on_every_request_of_a_keepalive_connection(setup, origin):
    _, tls = connect(setup.port, BOUND, origin.port, setup.ca)
    assert tls.selected_alpn_protocol() == "http/1.1"  # the sandbox offered h2: downgraded cleanly
    assert tls.getpeercert()["issuer"][-1][0][1].startswith("agentsh sandbox")
    host = f"{BOUND}:{origin.port}"
    tls.sendall(f"GET /one HTTP/1.1\r\nHost: {host}\r\nx-api-key: {setup.placeholder}\r\n\r\n".encode())
    _, body = read_response(tls)
    assert json.loads(body)["headers"]["x-api-key"] == REAL
    body_chunks = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    tls.sendall(f"POST /chunked HTTP/1.1\r\nHost: {host}\r\nX-Api-Key: {setup.placeholder}\r\n"
                f"Transfer-Encoding: chunked\r\n\r\n".encode() + body_chunks)
    head, body = read_response(tls)
    seen = json.loads(body)
    assert seen["headers"]["X-Api-Key"] == REAL and seen["body"] == "hello world"
    assert b"chunked" in head.lower()
    tls.sendall(f"PUT /three HTTP/1.1\r\nHost: {host}\r\nContent-Length: 3\r\nExpect: 100-continue\r\n"
                f"x-api-key: {setup.placeholder}\r\nConnection: close\r\n\r\nabc".encode())
    rest = b""
    while True:
        chunk = tls.recv(65536)
        if not chunk:
            break
        rest += chunk
    assert rest.startswith(b"HTTP/1.1 100 Continue") and b'"body": "abc"' in rest
    assert len({s["peer"] for s in origin.seen}) == 1  # one upstream connection carried all three
    tls.close()
    [entry] = wait_log(setup.log, lambda e: e["method"] == "CONNECT")
    assert entry["allowed"] and "credentials added: 3 of 3 requests" in entry["reason"]


def test_a_placeholder_in_another_header_goes_unchanged_and_is_logged(setup, origin):
    _, tls = connect(setup.port, BOUND, origin.port, setup.ca)
    tls.sendall(f"GET / HTTP/1.1\r\nHost: {BOUND}\r\nAuthorization: Bearer {setup.placeholder}\r\n"
                f"Connection: close\r\n\r\n".encode())
    _, body = read_response(tls)
    assert json.loads(body)["headers"]["Authorization"] == f"Bearer {setup.placeholder}"
    [warning] = wait_log(setup.log, lambda e: e.get("warning"))
    assert "placeholder of K sent unchanged" in warning["reason"] and REAL not in json.dumps(warning)
    assert audit.format_entry(warning).split()[1] == "WARN"


def test_an_unbound_host_is_a_plain_tunnel_even_with_the_bound_header(setup, origin):
    reply, tls = connect(setup.port, "127.0.0.1", origin.port, origin.ca)  # the origin's own certificate
    assert tls.getpeercert()["issuer"][-1][0][1] == "agentsh test CA"
    tls.sendall(f"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nx-api-key: {setup.placeholder}\r\n"
                f"Connection: close\r\n\r\n".encode())
    _, body = read_response(tls)
    assert json.loads(body)["headers"]["x-api-key"] == setup.placeholder


def test_plain_http_never_gets_the_value_and_is_logged(setup, tmp_path):
    from tests.egress_origin import Origin, exchange

    plain = Origin()
    try:
        policy_port = plain.port
        setup_policy = proxy.StaticPolicy(Policy("allow", [f"{BOUND}:{policy_port}"]))
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        p = proxy.Proxy(listener, setup_policy, audit.Writer(str(setup.log)), SANDBOX,
                        swaps=intercept.Swaps(swap.record_path(setup.store, SANDBOX), SANDBOX),
                        contexts=intercept.Contexts(setup.store.root, SANDBOX))
        threading.Thread(target=p.serve_forever, daemon=True).start()
        exchange(listener.getsockname()[1], f"GET http://{BOUND}:{policy_port}/ HTTP/1.1\r\nHost: {BOUND}\r\n"
                                            f"x-api-key: {setup.placeholder}\r\n\r\n".encode())
        [warning] = wait_log(setup.log, lambda e: e.get("warning"))
        assert "plain HTTP" in warning["reason"]
        p.close()
    finally:
        plain.sock.close()


@pytest.mark.parametrize("head,status", [
    (b"GET / HTTP/1.1\r\nHost: x\r\nbad header line\r\n\r\n", b"400"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (70 * 1024) + b"\r\n\r\n", b"431"),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", b"400"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", b"400"),
    (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", b"400"),
])
def test_malformed_and_huge_heads_are_refused_cleanly(setup, origin, head, status):
    _, tls = connect(setup.port, BOUND, origin.port, setup.ca)
    tls.sendall(head)
    reply = b""
    while True:
        try:
            chunk = tls.recv(65536)
        except (ssl.SSLError, OSError):
            break
        if not chunk:
            break
        reply += chunk
    assert reply.startswith(b"HTTP/1.1 " + status) and b"Connection: close" in reply
    assert not origin.seen  # nothing reached the API


@pytest.mark.parametrize("head", [
    b"GET / HTTP/1.1\r\nHost: attacker.example\r\nx-api-key: {p}\r\n\r\n",
    b"GET https://attacker.example/ HTTP/1.1\r\nHost: " + BOUND.encode() + b"\r\nx-api-key: {p}\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: " + BOUND.encode() + b"\r\nHost: attacker.example\r\nx-api-key: {p}\r\n\r\n",
    b"GET / HTTP/1.1\r\nx-api-key: {p}\r\n\r\n",
])
def test_a_request_naming_another_host_gets_no_value(setup, origin, head):
    """A shared front end routes by Host: fronting another site there must not carry the value."""
    _, tls = connect(setup.port, BOUND, origin.port, setup.ca)
    tls.sendall(head.replace(b"{p}", setup.placeholder.encode()))
    reply = b""
    while True:
        try:
            chunk = tls.recv(65536)
        except (ssl.SSLError, OSError):
            break
        if not chunk:
            break
        reply += chunk
    assert reply.startswith((b"HTTP/1.1 421", b"HTTP/1.1 400")) and not origin.seen


def test_the_host_header_may_carry_the_port(setup, origin):
    _, tls = connect(setup.port, BOUND, origin.port, setup.ca)
    tls.sendall(f"GET / HTTP/1.1\r\nHost: {BOUND.upper()}:{origin.port}\r\nx-api-key: {setup.placeholder}\r\n"
                f"Connection: close\r\n\r\n".encode())
    _, body = read_response(tls)
    assert json.loads(body)["headers"]["x-api-key"] == REAL


def test_basic_credentials_get_the_value_inside_as_git_sends_them(setup, origin, tmp_path):
    import base64

    swap.write(setup.store, SANDBOX, creds.load_key(), {"K": {"placeholder": setup.placeholder, "value": REAL,
                                                              "hosts": [BOUND], "header": "authorization"}})
    _, tls = connect(setup.port, BOUND, origin.port, setup.ca)
    basic = base64.b64encode(f"x-access-token:{setup.placeholder}".encode()).decode()
    tls.sendall(f"GET /info/refs HTTP/1.1\r\nHost: {BOUND}\r\nAuthorization: Basic {basic}\r\n"
                f"Connection: close\r\n\r\n".encode())
    _, body = read_response(tls)
    got = json.loads(body)["headers"]["Authorization"]
    assert base64.b64decode(got.split()[1]).decode() == f"x-access-token:{REAL}"


def test_a_value_echoed_in_a_response_head_comes_back_as_the_placeholder(setup, origin):
    _, tls = connect(setup.port, BOUND, origin.port, setup.ca)
    tls.sendall(f"GET /echo-header HTTP/1.1\r\nHost: {BOUND}\r\nx-api-key: {setup.placeholder}\r\n"
                f"Connection: close\r\n\r\n".encode())
    head, body = read_response(tls)
    assert origin.seen[-1]["headers"]["x-api-key"] == REAL  # the API did get the value
    assert f"X-Seen-Key: {setup.placeholder}".encode() in head and REAL.encode() not in head


def test_an_upstream_failing_verification_gets_no_value(setup, origin, tmp_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    p = proxy.Proxy(listener, proxy.StaticPolicy(Policy("allow", [f"{BOUND}:{origin.port}"])),
                    audit.Writer(str(tmp_path / "l2.jsonl")), SANDBOX,
                    swaps=intercept.Swaps(swap.record_path(setup.store, SANDBOX), SANDBOX),
                    contexts=intercept.Contexts(setup.store.root, SANDBOX, upstream_ca=""))  # host store only
    threading.Thread(target=p.serve_forever, daemon=True).start()
    reply, tls = connect(listener.getsockname()[1], BOUND, origin.port, setup.ca)
    assert tls is None and reply.startswith(b"HTTP/1.1 502") and b"cannot verify" in reply
    assert not origin.seen
    p.close()


def test_the_ca_key_stays_private_and_leaves_are_cached(setup):
    d = ca.ca_dir(setup.store.root, SANDBOX)
    assert os.stat(d).st_mode & 0o077 == 0
    assert os.stat(os.path.join(d, ca.CA_KEY)).st_mode & 0o077 == 0
    first = ca.leaf(setup.store.root, SANDBOX, "api.example.com")
    mtime = os.stat(first[0]).st_mtime_ns
    assert ca.leaf(setup.store.root, SANDBOX, "api.example.com") == first
    assert os.stat(first[0]).st_mtime_ns == mtime


def test_a_leaf_is_never_made_without_the_sandboxs_ca():
    """A proxy outliving its removed sandbox gets no new CA (the sandbox would not trust it anyway)."""
    root = Store().root
    with pytest.raises(FileNotFoundError):
        ca.leaf(root, "ab-gone-00000000", "api.example.com")
    assert not os.path.exists(ca.ca_dir(root, "ab-gone-00000000"))


# -- placeholders in the URL and in bodies ---------------------------------------------------------------


def _rebind(setup, value=REAL, **where):
    """The setup's credential K bound to BOUND in the given places (header, query, body); its placeholder."""
    placeholder = setup.placeholder if value == REAL else swap.placeholder(value)
    swap.write(setup.store, SANDBOX, creds.load_key(),
               {"K": swap.entry(placeholder, value, [BOUND], {"header": None, **where})})
    return placeholder


def _ask(setup, origin, request):
    _, tls = connect(setup.port, BOUND, origin.port, setup.ca)
    tls.sendall(request)
    head, body = read_response(tls)
    tls.close()
    return json.loads(body)


def test_a_query_bound_value_is_swapped_in_that_parameter_only(setup, origin):
    p = _rebind(setup, query="key")
    seen = _ask(setup, origin, f"GET /v1/models?alt=json&key={p}&other={p} HTTP/1.1\r\nHost: {BOUND}\r\n"
                               f"x-api-key: {p}\r\nConnection: close\r\n\r\n".encode())
    assert seen["path"] == f"/v1/models?alt=json&key={REAL}&other={p}"
    assert seen["headers"]["x-api-key"] == p  # not bound to a header: unchanged
    [warning] = wait_log(setup.log, lambda e: e.get("warning"))
    assert "placeholder of K sent unchanged" in warning["reason"]
    [entry] = wait_log(setup.log, lambda e: e["method"] == "CONNECT")
    assert "credentials added: 1 of 1 requests" in entry["reason"]


def test_a_query_bound_value_is_percent_encoded(setup, origin):
    value = "AIza/Sy+b=" + "k" * 20
    p = _rebind(setup, value, query="key")
    seen = _ask(setup, origin, f"GET /v1?key={p} HTTP/1.1\r\nHost: {BOUND}\r\nConnection: close\r\n\r\n".encode())
    assert seen["path"] == "/v1?key=AIza%2FSy%2Bb%3D" + "k" * 20


def test_a_body_bound_value_is_swapped_and_content_length_recomputed(setup, origin):
    value = "rt-" + "9" * 5  # shorter than its placeholder (padded to 16 random characters)
    p = _rebind(setup, value, body=True)
    assert len(p) != len(value)
    body = json.dumps({"grant_type": "refresh_token", "refresh_token": p}).encode()
    seen = _ask(setup, origin, f"POST /v1/oauth/token HTTP/1.1\r\nHost: {BOUND}\r\nContent-Type: application/json"
                               f"\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    assert json.loads(seen["body"]) == {"grant_type": "refresh_token", "refresh_token": value}
    assert int(seen["headers"]["Content-Length"]) == len(seen["body"])


def test_a_form_body_gets_the_value_percent_encoded_and_a_chunked_one_stays_chunked(setup, origin):
    value = "1//0g+tok/en=" + "Z" * 20
    p = _rebind(setup, value, body=True)
    form = f"grant_type=refresh_token&refresh_token={p}&client_id=x".encode()
    half = len(form) // 2 - 10  # the placeholder straddles two chunks
    chunks = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (half, form[:half], len(form) - half, form[half:])
    seen = _ask(setup, origin, f"POST /token HTTP/1.1\r\nHost: {BOUND}\r\nTransfer-Encoding: chunked\r\n"
                               f"Content-Type: application/x-www-form-urlencoded\r\n\r\n".encode() + chunks)
    assert seen["body"] == "grant_type=refresh_token&refresh_token=1%2F%2F0g%2Btok%2Fen%3D" + "Z" * 20 + "&client_id=x"
    assert seen["headers"]["Transfer-Encoding"] == "chunked" and "Content-Length" not in seen["headers"]


def test_a_body_is_swapped_only_for_a_credential_bound_to_bodies(setup, origin):
    body = f'{{"key": "{setup.placeholder}"}}'.encode()
    seen = _ask(setup, origin, f"POST / HTTP/1.1\r\nHost: {BOUND}\r\nContent-Length: {len(body)}\r\n"
                               f"x-api-key: {setup.placeholder}\r\n\r\n".encode() + body)
    assert seen["headers"]["x-api-key"] == REAL and seen["body"] == body.decode()  # header bound, body not


def test_a_body_past_the_limit_passes_unsearched_and_intact(setup, origin, monkeypatch):
    monkeypatch.setattr(intercept, "BODY_LIMIT", 150)
    p = _rebind(setup, body=True)
    body = (p + "-" + "x" * 300).encode()
    sized = _ask(setup, origin, f"POST / HTTP/1.1\r\nHost: {BOUND}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                 + body)
    chunked = _ask(setup, origin, f"POST / HTTP/1.1\r\nHost: {BOUND}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
                   + b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (200, body[:200], len(body) - 200, body[200:]))
    assert sized["body"] == chunked["body"] == body.decode()
    one_big = _ask(setup, origin, f"POST / HTTP/1.1\r\nHost: {BOUND}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
                   + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))  # one chunk past the limit: never read whole
    assert one_big["body"] == body.decode()
    small = f'{{"k": "{p}"}}'.encode()
    seen = _ask(setup, origin, f"POST / HTTP/1.1\r\nHost: {BOUND}\r\nContent-Length: {len(small)}\r\n\r\n".encode()
                + small)
    assert seen["body"] == f'{{"k": "{REAL}"}}'


def test_query_and_body_bindings_are_checked_and_listed():
    clear = creds.meta(creds.ENV, "K", bind_hosts=["h.example"], bind_query="key")
    assert clear["bind_query"] == "key" and clear["bind_header"] is None and "bind_body" not in clear
    assert creds.meta(creds.ENV, "K", bind_hosts=["h.example"])["bind_header"] == "authorization"
    both = creds.meta(creds.ENV, "K", bind_hosts=["h.example"], bind_header="x-k", bind_body=True)
    assert both["bind_header"] == "x-k" and both["bind_body"] is True
    assert creds.where_text(both) == "header x-k and request bodies"
    for bad in ({"bind_query": "a b"}, {"bind_query": ""}, {"bind_hosts": [], "bind_body": True}):
        with pytest.raises(creds.UsageError):
            creds.meta(creds.ENV, "K", **{"bind_hosts": ["h.example"], **bad})
    proc = subprocess.run(["ab-creds", "set", "K", "--bind-host", "h.example", "--bind-query", "key", "--json"],
                          input=b"v", capture_output=True)
    assert proc.returncode == 0, proc.stderr
    row = json.loads(proc.stdout)
    assert (row["bind_query"], row["bind_body"], row["bind_header"]) == ("key", False, None)


# -- passphrase mode: the proxy needs AGENTSH_PASSPHRASE where it starts --------------------------------------


def test_a_proxy_without_the_passphrase_reports_one_line_and_swaps_nothing(monkeypatch):
    monkeypatch.setenv(creds.PASSPHRASE_ENV, "correct horse")
    store, key = Store(), creds.load_key(create=True)
    assert creds.key_mode() == "passphrase"
    swap.write(store, SANDBOX, key, {"K": swap.entry(swap.placeholder(REAL), REAL, [BOUND], "x-api-key")})
    monkeypatch.delenv(creds.PASSPHRASE_ENV)
    told = []
    swaps = intercept.Swaps(swap.record_path(store, SANDBOX), SANDBOX, report=told.append)
    assert not swaps.bound(BOUND) and not swaps.bound(BOUND)  # nothing swapped; asked twice, told once
    [line] = told
    assert "\n" not in line and "Traceback" not in line
    assert "bound credentials go out as placeholders" in line and "passphrase-protected" in line
    assert line.endswith("set AGENTSH_PASSPHRASE in the environment the sandbox's proxy starts from (that of "
                         "ab-up or ab-exec), then restart it: ab-down && ab-up")
    monkeypatch.setenv(creds.PASSPHRASE_ENV, "wrong")
    told.clear()
    os.utime(swap.record_path(store, SANDBOX), ns=(1, 1))  # a new version of the record: read again
    assert not intercept.Swaps(swap.record_path(store, SANDBOX), SANDBOX, report=told.append).bound(BOUND)
    assert len(told) == 1 and "wrong passphrase" in told[0]


def test_an_exec_handing_over_placeholders_names_a_proxy_started_without_the_passphrase(monkeypatch):
    from agentsh.egress import network
    from agentsh.host.liveness import start_time

    store = Store()
    record = {"sandbox": SANDBOX, "pid": os.getpid(), "pid_start": start_time(os.getpid()), "cache_passphrase": False}
    store.write(network.proxy_rel(SANDBOX), record)
    assert network.passphrase_problem(store, SANDBOX) is None  # no passphrase-protected cache: nothing to say
    monkeypatch.setenv(creds.PASSPHRASE_ENV, "correct horse")
    creds.load_key(create=True)
    line = network.passphrase_problem(store, SANDBOX)
    assert line.startswith(f"the egress proxy of {SANDBOX} was started without AGENTSH_PASSPHRASE")
    assert line.endswith("ab-down && ab-up")
    store.write(network.proxy_rel(SANDBOX), {**record, "cache_passphrase": True})
    assert network.passphrase_problem(store, SANDBOX) is None


# -- OAuth token files and refreshes ----------------------------------------------------------------------------

ACCESS = "sk-ant-oat01-" + "AcC3ss-t0k3n_" * 7
REFRESH = "sk-ant-ort01-" + "R3fr3sh-t0k3n_" * 7
NEW_ACCESS = "sk-ant-oat01-" + "N3wAcc3ss_" * 9
NEW_REFRESH = "sk-ant-ort01-" + "N3wR3fr3sh_" * 8


def _proxy_for(store, sandbox, origin, log_path):
    """An in-process proxy for `sandbox` (its placeholder record and CA), trusting the origin upstream: port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    p = proxy.Proxy(listener, proxy.StaticPolicy(Policy("allow", [f"{BOUND}:{origin.port}"])),
                    audit.Writer(str(log_path)), sandbox,
                    swaps=intercept.Swaps(swap.record_path(store, sandbox), sandbox),
                    contexts=intercept.Contexts(store.root, sandbox, upstream_ca=origin.ca))
    threading.Thread(target=p.serve_forever, daemon=True).start()
    return p, listener.getsockname()[1], ca.ensure(store.root, sandbox)


def _inside(tmp_path, origin, fmt):
    """A project with nothing stored for it, its sandbox's CA, and a proxy taking BOUND as a login's token
    endpoint of format `fmt` (oauth.LOGIN_HOSTS): (project, store, CA path, proxy, its port)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    proj, store = project.find(str(repo)), Store()
    trust = ca.ensure(store.root, proj.sandbox)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    p = proxy.Proxy(listener, proxy.StaticPolicy(Policy("allow", [f"{BOUND}:{origin.port}"])),
                    audit.Writer(str(tmp_path / "log.jsonl")), proj.sandbox,
                    swaps=intercept.Swaps(swap.record_path(store, proj.sandbox), proj.sandbox, logins={BOUND: fmt}),
                    contexts=intercept.Contexts(store.root, proj.sandbox, upstream_ca=origin.ca))
    threading.Thread(target=p.serve_forever, daemon=True).start()
    return proj, store, trust, p, listener.getsockname()[1]


def _login_granted(tmp_path, fmt, login, target):
    repo = tmp_path / "repo"
    repo.mkdir(exist_ok=True)
    proj, store = project.find(str(repo)), Store()
    creds.put(store, "LOGIN", creds.GLOBAL, creds.meta(creds.FILE, target, fmt=fmt, writeback=True,
                                                       bind_hosts=[BOUND]), json.dumps(login).encode())
    creds.grant(store, proj, "LOGIN")
    return proj, store


def _exchange(port, trust, origin, request):
    _, tls = connect(port, BOUND, origin.port, trust)
    tls.sendall(request)
    head, body = read_response(tls)
    tls.close()
    return head, body


def test_an_oauth_login_arrives_with_placeholders_and_a_refresh_round_trip_keeps_it_so(tmp_path, origin):
    from agentsh.creds import oauth

    login = {"claudeAiOauth": {"accessToken": ACCESS, "refreshToken": REFRESH, "expiresAt": 1, "scopes": ["a"]}}
    proj, store = _login_granted(tmp_path, oauth.CLAUDE, login, "/home/agent/.claude/.credentials.json")
    d = delivery.prepare(proj, {"network": {"mode": "allow"}, "credentials": []}, store, print)
    [f] = d.files
    assert ACCESS.encode() not in f.value and REFRESH.encode() not in f.value and f.real == json.dumps(login).encode()
    inside = json.loads(f.value)["claudeAiOauth"]
    assert inside["accessToken"].startswith("sk-ant-oat01-") and inside["refreshToken"].startswith("sk-ant-ort01-")
    assert len(inside["accessToken"]) == len(ACCESS) and inside["expiresAt"] == 1 and inside["scopes"] == ["a"]
    p, port, trust = _proxy_for(store, proj.sandbox, origin, tmp_path / "log.jsonl")
    try:
        host = f"{BOUND}:{origin.port}"
        _exchange(port, trust, origin, f"GET /v1/messages HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer "
                                       f"{inside['accessToken']}\r\nConnection: close\r\n\r\n".encode())
        assert origin.seen[-1]["headers"]["Authorization"] == f"Bearer {ACCESS}"
        origin.server.tokens = {"token_type": "Bearer", "access_token": NEW_ACCESS, "refresh_token": NEW_REFRESH,
                                "expires_in": 28800, "scope": "a"}
        body = json.dumps({"grant_type": "refresh_token", "refresh_token": inside["refreshToken"],
                           "client_id": "c"}).encode()
        head, answer = _exchange(port, trust, origin, (
            f"POST /v1/oauth/token HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Accept-Encoding: gzip, br\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body)
        sent = origin.seen[-1]
        assert json.loads(sent["body"])["refresh_token"] == REFRESH and "Accept-Encoding" not in sent["headers"]
        got = json.loads(answer)
        assert NEW_ACCESS.encode() not in head + answer and NEW_REFRESH.encode() not in head + answer
        assert got["access_token"].startswith("sk-ant-oat01-") and got["refresh_token"].startswith("sk-ant-ort01-")
        assert (got["expires_in"], got["scope"]) == (28800, "a")
        # the cache holds the new real tokens, sealed
        stored = json.loads(creds.reveal(creds.find("LOGIN", proj)))["claudeAiOauth"]
        assert (stored["accessToken"], stored["refreshToken"]) == (NEW_ACCESS, NEW_REFRESH)
        assert abs(stored["expiresAt"] / 1000 - (time.time() + 28800)) < 60 and stored["scopes"] == ["a"]
        assert NEW_REFRESH.encode() not in open(creds.record_path("LOGIN", creds.GLOBAL), "rb").read()
        # the new access placeholder works; the old refresh placeholder no longer does
        _exchange(port, trust, origin, f"GET /v1/messages HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer "
                                       f"{got['access_token']}\r\nConnection: close\r\n\r\n".encode())
        assert origin.seen[-1]["headers"]["Authorization"] == f"Bearer {NEW_ACCESS}"
        _exchange(port, trust, origin, f"GET /v1/messages HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer "
                                       f"{inside['accessToken']}\r\nConnection: close\r\n\r\n".encode())
        # a command still holding the old placeholder keeps working: it stands for the new token now
        assert origin.seen[-1]["headers"]["Authorization"] == f"Bearer {NEW_ACCESS}"
        # the file the agent writes back (new placeholders) is sealed as the real one
        written = json.dumps({"claudeAiOauth": {"accessToken": got["access_token"],
                                                "refreshToken": got["refresh_token"], "expiresAt": 2}}).encode()
        entries = swap.read(store, proj.sandbox, creds.load_key())
        real = json.loads(oauth.real_file(oauth.CLAUDE, written, entries))["claudeAiOauth"]
        assert (real["accessToken"], real["refreshToken"]) == (NEW_ACCESS, NEW_REFRESH)
        # a placeholder copied elsewhere in the file stays one: no value is planted where delivery would not look
        planted = json.dumps({"claudeAiOauth": {"accessToken": "short"}, "x": got["refresh_token"]}).encode()
        assert oauth.real_file(oauth.CLAUDE, planted, entries) == planted
        # the next exec gets the new tokens' placeholders, stable
        again = json.loads(delivery.prepare(proj, {"network": {"mode": "allow"}, "credentials": []}, store,
                                            print).files[0].value)["claudeAiOauth"]
        assert (again["accessToken"], again["refreshToken"]) == (got["access_token"], got["refresh_token"])
    finally:
        p.close()


def test_a_refresh_answer_that_cannot_be_read_never_reaches_the_sandbox(tmp_path, origin):
    from agentsh.creds import oauth

    login = {"tokens": {"access_token": "eyJhbGciOiJSUzI1NiJ9.eyJleHAiOjF9." + "s1g" * 30,
                        "refresh_token": "rt_" + "r3fr3sh" * 8, "id_token": "eyJhbGciOiJSUzI1NiJ9.eyJhIjoxfQ." + "i" * 40}}
    proj, store = _login_granted(tmp_path, oauth.CODEX, login, "/home/agent/.codex/auth.json")
    inside = json.loads(delivery.prepare(proj, {"network": {"mode": "allow"}, "credentials": []}, store,
                                         print).files[0].value)["tokens"]
    assert inside["access_token"].split(".")[:2] == login["tokens"]["access_token"].split(".")[:2]  # claims kept
    assert all(inside[k] != login["tokens"][k] for k in inside)
    p, port, trust = _proxy_for(store, proj.sandbox, origin, tmp_path / "log.jsonl")
    try:
        origin.server.tokens = ["not", "an", "object", "rt_" + "N3w" * 20]
        body = f"grant_type=refresh_token&refresh_token={inside['refresh_token']}".encode()
        head, answer = _exchange(port, trust, origin, (
            f"POST /oauth/token HTTP/1.1\r\nHost: {BOUND}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body)
        assert origin.seen[-1]["body"] == f"grant_type=refresh_token&refresh_token={login['tokens']['refresh_token']}"
        assert head.startswith(b"HTTP/1.1 502") and b"N3w" not in answer and b"not passed on" in answer
        assert json.loads(creds.reveal(creds.find("LOGIN", proj)))["tokens"] == login["tokens"]  # unchanged
        origin.server.tokens = {"accessToken": "rt_" + "N3w" * 20}  # JSON, but not the tokens a refresh answers
        head, answer = _exchange(port, trust, origin, (
            f"POST /oauth/token HTTP/1.1\r\nHost: {BOUND}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body)
        assert head.startswith(b"HTTP/1.1 502") and b"N3w" not in answer and b"no access_token" in answer
    finally:
        p.close()


def test_codex_logins_get_their_refresh_applied():
    from agentsh.creds import oauth

    data = json.dumps({"OPENAI_API_KEY": None, "tokens": {"id_token": "i" * 20, "access_token": "a" * 20,
                                                          "refresh_token": "r" * 20, "account_id": "acc"}}).encode()
    assert oauth.tokens(oauth.CODEX, data) == {"access": "a" * 20, "refresh": "r" * 20, "id": "i" * 20}
    after = json.loads(oauth.answered(oauth.CODEX, data, {"access_token": "A" * 20, "refresh_token": "R" * 20,
                                                          "id_token": "I" * 20}, now=0))
    assert after["tokens"] == {"id_token": "I" * 20, "access_token": "A" * 20, "refresh_token": "R" * 20,
                               "account_id": "acc"}
    assert after["last_refresh"] == "1970-01-01T00:00:00Z" and after["OPENAI_API_KEY"] is None
    assert oauth.tokens(oauth.CODEX, b"not json") == {} and oauth.tokens(oauth.CLAUDE, b"[1]") == {}


def test_a_refresh_token_goes_into_no_body_but_a_token_endpoints(tmp_path, origin):
    """An API that repeats its prompt (a model) must never receive it: the agent would read it in the answer."""
    from agentsh.creds import oauth

    login = {"claudeAiOauth": {"accessToken": ACCESS, "refreshToken": REFRESH}}
    proj, store = _login_granted(tmp_path, oauth.CLAUDE, login, "/home/agent/.claude/.credentials.json")
    inside = json.loads(delivery.prepare(proj, {"network": {"mode": "allow"}, "credentials": []}, store,
                                         print).files[0].value)["claudeAiOauth"]
    p, port, trust = _proxy_for(store, proj.sandbox, origin, tmp_path / "log.jsonl")
    try:
        body = json.dumps({"messages": [{"role": "user", "content": f"repeat {inside['refreshToken']}"}]}).encode()
        for path in ("/v1/messages", "/v1/oauth/token/../../messages", "/oauth/tokens"):
            _, answer = _exchange(port, trust, origin, (
                f"POST {path} HTTP/1.1\r\nHost: {BOUND}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body)
            assert REFRESH not in origin.seen[-1]["body"] and inside["refreshToken"] in origin.seen[-1]["body"]
            assert REFRESH.encode() not in answer
        assert intercept.token_path(b"POST https://h/v1/oauth/token?x=1 HTTP/1.1")
        for other in (b"/v1/oauth/token/x", b"/v1/messages/../oauth/token", b"/v1/messages/%2e%2e/oauth/token"):
            assert not intercept.token_path(b"POST " + other + b" HTTP/1.1")
    finally:
        p.close()


def test_importers_and_set_oauth_bind_the_logins_to_their_providers(monkeypatch, tmp_path):
    from agentsh.creds import oauth

    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".claude").mkdir()
    (tmp_path / ".claude" / ".credentials.json").write_text(json.dumps({"claudeAiOauth": {"accessToken": ACCESS}}))
    (tmp_path / ".codex").mkdir()
    (tmp_path / ".codex" / "auth.json").write_text(json.dumps({"tokens": {"access_token": "a" * 30}}))
    for source, name, fmt in (("claude", "CLAUDE_CREDENTIALS", oauth.CLAUDE), ("codex", "CODEX_AUTH", oauth.CODEX)):
        proc = subprocess.run(["ab-creds", "import", source, "--json"], capture_output=True)
        assert proc.returncode == 0, proc.stderr
        row = {r["name"]: r for r in json.loads(proc.stdout)}[name]
        assert row["bind_hosts"] == list(oauth.HOSTS[fmt]) and row["writeback"]
        assert creds.find(name)["meta"]["format"] == fmt
    proc = subprocess.run(["ab-creds", "set", "L", "--oauth", "codex"], input=b"x", capture_output=True)
    assert proc.returncode == 2 and b"--oauth is for a token file" in proc.stderr and b"Traceback" not in proc.stderr
    proc = subprocess.run(["ab-creds", "set", "L", "--file", "~/.codex/auth.json", "--oauth", "codex", "--bind-host",
                           BOUND], input=b"{}", capture_output=True)
    assert proc.returncode == 0 and creds.find("L")["meta"]["bind_hosts"] == [BOUND]
    assert creds.find("L")["meta"]["format"] == oauth.CODEX


# -- Gemini CLI's and opencode's logins; a refresh racing another command -------------------------------------

G_ACCESS, G_REFRESH = "ya29.a0" + "G00gl3Acc3ss_" * 8, "1//0" + "G00gl3R3fr3sh-" * 6
G_ID = "eyJhbGciOiJSUzI1NiJ9.eyJlbWFpbCI6ImFAYi5jIn0." + "s1gn4tur3" * 5
G_NEW = "ya29.a0" + "N3wG00gl3_" * 9


def _request(method, path, host, headers=(), body=b""):
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n" + "".join(f"{h}\r\n" for h in headers)
    return (head + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


def test_a_gemini_cli_login_is_refreshed_at_googles_token_endpoint_through_placeholders(tmp_path, origin):
    from agentsh.creds import oauth

    login = {"access_token": G_ACCESS, "refresh_token": G_REFRESH, "id_token": G_ID, "token_type": "Bearer",
             "expiry_date": 1, "scope": "openid"}
    proj, store = _login_granted(tmp_path, oauth.GEMINI, login, "/home/agent/.gemini/oauth_creds.json")
    [f] = delivery.prepare(proj, {"network": {"mode": "allow"}, "credentials": []}, store, print).files
    inside = json.loads(f.value)
    for k in ("access_token", "refresh_token", "id_token"):
        assert login[k].encode() not in f.value and len(inside[k]) == len(login[k]) and inside[k] != login[k]
    assert inside["id_token"].split(".")[:2] == G_ID.split(".")[:2] and inside["expiry_date"] == 1
    p, port, trust = _proxy_for(store, proj.sandbox, origin, tmp_path / "log.jsonl")
    try:
        host = f"{BOUND}:{origin.port}"
        _exchange(port, trust, origin, _request("GET", "/v1internal:loadCodeAssist", host,
                                                [f"Authorization: Bearer {inside['access_token']}"]))
        assert origin.seen[-1]["headers"]["Authorization"] == f"Bearer {G_ACCESS}"
        # Google answers a refresh with a new access token (and id token) only: the refresh token stays
        origin.server.tokens = {"access_token": G_NEW, "expires_in": 3599, "token_type": "Bearer", "id_token": G_ID}
        body = f"refresh_token={inside['refresh_token'].replace('/', '%2F')}&grant_type=refresh_token".encode()
        head, answer = _exchange(port, trust, origin, _request(
            "POST", "/token", host, ["Content-Type: application/x-www-form-urlencoded"], body))
        assert origin.seen[-1]["body"] == f"refresh_token={G_REFRESH.replace('/', '%2F')}&grant_type=refresh_token"
        got = json.loads(answer)
        assert head.startswith(b"HTTP/1.1 200") and G_NEW.encode() not in answer and G_ID.encode() not in answer
        assert got["access_token"].startswith("ya29.") and got["expires_in"] == 3599
        stored = json.loads(creds.reveal(creds.find("LOGIN", proj)))
        assert (stored["access_token"], stored["refresh_token"], stored["id_token"]) == (G_NEW, G_REFRESH, G_ID)
        assert abs(stored["expiry_date"] / 1000 - (time.time() + 3599)) < 60
        _exchange(port, trust, origin, _request("GET", "/v1beta/models", host,
                                                [f"Authorization: Bearer {got['access_token']}"]))
        assert origin.seen[-1]["headers"]["Authorization"] == f"Bearer {G_NEW}"
    finally:
        p.close()


OC_ACCESS, OC_REFRESH = "sk-ant-oat01-" + "0pencod3Acc_" * 7, "sk-ant-ort01-" + "0pencod3R3f_" * 7
OC_NEW_ACCESS, OC_NEW_REFRESH = "sk-ant-oat01-" + "0cN3wAcc3ss_" * 7, "sk-ant-ort01-" + "0cN3wR3fr3sh" * 7
OC_OPENAI_KEY = "sk-proj-" + "0p3nA1k3y" * 6
OC_LOGIN = {"anthropic": {"type": "oauth", "access": OC_ACCESS, "refresh": OC_REFRESH, "expires": 1},
            "openai": {"type": "api", "key": OC_OPENAI_KEY}}


def test_opencode_binds_each_providers_token_to_that_providers_hosts_and_header():
    from agentsh.creds import oauth

    data = json.dumps({**OC_LOGIN, "google": {"type": "api", "key": "AIza" + "g" * 35},
                       "mine": {"type": "api", "key": "k" * 30}, "bad": "x"}).encode()
    hosts = oauth.HOSTS[oauth.OPENCODE] + ("llm.example.com",)
    made = oauth.bindings(oauth.OPENCODE, data, "OC", "global", hosts)
    assert set(made) == {"OC#anthropic#access", "OC#anthropic#refresh", "OC#openai#key", "OC#google#key", "OC#mine#key"}
    token, bound, where = made["OC#anthropic#access"]
    assert token == OC_ACCESS and bound == list(oauth.HOSTS[oauth.CLAUDE]) and where["header"] == "authorization"
    assert made["OC#anthropic#refresh"][2]["body"] and made["OC#anthropic#refresh"][2]["oauth"]["provider"] == "anthropic"
    assert made["OC#openai#key"][1] == list(oauth.HOSTS[oauth.CODEX]) and made["OC#openai#key"][2]["header"] == "authorization"
    assert made["OC#google#key"][1] == ["generativelanguage.googleapis.com"]
    assert made["OC#google#key"][2]["header"] == "x-goog-api-key"
    assert made["OC#mine#key"][1] == ["llm.example.com"]  # an unknown provider: the bound hosts no provider has
    assert oauth.bindings(oauth.OPENCODE, data, "OC", "global", oauth.HOSTS[oauth.OPENCODE])["OC#mine#key"][1] == []
    # bound elsewhere on purpose (a local stand-in): every known provider's token goes there
    assert oauth.bindings(oauth.OPENCODE, data, "OC", "global", [BOUND])["OC#openai#key"][1] == [BOUND]
    after = json.loads(oauth.answered(oauth.OPENCODE, data, {"access_token": "A" * 20, "refresh_token": "R" * 20,
                                                             "expires_in": 10}, now=100, provider="anthropic"))
    assert after["anthropic"] == {"type": "oauth", "access": "A" * 20, "refresh": "R" * 20, "expires": 110000}
    assert after["openai"] == OC_LOGIN["openai"]


def test_an_opencode_login_is_refreshed_through_placeholders_and_its_api_key_swapped(tmp_path, origin):
    from agentsh.creds import oauth

    proj, store = _login_granted(tmp_path, oauth.OPENCODE, OC_LOGIN, "/home/agent/.local/share/opencode/auth.json")
    [f] = delivery.prepare(proj, {"network": {"mode": "allow"}, "credentials": []}, store, print).files
    inside = json.loads(f.value)
    assert all(v.encode() not in f.value for v in (OC_ACCESS, OC_REFRESH, OC_OPENAI_KEY))
    assert inside["openai"]["key"].startswith("sk-proj-") and inside["anthropic"]["expires"] == 1
    p, port, trust = _proxy_for(store, proj.sandbox, origin, tmp_path / "log.jsonl")
    try:
        host = f"{BOUND}:{origin.port}"
        _exchange(port, trust, origin, _request("GET", "/v1/models", host,
                                                [f"Authorization: Bearer {inside['openai']['key']}"]))
        assert origin.seen[-1]["headers"]["Authorization"] == f"Bearer {OC_OPENAI_KEY}"
        origin.server.tokens = {"access_token": OC_NEW_ACCESS, "refresh_token": OC_NEW_REFRESH, "expires_in": 3600}
        body = json.dumps({"grant_type": "refresh_token", "refresh_token": inside["anthropic"]["refresh"]}).encode()
        _, answer = _exchange(port, trust, origin, _request("POST", "/v1/oauth/token", host,
                                                            ["Content-Type: application/json"], body))
        assert json.loads(origin.seen[-1]["body"])["refresh_token"] == OC_REFRESH
        got = json.loads(answer)
        assert OC_NEW_ACCESS.encode() not in answer and OC_NEW_REFRESH.encode() not in answer
        stored = json.loads(creds.reveal(creds.find("LOGIN", proj)))
        assert (stored["anthropic"]["access"], stored["anthropic"]["refresh"]) == (OC_NEW_ACCESS, OC_NEW_REFRESH)
        assert stored["openai"] == OC_LOGIN["openai"]
        # opencode writes the answer's (placeholder) tokens into its file: write-back seals the real ones
        written = json.dumps({**inside, "anthropic": {"type": "oauth", "access": got["access_token"],
                                                      "refresh": got["refresh_token"], "expires": 5}}).encode()
        real = json.loads(oauth.real_file(oauth.OPENCODE, written, swap.read(store, proj.sandbox, creds.load_key())))
        assert real["anthropic"] == {"type": "oauth", "access": OC_NEW_ACCESS, "refresh": OC_NEW_REFRESH, "expires": 5}
        assert real["openai"]["key"] == OC_OPENAI_KEY
    finally:
        p.close()


def test_a_refresh_racing_another_commands_delivery_loses_no_token(tmp_path, origin):
    """An ab-exec reading the login while the proxy seals a refresh: never the old tokens over the new ones."""
    from agentsh.creds import oauth

    login = {"claudeAiOauth": {"accessToken": ACCESS, "refreshToken": REFRESH}}
    proj, store = _login_granted(tmp_path, oauth.CLAUDE, login, "/home/agent/.claude/.credentials.json")
    cfg = {"network": {"mode": "allow"}, "credentials": []}
    first = json.loads(delivery.prepare(proj, cfg, store, print).files[0].value)["claudeAiOauth"]
    key = creds.load_key()
    meta = swap.read(store, proj.sandbox, key)["LOGIN#refresh"]["oauth"]
    # the refresh lands between the second command's first read of the login and its placeholders
    real_find, fired = creds.find, []

    def find(name, project=None):
        record = real_find(name, project)
        if name == "LOGIN" and not fired:
            fired.append(oauth.refreshed(store, proj.sandbox, key, meta,
                                         {"access_token": NEW_ACCESS, "refresh_token": NEW_REFRESH}))
        return record

    creds.find = find
    try:
        second = delivery.prepare(proj, cfg, store, print)
    finally:
        creds.find = real_find
    entries = swap.read(store, proj.sandbox, key)
    assert fired and (entries["LOGIN#access"]["value"], entries["LOGIN#refresh"]["value"]) == (NEW_ACCESS, NEW_REFRESH)
    assert NEW_ACCESS.encode() not in second.files[0].value and second.files[0].real != json.dumps(login).encode()
    seen = json.loads(second.files[0].value)["claudeAiOauth"]
    assert seen["accessToken"] == fired[0][NEW_ACCESS]  # the second command got the new login's placeholders
    # the first command's file (old placeholders) read back: the new tokens, not the old ones nor a placeholder
    stale = json.dumps({"claudeAiOauth": {"accessToken": first["accessToken"], "refreshToken": first["refreshToken"],
                                          "expiresAt": 3}}).encode()
    back = json.loads(oauth.real_file(oauth.CLAUDE, stale, entries))["claudeAiOauth"]
    assert (back["accessToken"], back["refreshToken"]) == (NEW_ACCESS, NEW_REFRESH)
    p, port, trust = _proxy_for(store, proj.sandbox, origin, tmp_path / "log.jsonl")
    try:  # and the first command's old placeholders still work, for the new token
        _exchange(port, trust, origin, _request("GET", "/v1/messages", f"{BOUND}:{origin.port}",
                                                [f"Authorization: Bearer {first['accessToken']}"]))
        assert origin.seen[-1]["headers"]["Authorization"] == f"Bearer {NEW_ACCESS}"
    finally:
        p.close()


def test_importers_bind_gemini_clis_and_opencodes_logins(monkeypatch, tmp_path):
    from agentsh.creds import oauth

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    (tmp_path / ".gemini").mkdir()
    (tmp_path / ".gemini" / "oauth_creds.json").write_text(json.dumps({"access_token": G_ACCESS}))
    (tmp_path / "data" / "opencode").mkdir(parents=True)
    (tmp_path / "data" / "opencode" / "auth.json").write_text(json.dumps(OC_LOGIN))
    for source, name, fmt, hosts in (("gemini", "GEMINI_OAUTH", oauth.GEMINI, oauth.HOSTS[oauth.GEMINI]),
                                     ("opencode", "OPENCODE_AUTH", oauth.OPENCODE,
                                      oauth.HOSTS[oauth.CLAUDE] + oauth.HOSTS[oauth.CODEX])):
        proc = subprocess.run(["ab-creds", "import", source, "--json"], capture_output=True)
        assert proc.returncode == 0, proc.stderr
        row = {r["name"]: r for r in json.loads(proc.stdout)}[name]
        assert row["bind_hosts"] == list(hosts) and row["writeback"]
        assert creds.find(name)["meta"]["format"] == fmt
    assert creds.find("OPENCODE_AUTH")["meta"]["target"] == "/home/agent/.local/share/opencode/auth.json"


def test_an_opencode_provider_bound_to_no_host_gets_a_placeholder_and_a_notice(tmp_path):
    from agentsh.creds import oauth

    repo = tmp_path / "repo"
    repo.mkdir()
    proj, store = project.find(str(repo)), Store()
    login = {**OC_LOGIN, "mine": {"type": "api", "key": "m1n3" * 8}}  # a provider agentsh does not know
    creds.put(store, "LOGIN", creds.GLOBAL, creds.meta(creds.FILE, "/home/agent/.local/share/opencode/auth.json",
                                                       fmt=oauth.OPENCODE, writeback=True,
                                                       bind_hosts=oauth.HOSTS[oauth.OPENCODE]),
              json.dumps(login).encode())
    creds.grant(store, proj, "LOGIN")
    notes = []
    [f] = delivery.prepare(proj, {"network": {"mode": "allow"}, "credentials": []}, store, notes.append).files
    [note] = notes
    assert "the token of mine is bound to no host" in note and "--bind-host" in note
    assert b"m1n3m1n3" not in f.value and json.loads(f.value)["mine"]["key"] != login["mine"]["key"]
    assert swap.read(store, proj.sandbox, creds.load_key())["LOGIN#mine#key"]["hosts"] == []


# -- a login made inside the sandbox ---------------------------------------------------------------------------


def test_a_login_made_inside_the_sandbox_gets_placeholders_and_its_tokens_stay_on_the_host(tmp_path, origin):
    """The agent logs in inside (no credential stored or granted): the token endpoint's answer reaches it with
    placeholders, the real tokens stay in the sandbox's sealed record, its API calls and refreshes are swapped."""
    from agentsh.creds import oauth

    proj, store, trust, p, port = _inside(tmp_path, origin, oauth.CLAUDE)
    try:
        host = f"{BOUND}:{origin.port}"
        origin.server.tokens = {"token_type": "Bearer", "access_token": ACCESS, "refresh_token": REFRESH,
                                "expires_in": 28800, "scope": "user:inference", "account": {"uuid": "u"}}
        code = json.dumps({"grant_type": "authorization_code", "code": "c0de", "code_verifier": "v",
                           "client_id": "c", "redirect_uri": "https://x/callback"}).encode()
        head, answer = _exchange(port, trust, origin, _request(
            "POST", "/v1/oauth/token", host, ["Content-Type: application/json", "Accept-Encoding: gzip"], code))
        assert json.loads(origin.seen[-1]["body"]) == json.loads(code)  # the login itself passes unchanged
        assert "Accept-Encoding" not in origin.seen[-1]["headers"]
        got = json.loads(answer)
        assert head.startswith(b"HTTP/1.1 200") and ACCESS.encode() not in answer and REFRESH.encode() not in answer
        assert got["access_token"].startswith("sk-ant-oat01-") and len(got["access_token"]) == len(ACCESS)
        assert got["refresh_token"].startswith("sk-ant-ort01-") and got["account"] == {"uuid": "u"}
        assert head.count(b"Connection: close") == 1  # the next request comes on a connection that knows them
        assert creds.find("login:claude", proj) is None  # no credential is made: the tokens are this sandbox's
        raw = open(swap.record_path(store, proj.sandbox), "rb").read()
        assert ACCESS.encode() not in raw and REFRESH.encode() not in raw  # sealed
        # the placeholder works toward the provider
        _exchange(port, trust, origin, _request("GET", "/v1/messages", host,
                                                [f"Authorization: Bearer {got['access_token']}"]))
        assert origin.seen[-1]["headers"]["Authorization"] == f"Bearer {ACCESS}"
        # a later exec's delivery of another credential keeps the login's entries
        creds.put(store, "OTHER", creds.GLOBAL, creds.meta(creds.ENV, "OTHER"), b"v" * 20)
        creds.grant(store, proj, "OTHER")
        delivery.prepare(proj, {"network": {"mode": "allow"}, "credentials": []}, store, print)
        assert {n for n in swap.read(store, proj.sandbox, creds.load_key()) if n.startswith("login:claude#")} \
            == {"login:claude#access", "login:claude#refresh"}
        # a refresh through the placeholder: the real refresh token out, new placeholders back
        origin.server.tokens = {"access_token": NEW_ACCESS, "refresh_token": NEW_REFRESH, "expires_in": 10}
        body = json.dumps({"grant_type": "refresh_token", "refresh_token": got["refresh_token"]}).encode()
        head, answer = _exchange(port, trust, origin, _request("POST", "/v1/oauth/token", host,
                                                               ["Content-Type: application/json"], body))
        assert json.loads(origin.seen[-1]["body"])["refresh_token"] == REFRESH
        again = json.loads(answer)
        assert NEW_ACCESS.encode() not in answer and NEW_REFRESH.encode() not in answer
        _exchange(port, trust, origin, _request("GET", "/v1/messages", host,
                                                [f"Authorization: Bearer {again['access_token']}"]))
        assert origin.seen[-1]["headers"]["Authorization"] == f"Bearer {NEW_ACCESS}"
        # a second login (another account) replaces the first
        origin.server.tokens = {"access_token": "sk-ant-oat01-" + "S3c0nd_" * 12, "refresh_token": REFRESH}
        head, answer = _exchange(port, trust, origin, _request("POST", "/v1/oauth/token", host,
                                                               ["Content-Type: application/json"], code))
        assert b"S3c0nd_" not in answer and head.startswith(b"HTTP/1.1 200")
    finally:
        p.close()


@pytest.mark.parametrize("tokens, passed", [
    ({"error": "invalid_grant"}, True),  # JSON without tokens: nothing to hide, passed on
    ("not json at all", False),  # (what is not a JSON object could hide a token: refused)
    ([{"access_token": "sk-ant-oat01-" + "L1st3d_" * 10}], False),
    ({"data": {"access_token": "sk-ant-oat01-" + "N3st3d_" * 10}}, False),
])
def test_a_login_endpoint_answer_without_tokens_passes_unchanged(tmp_path, origin, tokens, passed):
    from agentsh.creds import oauth

    proj, store, trust, p, port = _inside(tmp_path, origin, oauth.CODEX)
    try:
        origin.server.tokens = tokens
        head, answer = _exchange(port, trust, origin, _request("POST", "/oauth/token", f"{BOUND}:{origin.port}",
                                                               ["Content-Type: application/json"], b"{}"))
        if passed:
            assert head.startswith(b"HTTP/1.1 200") and json.loads(answer) == tokens
        else:
            assert head.startswith(b"HTTP/1.1 502") and b"3st3d_" not in answer and b"L1st3d_" not in answer
            assert b"not passed on" in answer
        assert not os.path.exists(swap.record_path(store, proj.sandbox))
    finally:
        p.close()


def test_a_login_whose_tokens_cannot_be_kept_never_reaches_the_sandbox(tmp_path, origin, monkeypatch):
    """A passphrase-protected cache the proxy cannot open: the login answer is refused, not passed on."""
    from agentsh.creds import oauth

    monkeypatch.setenv(creds.PASSPHRASE_ENV, "pw")
    creds.load_key(create=True)
    monkeypatch.delenv(creds.PASSPHRASE_ENV)
    proj, store, trust, p, port = _inside(tmp_path, origin, oauth.CLAUDE)
    try:
        origin.server.tokens = {"access_token": ACCESS, "refresh_token": REFRESH}
        head, answer = _exchange(port, trust, origin, _request("POST", "/v1/oauth/token", f"{BOUND}:{origin.port}",
                                                               ["Content-Type: application/json"], b"{}"))
        assert head.startswith(b"HTTP/1.1 502") and ACCESS.encode() not in answer and REFRESH.encode() not in answer
        assert b"passphrase" in answer
    finally:
        p.close()


def test_login_hosts_are_the_providers_plus_the_hosts_own_additions():
    from agentsh.creds import oauth

    assert oauth.login_hosts("")["console.anthropic.com"] == oauth.CLAUDE
    assert oauth.login_hosts("")["auth.openai.com"] == oauth.CODEX
    made = oauth.login_hosts(" gw.example.com=codex, bad, x=unknown,=claude,LLM.example=claude")
    assert made["gw.example.com"] == oauth.CODEX and made["llm.example"] == oauth.CLAUDE
    assert "bad" not in made and "x" not in made and "" not in made


def test_a_login_made_inside_over_a_stored_one_is_what_write_back_keeps(tmp_path):
    """The agent logs in again inside (its stored login's file holds the new placeholders): write-back turns them
    into the new tokens, at their own paths only, and only for that provider's login."""
    from agentsh.creds import oauth

    store, key = Store(), creds.load_key(create=True)
    sandbox = "ab-relogin"
    swap.write(store, sandbox, key, {f"LOGIN#{role}": swap.entry(swap.placeholder(v), v, [BOUND],
                                                                 oauth.where(role, "LOGIN", "global", oauth.CLAUDE))
                                     for role, v in (("access", ACCESS), ("refresh", REFRESH))})
    pairs = oauth.refreshed(store, sandbox, key, oauth.captured_meta(oauth.CLAUDE, BOUND),
                            {"access_token": NEW_ACCESS, "refresh_token": NEW_REFRESH})
    codex = oauth.refreshed(store, sandbox, key, oauth.captured_meta(oauth.CODEX, BOUND),
                            {"access_token": "eyJhbGciOiJSUzI1NiJ9.eyJhIjoxfQ." + "c0d3x" * 10})
    entries = swap.read(store, sandbox, key)
    assert {n for n in entries if swap.captured(entries[n])} == {"login:claude#access", "login:claude#refresh",
                                                                 "login:codex#access"}
    written = json.dumps({"claudeAiOauth": {"accessToken": pairs[NEW_ACCESS], "refreshToken": pairs[NEW_REFRESH]},
                          "elsewhere": pairs[NEW_ACCESS]}).encode()
    real = json.loads(oauth.real_file(oauth.CLAUDE, written, entries))
    assert real["claudeAiOauth"] == {"accessToken": NEW_ACCESS, "refreshToken": NEW_REFRESH}
    assert real["elsewhere"] == pairs[NEW_ACCESS]  # not at a token's path: stays a placeholder
    # Codex's placeholder in Claude's file is not Claude's login: it stays
    [codex_ph] = codex.values()
    crossed = json.dumps({"claudeAiOauth": {"accessToken": codex_ph}}).encode()
    assert oauth.real_file(oauth.CLAUDE, crossed, entries) == crossed
    # opencode's anthropic entry takes the Claude login made inside
    oc = json.dumps({"anthropic": {"type": "oauth", "access": pairs[NEW_ACCESS], "refresh": pairs[NEW_REFRESH],
                                   "expires": 1}}).encode()
    assert json.loads(oauth.real_file(oauth.OPENCODE, oc, entries))["anthropic"]["access"] == NEW_ACCESS


COP_GITHUB = "gho_" + "G1tHubL0g1n" * 3 + "xyz"
COP_TOKEN = ("tid=0123abcd;exp=1700000000;sku=copilot_for_individuals;proxy-ep=proxy.individual.githubcopilot.com;"
             "8kp=1:" + "a1b2c3d4" * 8)
COP_NEW = COP_TOKEN.replace("exp=1700000000", "exp=1900000000").replace("a1b2c3d4", "99ff88ee")


def test_opencodes_github_copilot_login_is_exchanged_through_placeholders(tmp_path, origin):
    """opencode's Copilot login: the GitHub token (refresh) goes in a header to api.github.com's exchange, whose
    answer's `token` (the Copilot API token, fields a client reads kept in its placeholder) is swapped back."""
    from agentsh.creds import oauth

    hosts = oauth.HOSTS[oauth.OPENCODE]
    login = {"github-copilot": {"type": "oauth", "refresh": COP_GITHUB, "access": COP_TOKEN, "expires": 1}}
    made = oauth.bindings(oauth.OPENCODE, json.dumps(login).encode(), "OC", "global", hosts)
    assert made["OC#github-copilot#refresh"][1] == ["api.github.com"]
    assert made["OC#github-copilot#refresh"][2]["header"] == "authorization"  # a header, not a body
    assert "api.github.com" not in made["OC#github-copilot#access"][1]
    assert "api.individual.githubcopilot.com" in made["OC#github-copilot#access"][1]
    stand_in = swap.placeholder(COP_TOKEN)
    assert stand_in.rsplit(":", 1)[0] == COP_TOKEN.rsplit(":", 1)[0] and stand_in != COP_TOKEN
    proj, store = _login_granted(tmp_path, oauth.OPENCODE, login, "/home/agent/.local/share/opencode/auth.json")
    [f] = delivery.prepare(proj, {"network": {"mode": "allow"}, "credentials": []}, store, print).files
    inside = json.loads(f.value)["github-copilot"]
    assert COP_GITHUB.encode() not in f.value and COP_TOKEN.encode() not in f.value
    assert inside["refresh"].startswith("gho_") and "proxy-ep=proxy.individual" in inside["access"]
    p, port, trust = _proxy_for(store, proj.sandbox, origin, tmp_path / "log.jsonl")
    try:
        host = f"{BOUND}:{origin.port}"
        origin.server.tokens = {"token": COP_NEW, "expires_at": 1900000000, "refresh_in": 1500,
                                "endpoints": {"api": "https://api.individual.githubcopilot.com"}}
        head, answer = _exchange(port, trust, origin, _request("GET", "/copilot_internal/v2/token", host,
                                                               [f"Authorization: token {inside['refresh']}"]))
        assert origin.seen[-1]["headers"]["Authorization"] == f"token {COP_GITHUB}"
        got = json.loads(answer)
        assert head.startswith(b"HTTP/1.1 200") and COP_NEW.encode() not in answer
        assert got["token"].rsplit(":", 1)[0] == COP_NEW.rsplit(":", 1)[0] and got["refresh_in"] == 1500
        stored = json.loads(creds.reveal(creds.find("LOGIN", proj)))["github-copilot"]
        assert (stored["access"], stored["refresh"], stored["expires"]) == (COP_NEW, COP_GITHUB, 1900000000000)
        _exchange(port, trust, origin, _request("POST", "/chat/completions", host,
                                                [f"Authorization: Bearer {got['token']}"]))
        assert origin.seen[-1]["headers"]["Authorization"] == f"Bearer {COP_NEW}"
    finally:
        p.close()


def test_codex_exchanging_its_id_token_for_an_api_key_keeps_the_login_apart(tmp_path, origin):
    """Codex logs in (authorization_code), then exchanges the id token for an API key (token-exchange): the key
    is kept apart, so the login's access placeholder still stands for the login's access token."""
    from agentsh.creds import oauth

    proj, store, trust, p, port = _inside(tmp_path, origin, oauth.CODEX)
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJlbWFpbCI6ImFAYi5jIn0."
    access, ident, refresh = jwt + "acc3ss" * 8, jwt + "1d3nt" * 9, "rt_" + "R3fr" * 10
    api_key = "sk-proj-" + "3xch4ng3d" * 6
    try:
        host = f"{BOUND}:{origin.port}"
        origin.server.tokens = {"access_token": access, "id_token": ident, "refresh_token": refresh}
        _, answer = _exchange(port, trust, origin, _request(
            "POST", "/oauth/token", host, ["Content-Type: application/x-www-form-urlencoded"],
            b"grant_type=authorization_code&code=c0de&code_verifier=v"))
        login = json.loads(answer)
        assert all(v.encode() not in answer for v in (access, ident, refresh))
        assert login["id_token"].split(".")[:2] == ident.split(".")[:2]  # claims kept: Codex reads them
        origin.server.tokens = {"access_token": api_key}
        body = ("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&requested_token=openai-api-key"
                f"&subject_token={login['id_token']}").encode()
        _, answer = _exchange(port, trust, origin, _request(
            "POST", "/oauth/token", host, ["Content-Type: application/x-www-form-urlencoded"], body))
        assert f"subject_token={ident}" in origin.seen[-1]["body"]  # the real id token went to the endpoint
        key_ph = json.loads(answer)["access_token"]
        assert api_key.encode() not in answer and key_ph.startswith("sk-proj-")
        entries = swap.read(store, proj.sandbox, creds.load_key())
        assert entries["login:codex#access"]["value"] == access
        assert entries["login:codex:token-exchange#access"]["value"] == api_key
        for ph, real in ((login["access_token"], access), (key_ph, api_key)):
            _exchange(port, trust, origin, _request("GET", "/v1/models", host, [f"Authorization: Bearer {ph}"]))
            assert origin.seen[-1]["headers"]["Authorization"] == f"Bearer {real}"
    finally:
        p.close()


def test_a_claude_login_answer_with_an_id_token_shows_none_of_its_tokens(tmp_path, origin):
    from agentsh.creds import oauth

    proj, store, trust, p, port = _inside(tmp_path, origin, oauth.CLAUDE)
    ident = "eyJhbGciOiJSUzI1NiJ9.eyJhIjoxfQ." + "s1gn" * 12
    try:
        origin.server.tokens = {"access_token": ACCESS, "refresh_token": REFRESH, "id_token": ident}
        head, answer = _exchange(port, trust, origin, _request("POST", "/v1/oauth/token", f"{BOUND}:{origin.port}",
                                                               ["Content-Type: application/json"],
                                                               b'{"grant_type": "authorization_code"}'))
        assert head.startswith(b"HTTP/1.1 200")
        assert all(v.encode() not in answer for v in (ACCESS, REFRESH, ident))
    finally:
        p.close()


@pytest.mark.parametrize("line", [b"0x10\r\n", b"+10\r\n", b"1_0\r\n", b"-1\r\n", b"\r\n", b"g\r\n", b"1" * 17 + b"\r\n"])
def test_a_chunk_size_is_hex_digits_only(line):
    """What int(x, 16) would also take ("0x10", "+10", "1_0") another parser reads otherwise: refused."""
    with pytest.raises(ValueError):
        intercept._chunk_size(line)
    assert intercept._chunk_size(b"1aF;ext=1\r\n") == 0x1AF and intercept._chunk_size(b"0\r\n") == 0
