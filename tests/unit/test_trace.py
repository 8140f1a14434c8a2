"""tests/trace.py, the suite's own leave-no-trace check: what counts as left behind."""

import os
import subprocess
import sys

from tests import trace


def fp(**kw):
    return trace.Footprint(**kw)


def test_nothing_new_is_nothing_left():
    before = fp(containers={"c1": ("ab-x", "/elsewhere")}, volumes={"v"}, images={"i": {"localhost/a:1"}})
    assert trace.left_behind(before, before, "/tmp/pytest-1", exclusive=True) == []


def test_a_sandbox_of_this_run_is_left_behind_one_of_another_project_is_not():
    after = fp(containers={"c1": ("ab-repo-1", "/tmp/pytest-1/test_x0/repo"), "c2": ("ab-r2", "/tmp/gt/r2")})
    assert trace.left_behind(fp(), after, "/tmp/pytest-1", exclusive=False) == ["containers: ab-repo-1"]


def test_volumes_images_and_the_user_count_only_when_no_other_run_was_active():
    after = fp(volumes={"ab-repo-1-home", "agentsh-cache-npm", "someone-elses"},
               images={"i1": {"localhost/agentsh-test-tiny:latest"}, "i2": {"localhost/mine:1"}, "i3": set()},
               user_exists=True, user_containers={"u1": ("ab-u", "/home/t/work/r")},
               user_processes={7: "catatonit -P"})
    assert trace.left_behind(fp(), after, "/tmp/pytest-1", exclusive=False) == []
    assert trace.left_behind(fp(), after, "/tmp/pytest-1", exclusive=True) == [
        "volumes: ab-repo-1-home, agentsh-cache-npm",
        "images: localhost/agentsh-test-tiny:latest",
        "the rootless test user",
        "the test user's containers: ab-u",
        "the test user's processes: 7 catatonit -P",
    ]


def test_a_replaced_test_image_is_not_new():
    before = fp(images={"old": {"localhost/agentsh-test-tiny:latest"}})
    after = fp(images={"new": {"localhost/agentsh-test-tiny:latest"}})
    assert trace.left_behind(before, after, "/tmp/pytest-1", exclusive=True) == []


def test_processes_are_found_by_the_run_directory_in_their_environment(tmp_path):
    marker = str(tmp_path / "run-dir")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"],
                             env={**os.environ, "XDG_STATE_HOME": marker})
    try:
        found = trace.processes(None, marker)
        assert child.pid in found and "time.sleep" in found[child.pid]
        assert os.getpid() not in found
    finally:
        child.kill()
        child.wait()
    assert child.pid not in trace.processes(None, marker)


def test_the_session_lock_is_exclusive_only_for_a_lone_run(tmp_path):
    path = str(tmp_path / "lock")
    first, second = trace.SessionLock(path), trace.SessionLock(path)
    assert not first.exclusive()
    second.release()
    assert first.exclusive()
    first.release()


def test_a_test_user_of_an_earlier_suite_is_known_by_its_config(tmp_path, monkeypatch):
    import pwd

    home = tmp_path / "home"
    monkeypatch.setattr(pwd, "getpwnam", lambda name: type("pw", (), {"pw_dir": str(home), "pw_uid": 4242})())
    assert not trace.left_by_an_earlier_suite("agentsh-test")
    (home / "work").mkdir(parents=True)
    (home / "xdg/config/agentsh").mkdir(parents=True)
    (home / "xdg/config/agentsh/config.toml").write_text('image = "localhost/my-own:1"\n')
    assert not trace.left_by_an_earlier_suite("agentsh-test")  # someone's real account: never touched
    (home / "xdg/config/agentsh/config.toml").write_text('image = "localhost/agentsh-test-git:latest"\n')
    assert trace.left_by_an_earlier_suite("agentsh-test")
    assert not trace.user_made_by_suite("agentsh-test")
    trace.mark_user_made("agentsh-test")
    assert trace.user_made_by_suite("agentsh-test")
