"""The egress proxy in-process, against a local HTTP server: decisions, CONNECT, reload, audit log."""

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from agentsh.base.state import Store
from agentsh.egress import audit, network, proxy
from agentsh.host import project
from agentsh.policy.rules import Policy
from tests.conftest import git_init
from tests.egress_origin import exchange


class Hello(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = f"hello {self.path} {self.headers.get('Connection')} {self.headers.get('Proxy-Connection')}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def origin():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def start_proxy(policy_source, log_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    log = audit.Writer(str(log_path))
    p = proxy.Proxy(listener, policy_source, log, "ab-test-sandbox")
    threading.Thread(target=p.serve_forever, daemon=True).start()
    return p, listener.getsockname()[1], log


def entries(log_path, count, tries=100):
    for _ in range(tries):  # allowed connections are logged as they close
        found = audit.read(str(log_path))
        if len(found) >= count:
            return found
        time.sleep(0.02)
    return audit.read(str(log_path))


def test_plain_http_allowed_rewritten_and_logged(origin, tmp_path):
    log_path = tmp_path / "log.jsonl"
    p, port, _ = start_proxy(proxy.StaticPolicy(Policy("allow", [f"host.containers.internal:{origin}"])), log_path)
    reply = exchange(port, f"GET http://host.containers.internal:{origin}/x?y=1 HTTP/1.1\r\n"
                           f"Host: host.containers.internal:{origin}\r\nProxy-Connection: keep-alive\r\n\r\n".encode())
    assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"hello /x?y=1 close None")
    [entry] = entries(log_path, 1)
    assert entry["allowed"] and entry["host"] == "host.containers.internal" and entry["port"] == origin
    assert entry["method"] == "GET" and entry["sandbox"] == "ab-test-sandbox"
    assert entry["bytes_received"] == len(reply) and entry["bytes_sent"] > 0
    p.close()


def test_denied_hosts_get_403_and_are_never_resolved(origin, tmp_path, monkeypatch):
    looked_up = []
    real = socket.getaddrinfo

    def spy(host, *args, **kw):
        if host != "127.0.0.1":  # the test's own connections to the proxy
            looked_up.append(host)
        return real(host, *args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", spy)
    log_path = tmp_path / "log.jsonl"
    p, port, _ = start_proxy(proxy.StaticPolicy(Policy("allow", ["allowed.example"])), log_path)
    reply = exchange(port, b"CONNECT exfil.attacker.example:443 HTTP/1.1\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 403") and b"ab-net allow exfil.attacker.example" in reply
    reply = exchange(port, f"GET http://127.0.0.1:{origin}/ HTTP/1.1\r\n\r\n".encode())
    assert reply.startswith(b"HTTP/1.1 403") and b"IP address" in reply
    assert looked_up == []
    denied = entries(log_path, 2)
    assert [(e["host"], e["allowed"]) for e in denied] == [("exfil.attacker.example", False), ("127.0.0.1", False)]
    p.close()


def test_connect_tunnels_bytes_both_ways(origin, tmp_path):
    log_path = tmp_path / "log.jsonl"
    p, port, _ = start_proxy(proxy.StaticPolicy(Policy("allow", [f"host.containers.internal:{origin}"])), log_path)
    reply = exchange(port, f"CONNECT host.containers.internal:{origin} HTTP/1.1\r\n\r\n"
                           "GET /tunnel HTTP/1.0\r\n\r\n".encode())
    head, _, rest = reply.partition(b"\r\n\r\n")
    assert head == b"HTTP/1.1 200 Connection established" and rest.endswith(b"hello /tunnel None None")
    [entry] = entries(log_path, 1)
    assert entry["method"] == "CONNECT" and entry["bytes_sent"] == len(b"GET /tunnel HTTP/1.0\r\n\r\n")
    p.close()


def _raw_origin(serve):
    """A TCP server on loopback running serve(conn) for one connection; (port, thread)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def run():
        conn, _ = srv.accept()
        with conn:
            serve(conn)
        srv.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return srv.getsockname()[1], t


def _tunnel(port, origin):
    c = socket.create_connection(("127.0.0.1", port), timeout=30)
    c.sendall(f"CONNECT 127.0.0.1:{origin} HTTP/1.1\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += c.recv(1)
    assert head.startswith(b"HTTP/1.1 200")
    return c


def _read_all(sock):
    got = bytearray()
    while chunk := sock.recv(1 << 20):
        got += chunk
    return bytes(got)


@pytest.mark.parametrize("splice", [True, False], ids=["spliced", "copied"])
def test_a_tunnel_carries_both_directions_at_once_and_half_closes(tmp_path, monkeypatch, splice):
    """Both peers send 8 MB at the same time through the relay; the client half-closes
    and the origin still sends after seeing its EOF: every byte arrives, in order, and is counted."""
    if not splice:
        monkeypatch.setattr(proxy, "_SPLICE", False)
    size = 8 << 20
    up, down = bytes(range(256)) * (size // 256), bytes(range(255, -1, -1)) * (size // 256)
    seen = {}

    def serve(conn):
        reader = threading.Thread(target=lambda: seen.update(got=_read_all(conn)))
        reader.start()
        conn.sendall(down)  # while the client is still sending its 8 MB
        reader.join(30)  # the client's EOF came through the proxy...
        conn.sendall(b"after your EOF")  # ...and this direction still works
        conn.shutdown(socket.SHUT_WR)

    origin, served = _raw_origin(serve)
    log_path = tmp_path / "log.jsonl"
    p, port, _ = start_proxy(proxy.StaticPolicy(Policy("allow", [f"127.0.0.1:{origin}"])), log_path)
    c = _tunnel(port, origin)
    received = {}
    reader = threading.Thread(target=lambda: received.update(got=_read_all(c)))
    reader.start()
    c.sendall(up)
    c.shutdown(socket.SHUT_WR)
    reader.join(30)
    served.join(30)
    c.close()
    assert seen["got"] == up
    assert received["got"] == down + b"after your EOF"
    [entry] = entries(log_path, 1)
    assert entry["bytes_sent"] == size and entry["bytes_received"] == size + len(b"after your EOF")
    p.close()


def test_a_peer_that_resets_ends_the_tunnel_and_it_is_logged(tmp_path):
    def serve(conn):
        conn.recv(5)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")

    origin, served = _raw_origin(serve)
    log_path = tmp_path / "log.jsonl"
    p, port, _ = start_proxy(proxy.StaticPolicy(Policy("allow", [f"127.0.0.1:{origin}"])), log_path)
    c = _tunnel(port, origin)
    c.sendall(b"hello")
    served.join(30)
    try:
        assert c.recv(100) == b""
    except ConnectionResetError:
        pass
    c.close()
    [entry] = entries(log_path, 1)
    assert entry["allowed"] and entry["bytes_sent"] == 5 and entry["bytes_received"] == 0
    p.close()


def test_learn_mode_refuses_the_hosts_loopback_unless_listed(origin, tmp_path):
    log_path = tmp_path / "log.jsonl"
    p, port, _ = start_proxy(proxy.StaticPolicy(Policy("learn", [])), log_path)
    reply = exchange(port, f"GET http://localhost:{origin}/ HTTP/1.1\r\n\r\n".encode())
    assert reply.startswith(b"HTTP/1.1 403") and b"loopback" in reply
    p.close()
    p, port, _ = start_proxy(proxy.StaticPolicy(Policy("learn", [f"localhost:{origin}"])), log_path)
    assert exchange(port, f"GET http://localhost:{origin}/ HTTP/1.1\r\n\r\n".encode()).startswith(b"HTTP/1.1 200")
    p.close()


def test_bad_requests_are_400(tmp_path):
    p, port, _ = start_proxy(proxy.StaticPolicy(Policy("learn", [])), tmp_path / "log.jsonl")
    assert exchange(port, b"GET /relative HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert exchange(port, b"GET https://x.example/ HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert exchange(port, b"garbage\r\n\r\n").startswith(b"HTTP/1.1 400")
    p.close()


def test_record_policy_sees_ab_net_allow_on_the_next_request(origin, tmp_path):
    proj = project.find(str(git_init(tmp_path / "repo")))
    store = Store()
    rel = network.proxy_rel(proj.sandbox)
    store.write(rel, {"mode": "allow", "allow": ["@github"], "extra": network.extra_rel(proj)})
    source = proxy.RecordPolicy(store, rel)
    p, port, _ = start_proxy(source, tmp_path / "log.jsonl")
    request = f"GET http://host.docker.internal:{origin}/ HTTP/1.1\r\n\r\n".encode()
    assert exchange(port, request).startswith(b"HTTP/1.1 403")
    network.allow_host(store, proj, f"host.docker.internal:{origin}")
    assert exchange(port, request).startswith(b"HTTP/1.1 200")
    assert source.current() is source.current()  # unchanged records: no re-read
    p.close()


def test_audit_rotation_follow_and_torn_lines(tmp_path):
    path = str(tmp_path / "net" / "log.jsonl")
    writer = audit.Writer(path, max_bytes=400)
    for i in range(6):
        writer.write({"host": f"h{i}.example", "port": 443, "allowed": i % 2 == 0})
    with open(path, "ab") as f:
        f.write(b'{"host": "torn')
    hosts = [e["host"] for e in audit.read(path)]
    assert hosts[-1] == "h5.example" and len(hosts) >= 3 and "torn" not in " ".join(hosts)
    denied = [e["host"] for e in audit.read(path, denied_only=True)]
    assert denied and denied == [h for h in hosts if int(h[1]) % 2]  # the odd ones, every one of them
    got = []
    stop = threading.Event()

    def collect():
        for entry in audit.follow(path, poll=0.01, stop=stop.is_set):
            got.append(entry["host"])
            stop.set()

    t = threading.Thread(target=collect)
    t.start()
    time.sleep(0.05)
    with open(path, "ab") as f:
        f.write(b'"}\n')  # completes the torn line (still not an entry)
    writer.write({"host": "later.example", "port": 80, "allowed": True})
    t.join(5)
    stop.set()
    assert got == ["later.example"]
    line = audit.format_entry({"time": "T", "host": "a.example", "port": 443, "allowed": False, "reason": "nope"})
    assert "DENY" in line and "a.example:443" in line and json.dumps(line)


def test_workers_reuse_threads_and_keep_at_most_idle_max():
    """A finished task's thread takes the next one; past idle_max idle threads, the extra ones exit."""
    workers = proxy.Workers(idle_max=2)
    before = threading.active_count()
    seen, gate, done = [], threading.Event(), threading.Semaphore(0)

    def task(i):
        seen.append((i, threading.get_ident()))
        gate.wait(10)
        done.release()

    for i in range(5):
        workers.run(task, i)
    assert threading.active_count() == before + 5  # five at once: five threads
    gate.set()
    for _ in range(5):
        assert done.acquire(timeout=10)
    for _ in range(100):
        if threading.active_count() == before + 2 and len(workers._idle) == 2:
            break
        time.sleep(0.02)
    assert threading.active_count() == before + 2
    first_threads = {ident for _, ident in seen}
    for i in range(5, 7):
        workers.run(task, i)
    for _ in range(2):
        assert done.acquire(timeout=10)
    assert {ident for i, ident in seen if i >= 5} <= first_threads  # the idle ones were reused
    assert threading.active_count() == before + 2


def test_a_failing_task_leaves_its_worker_usable():
    workers = proxy.Workers(idle_max=1)
    ran = threading.Event()
    workers.run(lambda: 1 / 0)
    for _ in range(100):
        if workers._idle:
            break
        time.sleep(0.02)
    workers.run(ran.set)
    assert ran.wait(10)
