"""Many processes on one state dir, kill -9 at any moment, tampered records."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import BIN, ab, podman

WRITER = """
import sys
from agentsh.base.state import Store
store = Store()
i = 0
while True:
    i += 1
    store.write("stress/r%d.json" % (i % 5), {"i": i, "pad": "x" * (i % 4096)})
"""


def test_twenty_concurrent_ups_make_exactly_one_container(sandbox_env, repo):
    procs = [subprocess.Popen([str(BIN / "ab-up"), "--json", str(repo)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for _ in range(20)]
    results = [(p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for p in procs]
    assert all(code == 0 for code, _, _ in results), [err for _, _, err in results]
    ids = {json.loads(out)["id"][:12] for _, out, _ in results}
    names = {json.loads(out)["name"] for _, out, _ in results}
    assert len(names) == 1
    found = podman("ps", "-a", "--filter", f"label=io.agentsh.project={repo}", "--format", "json").stdout
    containers = json.loads(found)
    assert len(containers) == 1 and containers[0]["Id"][:12] in ids
    from agentsh.base.state import Store

    record = Store().read(f"sandboxes/{names.pop()}.json")
    assert record["project"] == str(repo)


def test_kill_9_during_state_writes_leaves_valid_records():
    from agentsh.base.state import Store

    store = Store()
    rng = random.Random(7)
    for _ in range(15):
        proc = subprocess.Popen([sys.executable, "-c", WRITER])
        time.sleep(rng.uniform(0.05, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for name in store.names("stress"):
            record = store.read(f"stress/{name}.json")  # raises on a torn record
            assert record["pad"] == "x" * (record["i"] % 4096)
    assert store.names("stress")
    # The lock is free again: a new writer is not blocked by the dead ones.
    import threading

    writer = threading.Thread(target=store.write, args=("stress/after.json", {"i": 0, "pad": ""}), daemon=True)
    writer.start()
    writer.join(timeout=10)
    assert not writer.is_alive(), "a writer killed with the lock held left it taken"
    assert store.read("stress/after.json")["i"] == 0


def test_kill_9_of_ab_up_at_any_moment_leaves_a_working_state(sandbox_env, repo):
    rng = random.Random(11)
    for _ in range(6):
        proc = subprocess.Popen([str(BIN / "ab-up"), str(repo)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.0, 0.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if rng.random() < 0.5:
            ab("ab-down", "--rm", str(repo))
    proc = ab("ab-up", "--json", str(repo))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["state"] == "running"
    assert ab("ab-exec", "--", "echo", "ok", cwd=repo).stdout == b"ok\n"
    assert ab("ab-ls", "--json").returncode == 0


@pytest.mark.parametrize("content", [b"", b"{", b'{"schema": 42}', b"\x00\xff garbage"])
def test_tampered_sandbox_record_is_reported_not_crashed(sandbox_env, repo, content):
    name = json.loads(ab("ab-up", "--json", str(repo), check=True).stdout)["name"]
    from agentsh.base.state import Store

    path = Store().path(f"sandboxes/{name}.json")
    ab("ab-down", "--rm", str(repo), check=True)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(content)
    # ab-up rewrites the record atomically; it never needs to read the torn one.
    proc = ab("ab-up", str(repo))
    assert proc.returncode == 0 and b"Traceback" not in proc.stderr
    assert Store().read(f"sandboxes/{name}.json")["name"] == name
