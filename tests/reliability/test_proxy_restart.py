"""The proxy's supervisor: a proxy killed at any moment is replaced, and what arrives meanwhile is still judged.

The supervisor holds the listening socket; a connection made while no proxy
runs waits in its backlog and is answered by the next proxy, with the same
policy (nothing is relayed without one).
"""

import os
import signal
import socket
import subprocess
import sys
import time

from tests.reliability.test_proxy_load import REPO, read_head

SUPERVISED = """
import socket, sys
from agentsh.egress import audit, proxy
from agentsh.policy.rules import Policy
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(64)
echo = socket.socket()
echo.bind(("127.0.0.1", 0))
echo.listen(64)
print(listener.getsockname()[1], echo.getsockname()[1], flush=True)
policy = proxy.StaticPolicy(Policy("allow", [f"127.0.0.1:{echo.getsockname()[1]}"]))
proxy.supervise(lambda: proxy.Proxy(listener, policy, audit.Writer(sys.argv[1]), "t").serve_forever(),
                sys.argv[2], "net/none.json")
"""


def children(pid):
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def ask(port, target):
    c = socket.create_connection(("127.0.0.1", port), timeout=30)
    c.sendall(f"CONNECT {target} HTTP/1.1\r\n\r\n".encode())
    return c


def test_a_killed_proxy_is_replaced_and_connections_made_meanwhile_are_judged_by_the_next(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", SUPERVISED, str(tmp_path / "log.jsonl"), str(tmp_path)],
                            stdout=subprocess.PIPE, cwd=REPO, text=True)
    try:
        port, echo = map(int, proc.stdout.readline().split())
        with ask(port, f"127.0.0.1:{echo}") as c:
            assert read_head(c).startswith(b"HTTP/1.1 200")
        for _ in range(100):
            if children(proc.pid):
                break
            time.sleep(0.05)
        [first] = children(proc.pid)
        os.kill(proc.pid, signal.SIGSTOP)  # the supervisor held still: no proxy at all until SIGCONT
        try:
            os.kill(first, signal.SIGKILL)
            for _ in range(100):
                if children_gone(first):
                    break
                time.sleep(0.05)
            assert children_gone(first)
            allowed, denied = ask(port, f"127.0.0.1:{echo}"), ask(port, "127.0.0.1:1")
            allowed.settimeout(1)
            try:
                assert allowed.recv(1) == b"", "answered while no proxy ran"
            except TimeoutError:
                pass  # nobody answers (the connection waits in the backlog)
            allowed.settimeout(30)
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        with allowed, denied:
            assert read_head(denied).startswith(b"HTTP/1.1 403")  # judged by the next proxy, never relayed
            assert read_head(allowed).startswith(b"HTTP/1.1 200")
        for _ in range(100):
            if children(proc.pid) and children(proc.pid) != [first]:
                break
            time.sleep(0.05)
        assert children(proc.pid) and children(proc.pid) != [first]
        assert proc.poll() is None  # the supervisor itself went on
    finally:
        proc.terminate()
        proc.wait(10)
    assert proc.returncode == 0 and children_gone(first)


def children_gone(pid):
    """The process is gone or a zombie whose every thread has exited.

    A killed leader shows Z while its other threads may still be on their
    way out, holding the fds (an acceptor among them); only once the task
    list is down to the leader is nothing of it left to take a connection.
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            zombie = f.read().split(") ")[1][0] == "Z"
        return zombie and len(os.listdir(f"/proc/{pid}/task")) <= 1
    except FileNotFoundError:
        return True
