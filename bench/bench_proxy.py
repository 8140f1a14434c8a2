#!/usr/bin/env python3
"""The egress proxy's cost: bulk throughput and per-request latency, against direct access.

    .venv/bin/python bench/bench_proxy.py [--rounds N] [--json]

Self-contained: a temporary XDG home and two temporary projects on the tiny
busybox image (imported if missing), one in network mode "full" (direct: the
engine's bridge to the host) and one in mode "allow" (everything through
agentsh's proxy), and an HTTP server on the host serving 50 MB and a small
page, reached from both as host.containers.internal. Each round runs, in
both sandboxes and in alternating order, busybox wget inside ONE `exec`
timed by the sandbox's own clock (/proc/uptime, so exec start-up does not
count): DOWNLOADS x 50 MB to /dev/null, and SMALL sequential small requests.

Targets: proxied bulk throughput >= 70% of direct (medians of the rounds);
proxied small requests add <= 2 ms each over direct.
"""

import argparse
import json
import os
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
SMALL = 200
TARGET_RATIO = 0.70
TARGET_ADDED_MS = 2.0


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


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    opts = ap.parse_args()
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
    big = f"for i in $(seq {DOWNLOADS}); do wget -q -O /dev/null {url}/big || exit 9; done"
    small = f"for i in $(seq {SMALL}); do wget -q -O /dev/null {url}/small || exit 9; done"
    results = {m: {"big": [], "small": []} for m in projects}
    try:
        for path in projects.values():
            subprocess.run([os.path.join(BIN, "ab-up"), path], env=env, check=True, capture_output=True)
            timed_loop(path, env, small.replace(str(SMALL), "3"))  # warm up
        for r in range(opts.rounds):
            order = list(projects) if r % 2 == 0 else list(reversed(projects))
            for mode in order:
                results[mode]["big"].append(timed_loop(projects[mode], env, big))
                results[mode]["small"].append(timed_loop(projects[mode], env, small))
    finally:
        for path in projects.values():
            subprocess.run([os.path.join(BIN, "ab-down"), "--rm", "--volumes", path], env=env, capture_output=True)
        server.shutdown()
    mb = DOWNLOADS * len(BIG) / 1e6
    direct_mbs = mb / statistics.median(results["full"]["big"])
    proxied_mbs = mb / statistics.median(results["allow"]["big"])
    direct_ms = statistics.median(results["full"]["small"]) * 1000 / SMALL
    proxied_ms = statistics.median(results["allow"]["small"]) * 1000 / SMALL
    report = {
        "rounds": opts.rounds,
        "bulk_mb_per_s": {"direct": round(direct_mbs, 1), "proxied": round(proxied_mbs, 1)},
        "bulk_ratio": round(proxied_mbs / direct_mbs, 3),
        "small_ms_per_request": {"direct": round(direct_ms, 3), "proxied": round(proxied_ms, 3)},
        "small_added_ms": round(proxied_ms - direct_ms, 3),
        "targets": {"bulk_ratio": TARGET_RATIO, "small_added_ms": TARGET_ADDED_MS},
    }
    report["ok"] = report["bulk_ratio"] >= TARGET_RATIO and report["small_added_ms"] <= TARGET_ADDED_MS
    if opts.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"bulk ({DOWNLOADS} x 50 MB): direct {direct_mbs:.0f} MB/s, proxied {proxied_mbs:.0f} MB/s, "
              f"ratio {report['bulk_ratio']:.2f} (target >= {TARGET_RATIO})")
        print(f"small ({SMALL} sequential): direct {direct_ms:.2f} ms, proxied {proxied_ms:.2f} ms per request, "
              f"added {report['small_added_ms']:.2f} ms (target <= {TARGET_ADDED_MS})")
        print("OK" if report["ok"] else "TARGET MISSED")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
