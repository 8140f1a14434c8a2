"""The egress proxy under load: 1,000 tunnels held at once, twice, without errors or memory that keeps growing.

The proxy runs as its own process (as it does for a sandbox), allowed one
local echo server; the test opens COUNT CONNECT tunnels before closing any,
sends a line through every one while all are open, then closes them all
and does it again. No timing is asserted: errors, threads and memory only.
"""

import os
import selectors
import socket
import subprocess
import sys
import threading
import time

import pytest

from agentsh.egress import proxy

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

COUNT = 1000
PROXY = """
import socket, sys
from agentsh.egress import audit, proxy
from agentsh.policy.rules import Policy
proxy.raise_fd_limit()
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(4096)
print(listener.getsockname()[1], flush=True)
policy = proxy.StaticPolicy(Policy("allow", [f"127.0.0.1:{sys.argv[1]}"]))
proxy.Proxy(listener, policy, audit.Writer(sys.argv[2]), "load").serve_forever()
"""


def status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith(key + ":")).split()[1])


@pytest.fixture
def echo():
    """A selector-driven echo server on loopback: one thread whatever the number of connections."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4096)
    sel = selectors.DefaultSelector()
    sel.register(server, selectors.EVENT_READ)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            for key, _ in sel.select(0.2):
                if key.fileobj is server:
                    conn, _ = server.accept()
                    sel.register(conn, selectors.EVENT_READ)
                    continue
                try:
                    data = key.fileobj.recv(65536)
                except OSError:
                    data = b""
                if data:
                    key.fileobj.sendall(data)
                else:
                    sel.unregister(key.fileobj)
                    key.fileobj.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(5)
    for key in list(sel.get_map().values()):
        key.fileobj.close()


def lines(path):
    try:
        with open(path, "rb") as f:
            return f.read().count(b"\n")
    except FileNotFoundError:
        return 0


def read_head(sock):
    reply = b""
    while b"\r\n\r\n" not in reply:
        chunk = sock.recv(4096)
        if not chunk:
            break
        reply += chunk
    return reply


def test_a_thousand_tunnels_at_once_without_errors_or_growing_memory(echo, tmp_path):
    log = tmp_path / "log.jsonl"
    proc = subprocess.Popen([sys.executable, "-c", PROXY, str(echo), str(log)], stdout=subprocess.PIPE, cwd=REPO,
                            text=True)
    try:
        port = int(proc.stdout.readline())
        idle_threads = status(proc.pid, "Threads")
        head = f"CONNECT 127.0.0.1:{echo} HTTP/1.1\r\n\r\n".encode()
        errors, held, after_rss = [], [], []
        for cycle in range(2):
            clients = []
            for _ in range(COUNT):
                c = socket.create_connection(("127.0.0.1", port), timeout=60)
                c.sendall(head)
                clients.append(c)
            for i, c in enumerate(clients):
                reply = read_head(c)
                if not reply.startswith(b"HTTP/1.1 200"):
                    errors.append((cycle, i, reply[:80]))
            held.append(status(proc.pid, "Threads"))
            for i, c in enumerate(clients):  # every tunnel carries data while all of them are open
                c.sendall(f"ping {i}\n".encode())
            for i, c in enumerate(clients):
                want = f"ping {i}\n".encode()
                got = b""
                while len(got) < len(want):
                    chunk = c.recv(64)
                    if not chunk:
                        break
                    got += chunk
                if got != want:
                    errors.append((cycle, i, got))
            for c in clients:
                c.close()
            for _ in range(300):  # the proxy notices every close and logs it (bounded wait)
                if status(proc.pid, "Threads") <= idle_threads + proxy.IDLE_WORKERS + 1 and \
                        lines(log) == (cycle + 1) * COUNT:
                    break
                time.sleep(0.1)
            after_rss.append(status(proc.pid, "VmRSS"))
        threads = status(proc.pid, "Threads")
        assert errors == []
        assert min(held) >= COUNT  # really held at once: at least a thread per tunnel
        assert threads <= idle_threads + proxy.IDLE_WORKERS + 1, (idle_threads, held, threads)
        assert after_rss[1] <= after_rss[0] * 1.25, after_rss  # a second thousand keeps what the first left
        assert lines(log) == 2 * COUNT  # one audit line per tunnel, written when it closed
        assert proc.poll() is None
        fds = len(os.listdir(f"/proc/{proc.pid}/fd"))
        assert fds < 50, fds  # every socket and pipe of the closed tunnels was closed
    finally:
        proc.terminate()
        proc.wait(10)
