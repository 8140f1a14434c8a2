#!/usr/bin/env python3
"""What adding a bound credential costs: an intercepted connection against a plain tunnel and direct, one run.

    .venv/bin/python bench/bench_intercept.py [--rounds N] [--json]

No containers: the proxy (its real Proxy class and egress.intercept) and a
local HTTPS server with its own test CA each run in a forked process of
their own, as the real proxy does, so the client, the proxy and the server
do not share one interpreter lock. Three ways to the same server: direct (TLS straight
to it), tunnel (CONNECT through the proxy to a name no credential is bound
to: spliced bytes) and intercepted (CONNECT to the bound name: TLS ended
and re-opened by the proxy, the placeholder swapped in every request).
Each round measures, on one kept-alive connection each, SMALL sequential
small requests (ms per request) and DOWNLOADS x 20 MB bodies (MB/s).

The proxy's CPU time per MB says what a machine with a core to spare for
it would see (on 2 CPUs the client, the server and the proxy compete).

Targets: an intercepted request adds <= 2 ms over the tunnel; intercepted
throughput >= 0.8x direct (medians of the rounds).
"""

import argparse
import json
import os
import signal
import socket
import ssl
import statistics
import sys
import tempfile
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
BIG = os.urandom(1 << 20) * 20
SMALL = 300
DOWNLOADS = 3
BOUND, UNBOUND = "host.containers.internal", "host.docker.internal"
TARGET_ADDED_MS, TARGET_RATIO = 2.0, 0.8


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_GET(self):
        body = BIG if self.path == "/big" else b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        view = memoryview(body)
        for i in range(0, len(body), 1 << 18):
            self.wfile.write(view[i:i + (1 << 18)])

    def log_message(self, *args):
        pass


def forked(serve):
    """Run serve() in a child process; its pid."""
    pid = os.fork()
    if pid == 0:
        try:
            serve()
        finally:
            os._exit(0)
    return pid


def origin(directory):
    from tests.tls_origin import make_ca

    ca, cert, key = make_ca(directory, [BOUND, UNBOUND, "127.0.0.1"])
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    return forked(srv.serve_forever), srv.server_address[1], ca


def start_proxy(port, upstream_ca):
    from agentsh.base.state import Store
    from agentsh.creds import swap
    from agentsh.creds import vault as creds
    from agentsh.egress import audit, ca, intercept, proxy
    from agentsh.policy.rules import Policy

    store, sandbox = Store(), "ab-bench-intercept"
    placeholder = swap.placeholder("sk-ant-api03-" + "x" * 90)
    swap.write(store, sandbox, creds.load_key(create=True),
               {"K": {"placeholder": placeholder, "value": "sk-ant-api03-" + "y" * 90, "hosts": [BOUND],
                      "header": "x-api-key"}})
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    p = proxy.Proxy(listener, proxy.StaticPolicy(Policy("allow", [f"{BOUND}:{port}", f"{UNBOUND}:{port}"])),
                    audit.Writer(os.path.join(store.root, "bench.jsonl")), sandbox,
                    swaps=intercept.Swaps(swap.record_path(store, sandbox), sandbox),
                    contexts=intercept.Contexts(store.root, sandbox, upstream_ca=upstream_ca))
    sandbox_ca = ca.ensure(store.root, sandbox)
    return forked(p.serve_forever), listener.getsockname()[1], sandbox_ca, placeholder


def open_conn(way, port, proxy_port, origin_ca, sandbox_ca):
    if way == "direct":
        sock = socket.create_connection(("127.0.0.1", port))
        host, trust = "127.0.0.1", origin_ca
    else:
        host = BOUND if way == "intercepted" else UNBOUND
        trust = sandbox_ca if way == "intercepted" else origin_ca
        sock = socket.create_connection(("127.0.0.1", proxy_port))
        sock.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        reply = b""
        while b"\r\n\r\n" not in reply:
            reply += sock.recv(4096)
        assert reply.startswith(b"HTTP/1.1 200"), reply
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return ssl.create_default_context(cafile=trust).wrap_socket(sock, server_hostname=host), host


def get(tls, host, path, placeholder, buf):
    tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nx-api-key: {placeholder}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += tls.recv(65536)
    head, _, rest = head.partition(b"\r\n\r\n")
    length = int([h.split(b":")[1] for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")][0])
    got = len(rest)
    while got < length:
        got += tls.recv_into(buf)
    return length


def cpu_seconds(pid):
    """User + system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(way, port, proxy_port, origin_ca, sandbox_ca, placeholder, proxy_pid):
    tls, host = open_conn(way, port, proxy_port, origin_ca, sandbox_ca)
    buf = bytearray(1 << 20)
    get(tls, host, "/small", placeholder, buf)  # warm
    t = time.perf_counter()
    for _ in range(SMALL):
        get(tls, host, "/small", placeholder, buf)
    small_ms = (time.perf_counter() - t) * 1000 / SMALL
    t, cpu = time.perf_counter(), cpu_seconds(proxy_pid)
    total = sum(get(tls, host, "/big", placeholder, buf) for _ in range(DOWNLOADS))
    mbps = total / (1 << 20) / (time.perf_counter() - t)
    proxy_cpu_ms_per_mb = (cpu_seconds(proxy_pid) - cpu) * 1000 / (total / (1 << 20))
    tls.close()
    return small_ms, mbps, proxy_cpu_ms_per_mb


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="agentsh-bench-") as d:
        for var in ("XDG_STATE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME"):
            os.environ[var] = os.path.join(d, var.lower())
        origin_pid, port, origin_ca = origin(Path(d))
        proxy_pid, proxy_port, sandbox_ca, placeholder = start_proxy(port, origin_ca)
        ways = ("direct", "tunnel", "intercepted")
        results = {w: [] for w in ways}
        try:
            for r in range(args.rounds):
                for w in (ways if r % 2 == 0 else tuple(reversed(ways))):
                    results[w].append(measure(w, port, proxy_port, origin_ca, sandbox_ca, placeholder, proxy_pid))
        finally:
            for pid in (proxy_pid, origin_pid):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
    med = {w: tuple(statistics.median(x[i] for x in v) for i in range(3)) for w, v in results.items()}
    out = {"small_ms": {w: round(m[0], 3) for w, m in med.items()},
           "throughput_mb_s": {w: round(m[1], 1) for w, m in med.items()},
           "proxy_cpu_ms_per_mb": {w: round(m[2], 2) for w, m in med.items()},
           "added_ms_over_tunnel": round(med["intercepted"][0] - med["tunnel"][0], 3),
           "ratio_to_direct": round(med["intercepted"][1] / med["direct"][1], 2),
           "tunnel_ratio_to_direct": round(med["tunnel"][1] / med["direct"][1], 2)}
    out["targets_met"] = out["added_ms_over_tunnel"] <= TARGET_ADDED_MS and out["ratio_to_direct"] >= TARGET_RATIO
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        for w in ways:
            print(f"{w:<12} {out['small_ms'][w]:7.3f} ms/request  {out['throughput_mb_s'][w]:8.1f} MB/s  "
                  f"proxy CPU {out['proxy_cpu_ms_per_mb'][w]:5.2f} ms/MB")
        print(f"intercepted adds {out['added_ms_over_tunnel']} ms per request over the tunnel "
              f"(target <= {TARGET_ADDED_MS}); throughput {out['ratio_to_direct']}x direct "
              f"(target >= {TARGET_RATIO}; the tunnel: {out['tunnel_ratio_to_direct']}x)")
    return 0 if out["targets_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
