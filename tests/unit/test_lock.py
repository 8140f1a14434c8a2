import os
import signal
import subprocess
import sys

import pytest

from agentsh.base.lock import FileLock, Timeout

HOLD = """
import sys, time
from agentsh.base.lock import FileLock
lock = FileLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(60)
"""


def holder(path):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE)
    assert proc.stdout.readline() == b"held\n"
    return proc


def test_reentrant_within_a_process(tmp_path):
    lock = FileLock(str(tmp_path / "l"))
    with lock:
        with lock:
            assert lock.is_locked
        assert lock.is_locked
    assert not lock.is_locked


def test_times_out_while_another_process_holds_it(tmp_path):
    proc = holder(tmp_path / "l")
    try:
        with pytest.raises(Timeout) as e:
            FileLock(str(tmp_path / "l")).acquire(timeout=0.2)
        assert "another agentsh process has held" in str(e.value) and "fuser" in str(e.value)
    finally:
        proc.kill()
        proc.wait()


def test_kill_9_of_the_holder_frees_it(tmp_path):
    proc = holder(tmp_path / "l")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    lock = FileLock(str(tmp_path / "l")).acquire(timeout=5)  # raises Timeout if still held
    assert lock.is_locked
    lock.release()


def test_compatible_with_filelock(tmp_path):
    import filelock

    with FileLock(str(tmp_path / "l")):
        with pytest.raises(filelock.Timeout):
            filelock.FileLock(str(tmp_path / "l")).acquire(timeout=0.1)
