"""Many `ab-creds set` at once on one cache (and its first use): nothing lost, nothing torn."""

import json
import subprocess

from agentsh.creds import vault as creds
from tests.conftest import BIN


def start_set(name, value):
    return subprocess.Popen([str(BIN / "ab-creds"), "set", name], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE), value


def finish(started):
    results = []
    for proc, value in started:
        out, err = proc.communicate(value, timeout=120)
        results.append((proc.returncode, err))
    assert all(code == 0 for code, _ in results), [err for _, err in results]


def test_32_concurrent_sets_of_distinct_names_are_all_readable():
    # The cache has no key yet: the 32 also race to create it, and must agree.
    finish([start_set(f"N{i}", f"value-{i}".encode()) for i in range(32)])
    for i in range(32):
        proc = subprocess.run([str(BIN / "ab-creds"), "get", f"N{i}"], capture_output=True)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == f"value-{i}\n".encode()
    listed = json.loads(subprocess.run([str(BIN / "ab-creds"), "ls", "--json"], capture_output=True).stdout)
    assert sorted(r["name"] for r in listed) == sorted(f"N{i}" for i in range(32))
    assert not [n for n in creds.names(creds.GLOBAL) if ".tmp." in n]


def test_concurrent_sets_of_one_name_leave_one_valid_value():
    values = [f"candidate-{i}-{'x' * i}".encode() for i in range(16)]
    finish([start_set("SAME", v) for v in values])
    proc = subprocess.run([str(BIN / "ab-creds"), "get", "SAME"], capture_output=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout[:-1] in values
    assert creds.names(creds.GLOBAL) == ["SAME"]
