#!/usr/bin/env python3
"""The egress proxy's cost: bulk throughput and per-request latency, against direct access.

    .venv/bin/python bench/bench_proxy.py [--rounds N] [--json]
    .venv/bin/python bench/bench_proxy.py --load 1000     # tunnels held at once, no containers
    .venv/bin/python bench/bench_proxy.py --host 1000     # the proxy's own costs on loopback, no containers

Self-contained: a temporary XDG home and two temporary projects on the tiny
busybox image (imported if missing), one in network mode "full" (direct: the
engine's bridge to the host) and one in mode "allow" (everything through
agentsh's proxy), and an HTTP server on the host serving 50 MB and a small
page, reached from both as host.containers.internal. Each round runs, in
both sandboxes and in alternating order, busybox wget inside ONE `exec`
timed by the sandbox's own clock (/proc/uptime, so exec start-up does not
count): DOWNLOADS x 50 MB to /dev/null (more when the first direct loop
takes under MIN_LOOP seconds: the clock ticks in 10 ms, which at 2 GB/s is
a tenth of 4 x 50 MB), and SMALL sequential small requests. A third series runs in the "allow" sandbox
with no proxy variables (steered): busybox nslookup asks the proxy's DNS
answerer, and wget connects to the synthetic address, which the namespace's
REDIRECT rule hands to the proxy.

Targets (issue 15; proxied and steered alike): bulk throughput >= 0.9x
direct (medians of the rounds); small requests add <= 0.5 ms each over
direct. The machine is usually shared: run it several times and take the
medians (docs/performance.md, "The egress proxy").
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
BIN = os.path.dirname(sys.executable)
IMAGE = "localhost/agentsh-bench-tiny:latest"
BIG = os.urandom(1 << 20) * 50
SMALL_BODY = b"ok\n"
DOWNLOADS = 4
MIN_LOOP = 1.0
SMALL = 200
TARGET_RATIO = 0.9
TARGET_ADDED_MS = 0.5


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = BIG if self.path == "/big" else SMALL_BODY
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def ensure_image():
    if subprocess.run(["podman", "image", "exists", IMAGE]).returncode == 0:
        return
    from tests.conftest import make_tiny_rootfs

    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o755)
        make_tiny_rootfs(d)
        tar = subprocess.run(["tar", "-C", d, "-c", "."], capture_output=True, check=True).stdout
    subprocess.run(["podman", "import", "-q", "-", IMAGE], input=tar, capture_output=True, check=True)


def timed_loop(project, env, script):
    """Seconds the script took, by the sandbox's clock."""
    wrapped = ("s=$(cut -d' ' -f1 /proc/uptime); " + script +
               "; e=$(cut -d' ' -f1 /proc/uptime); echo \"$s $e\"")
    out = subprocess.run([os.path.join(BIN, "ab-exec"), "--", "sh", "-c", wrapped], cwd=project, env=env,
                         capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise SystemExit(f"bench command failed in {project}: {out.stderr.strip()[-300:]}")
    start, end = out.stdout.split()[-2:]
    return float(end) - float(start)


PROXY_PROCESS = """
import socket, sys
from agentsh.egress import audit, proxy
from agentsh.policy.rules import Policy
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(4096)
print(listener.getsockname()[1], flush=True)
policy = proxy.StaticPolicy(Policy("allow", [f"127.0.0.1:{sys.argv[1]}"]))
proxy.Proxy(listener, policy, audit.Writer(sys.argv[2]), "bench").serve_forever()
"""


def _status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith(key + ":")).split()[1])


def proxy_idle_workers():
    """Threads the proxy keeps for the next connections once a burst is over."""
    from agentsh.egress import proxy

    return proxy.IDLE_WORKERS


def load(count):
    """COUNT CONNECT tunnels held open at once through one proxy process; its memory and threads after."""
    import selectors
    import socket
    import time

    echo = socket.socket()
    echo.bind(("127.0.0.1", 0))
    echo.listen(4096)
    sel = selectors.DefaultSelector()
    sel.register(echo, selectors.EVENT_READ)
    stop = threading.Event()

    def serve_echo():
        while not stop.is_set():
            for key, _ in sel.select(0.2):
                if key.fileobj is echo:
                    conn, _ = echo.accept()
                    sel.register(conn, selectors.EVENT_READ)
                else:
                    data = key.fileobj.recv(65536)
                    if data:
                        key.fileobj.sendall(data)
                    else:
                        sel.unregister(key.fileobj)
                        key.fileobj.close()

    threading.Thread(target=serve_echo, daemon=True).start()
    with tempfile.TemporaryDirectory() as d:
        proc = subprocess.Popen([sys.executable, "-c", PROXY_PROCESS, str(echo.getsockname()[1]),
                                 os.path.join(d, "log.jsonl")], stdout=subprocess.PIPE, cwd=REPO, text=True)
        try:
            port = int(proc.stdout.readline())
            idle_rss, idle_threads = _status(proc.pid, "VmRSS"), _status(proc.pid, "Threads")
            errors, after_rss, held_rss, held_threads, opened = 0, [], 0, 0, 0.0
            head = f"CONNECT 127.0.0.1:{echo.getsockname()[1]} HTTP/1.1\r\n\r\n".encode()
            for _cycle in range(2):  # twice: memory after the second cycle is what a long session keeps
                clients = []
                start = time.monotonic()
                for _ in range(count):
                    c = socket.create_connection(("127.0.0.1", port), timeout=30)
                    c.sendall(head)
                    clients.append(c)
                for c in clients:
                    reply = b""
                    while b"\r\n\r\n" not in reply:
                        chunk = c.recv(4096)
                        if not chunk:
                            break
                        reply += chunk
                    errors += not reply.startswith(b"HTTP/1.1 200")
                held_rss, held_threads = _status(proc.pid, "VmRSS"), _status(proc.pid, "Threads")
                for c in clients:  # every tunnel still carries data while all are open
                    c.sendall(b"ping")
                for c in clients:
                    errors += c.recv(16) != b"ping"
                opened = time.monotonic() - start
                for c in clients:
                    c.close()
                for _ in range(100):
                    if _status(proc.pid, "Threads") <= idle_threads + proxy_idle_workers() + 1:
                        break
                    time.sleep(0.1)
                after_rss.append(_status(proc.pid, "VmRSS"))
            after_threads = _status(proc.pid, "Threads")
        finally:
            proc.terminate()
            proc.wait(10)
            stop.set()
    return {"connections": count, "errors": errors, "seconds": round(opened, 2),
            "rss_kb": {"idle": idle_rss, "held": held_rss, "after": after_rss},
            "threads": {"idle": idle_threads, "held": held_threads, "after": after_threads}}


ORIGIN_PROCESS = """
import socket, sys, threading
big = bytes(range(256)) * (50 * 4096)
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(4096)
print(listener.getsockname()[1], flush=True)

def serve(c):
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    head = b""
    while b"\\r\\n\\r\\n" not in head:
        data = c.recv(65536)
        if not data:
            return c.close()
        head += data
    body = big if b" /big " in head.split(b"\\r\\n")[0] else b"ok\\n"
    c.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: %d\\r\\nConnection: close\\r\\n\\r\\n" % len(body))
    c.sendall(body)
    c.close()

while True:
    c, _ = listener.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""


def _cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _switches(pid):
    """Context switches (voluntary and not) of every thread of a process so far."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                total += sum(int(line.split()[1]) for line in f if "ctxt_switches" in line)
        except OSError:
            pass  # a thread that ended meanwhile
    return total


def host_costs(count, rounds):
    """No containers: COUNT sequential small requests and 2 x 50 MB, direct and through a proxy process.

    Origin, proxy and this client are three processes on loopback. Besides
    the times (as load-bound as the sandbox figures), what the proxy
    itself spends: CPU ms and context switches per small request, CPU ms
    per MB. Those depend far less on what else runs on the machine.
    """
    import socket
    import time

    def fetch(addr, request, buf):
        s = socket.create_connection(addr, timeout=30)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(request)
        total = 0
        while n := s.recv_into(buf):
            total += n
        s.close()
        return total

    with tempfile.TemporaryDirectory() as d:
        origin = subprocess.Popen([sys.executable, "-c", ORIGIN_PROCESS], stdout=subprocess.PIPE, text=True)
        port = int(origin.stdout.readline())
        proc = subprocess.Popen([sys.executable, "-c", PROXY_PROCESS, str(port), os.path.join(d, "log.jsonl")],
                                stdout=subprocess.PIPE, cwd=REPO, text=True)
        try:
            proxy_port = int(proc.stdout.readline())
            ways = {"direct": (("127.0.0.1", port), b"GET /%s HTTP/1.1\r\nHost: o\r\n\r\n"),
                    "proxied": (("127.0.0.1", proxy_port),
                                b"GET http://127.0.0.1:%d/%%s HTTP/1.1\r\nHost: o\r\n\r\n" % port)}
            buf = bytearray(1 << 20)
            fetch(*ways["proxied"][:1], ways["proxied"][1] % b"small", buf)  # warm up
            res = {w: {"ms": [], "mbs": [], "cpu_ms": [], "switches": [], "cpu_ms_mb": []} for w in ways}
            for r in range(rounds):
                for way in (list(ways) if r % 2 == 0 else list(reversed(ways))):
                    addr, request = ways[way]
                    t, cpu, sw = time.perf_counter(), _cpu_s(proc.pid), _switches(proc.pid)
                    for _ in range(count):
                        fetch(addr, request % b"small", buf)
                    res[way]["ms"].append((time.perf_counter() - t) * 1000 / count)
                    res[way]["cpu_ms"].append((_cpu_s(proc.pid) - cpu) * 1000 / count)
                    res[way]["switches"].append((_switches(proc.pid) - sw) / count)
                    t, cpu = time.perf_counter(), _cpu_s(proc.pid)
                    n = fetch(addr, request % b"big", buf) + fetch(addr, request % b"big", buf)
                    res[way]["mbs"].append(n / 1e6 / (time.perf_counter() - t))
                    res[way]["cpu_ms_mb"].append((_cpu_s(proc.pid) - cpu) * 1000 / (n / 1e6))
        finally:
            for p in (proc, origin):
                p.terminate()
                p.wait(10)
    med = {w: {k: statistics.median(v) for k, v in x.items()} for w, x in res.items()}
    return {"requests": count, "rounds": rounds, "load_average": round(os.getloadavg()[0], 2),
            "small_added_ms": round(med["proxied"]["ms"] - med["direct"]["ms"], 3),
            "bulk_ratio": round(med["proxied"]["mbs"] / med["direct"]["mbs"], 3),
            "direct_ms": round(med["direct"]["ms"], 3), "direct_mb_per_s": round(med["direct"]["mbs"]),
            "proxy_cpu_ms_per_request": round(med["proxied"]["cpu_ms"], 3),
            "proxy_switches_per_request": round(med["proxied"]["switches"], 2),
            "proxy_cpu_ms_per_mb": round(med["proxied"]["cpu_ms_mb"], 3)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--load", type=int, metavar="N",
                    help="only the load test: N tunnels held at once through one proxy (no containers)")
    ap.add_argument("--host", type=int, metavar="N",
                    help="only host-side costs: N sequential small requests and 2 x 50 MB a round, no containers")
    opts = ap.parse_args()
    if opts.host:
        report = host_costs(opts.host, opts.rounds)
        print(json.dumps(report, indent=2) if opts.json else
              f"host only, {report['requests']} requests x {report['rounds']} rounds (load {report['load_average']}): "
              f"+{report['small_added_ms']} ms a request over direct, bulk {report['bulk_ratio']}x direct; "
              f"the proxy's CPU {report['proxy_cpu_ms_per_request']} ms and "
              f"{report['proxy_switches_per_request']} context switches a request, {report['proxy_cpu_ms_per_mb']} ms a MB")
        return 0
    if opts.load:
        report = load(opts.load)
        first, second = report["rss_kb"]["after"]
        report["ok"] = report["errors"] == 0 and \
            report["threads"]["after"] <= report["threads"]["idle"] + proxy_idle_workers() + 1 and \
            second <= first * 1.25  # a second cycle keeps what the first did: no growth per connection
        print(json.dumps(report, indent=2) if opts.json else
              f"{report['connections']} tunnels held at once: {report['errors']} errors, {report['seconds']} s; "
              f"proxy RSS idle {report['rss_kb']['idle']}, held {report['rss_kb']['held']}, after each cycle "
              f"{report['rss_kb']['after']} kB, "
              f"threads {report['threads']['idle']} -> {report['threads']['held']} -> {report['threads']['after']}")
        return 0 if report["ok"] else 1
    ensure_image()
    server = ThreadingHTTPServer(("0.0.0.0", 0), Handler)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = tempfile.mkdtemp(prefix="agentsh-bench-proxy-")
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}")
    for var in ("XDG_STATE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME"):
        env[var] = os.path.join(base, var.lower())
        os.makedirs(env[var])
    os.makedirs(os.path.join(env["XDG_CONFIG_HOME"], "agentsh"))
    projects = {}
    for mode in ("full", "allow"):
        path = os.path.join(base, mode)
        subprocess.run(["git", "init", "-q", path], check=True)
        with open(os.path.join(path, ".agentsh.toml"), "w") as f:
            f.write(f'[network]\nmode = "{mode}"\nallow = ["host.containers.internal:{port}"]\n')
        subprocess.run([os.path.join(BIN, "ab-allow"), path], env=env, check=True, capture_output=True)
        projects[mode] = path
    with open(os.path.join(env["XDG_CONFIG_HOME"], "agentsh", "config.toml"), "w") as f:
        f.write(f'image = "{IMAGE}"\n')
    url = f"http://host.containers.internal:{port}"
    scripts = {mode: (f"for i in $(seq {DOWNLOADS}); do wget -q -O /dev/null {url}/big || exit 9; done",
                      f"for i in $(seq {SMALL}); do wget -q -O /dev/null {url}/small || exit 9; done")
               for mode in projects}
    # Steered: the same "allow" sandbox, no proxy variables; the name resolved by the proxy's DNS
    # answerer, the connection to its synthetic address redirected to the proxy.
    steered_url = f"http://$ip:{port}"
    resolve = ("unset http_proxy HTTP_PROXY; ip=$(nslookup host.containers.internal 2>/dev/null | "
               "awk '/^Address/ {a=$NF} END {print a}'); ")
    host = "--header 'Host: host.containers.internal'"
    scripts["steered"] = (
        resolve + f"for i in $(seq {DOWNLOADS}); do wget -q {host} -O /dev/null {steered_url}/big || exit 9; done",
        resolve + f"for i in $(seq {SMALL}); do wget -q {host} -O /dev/null {steered_url}/small || exit 9; done")
    where = {**projects, "steered": projects["allow"]}
    results = {m: {"big": [], "small": []} for m in scripts}
    try:
        for path in projects.values():
            subprocess.run([os.path.join(BIN, "ab-up"), path], env=env, check=True, capture_output=True)
        for mode, (_, small) in scripts.items():
            timed_loop(where[mode], env, small.replace(f"seq {SMALL}", "seq 3"))  # warm up
        downloads = DOWNLOADS
        first = timed_loop(where["full"], env, scripts["full"][0])
        if first < MIN_LOOP:
            downloads = int(DOWNLOADS * MIN_LOOP / max(first, 0.01)) + 1
            scripts = {m: (big.replace(f"seq {DOWNLOADS}", f"seq {downloads}"), small)
                       for m, (big, small) in scripts.items()}
        for r in range(opts.rounds):
            order = list(scripts) if r % 2 == 0 else list(reversed(scripts))
            for mode in order:
                big, small = scripts[mode]
                results[mode]["big"].append(timed_loop(where[mode], env, big))
                results[mode]["small"].append(timed_loop(where[mode], env, small))
    finally:
        for path in projects.values():
            subprocess.run([os.path.join(BIN, "ab-down"), "--rm", "--volumes", path], env=env, capture_output=True)
        server.shutdown()
        shutil.rmtree(base, ignore_errors=True)
    mb = downloads * len(BIG) / 1e6
    mbs = {m: mb / statistics.median(results[m]["big"]) for m in results}
    ms = {m: statistics.median(results[m]["small"]) * 1000 / SMALL for m in results}
    direct_mbs, proxied_mbs, steered_mbs = mbs["full"], mbs["allow"], mbs["steered"]
    direct_ms, proxied_ms, steered_ms = ms["full"], ms["allow"], ms["steered"]
    report = {
        "rounds": opts.rounds,
        "downloads": downloads,
        "bulk_mb_per_s": {"direct": round(direct_mbs, 1), "proxied": round(proxied_mbs, 1),
                          "steered": round(steered_mbs, 1)},
        "bulk_ratio": round(proxied_mbs / direct_mbs, 3),
        "steered_bulk_ratio": round(steered_mbs / direct_mbs, 3),
        "small_ms_per_request": {"direct": round(direct_ms, 3), "proxied": round(proxied_ms, 3),
                                 "steered": round(steered_ms, 3)},
        "small_added_ms": round(proxied_ms - direct_ms, 3),
        "steered_small_added_ms": round(steered_ms - direct_ms, 3),
        "targets": {"bulk_ratio": TARGET_RATIO, "small_added_ms": TARGET_ADDED_MS},
    }
    report["ok"] = all(report[k] >= TARGET_RATIO for k in ("bulk_ratio", "steered_bulk_ratio")) and \
        all(report[k] <= TARGET_ADDED_MS for k in ("small_added_ms", "steered_small_added_ms"))
    if opts.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"bulk ({downloads} x 50 MB): direct {direct_mbs:.0f} MB/s, proxied {proxied_mbs:.0f} MB/s, "
              f"ratio {report['bulk_ratio']:.2f} (target >= {TARGET_RATIO})")
        print(f"small ({SMALL} sequential): direct {direct_ms:.2f} ms, proxied {proxied_ms:.2f} ms per request, "
              f"added {report['small_added_ms']:.2f} ms (target <= {TARGET_ADDED_MS})")
        print(f"steered (no proxy variables): bulk {steered_mbs:.0f} MB/s, ratio {report['steered_bulk_ratio']:.2f}; "
              f"small {steered_ms:.2f} ms per request, added {report['steered_small_added_ms']:.2f} ms")
        print("OK" if report["ok"] else "TARGET MISSED")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
