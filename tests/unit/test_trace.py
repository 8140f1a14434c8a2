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


class FakePodman:
    """trace.Podman's queries answered from sets; every call recorded."""

    def __init__(self, containers=None, volumes=(), images=None):
        self._containers, self._volumes, self._images = dict(containers or {}), set(volumes), dict(images or {})
        self.calls = []

    def __call__(self, *args):
        self.calls.append(list(args))
        if args[0] == "rmi":
            for ref in args[1:]:
                self._images = {i: n for i, n in self._images.items() if i != ref and ref not in n}
        return subprocess.CompletedProcess(args, 0, "", "")

    def containers(self):
        return dict(self._containers)

    def volumes(self):
        return set(self._volumes)

    def images(self):
        return dict(self._images)


def test_the_sweep_removes_this_runs_things_and_a_marked_user(monkeypatch, tmp_path):
    import pwd

    root = FakePodman(containers={"c1": ("ab-repo-1", "/tmp/pytest-1/t0/repo"), "c2": ("ab-r2", "/tmp/gt/r2")},
                      volumes={"ab-repo-1-home", "agentsh-cache-npm", "theirs", "ab-old-home"},
                      images={"i1": {"localhost/agentsh-test-tiny:latest"}, "i2": {"localhost/keep:1"},
                              "i3": set(), "i4": set()})
    user = FakePodman(containers={"u1": ("ab-u", "/home/t/work/r")})
    home = tmp_path / "home"
    home.mkdir()
    (home / trace.USER_MARK).write_text("")
    monkeypatch.setattr(trace, "Podman", lambda: root)
    monkeypatch.setattr(trace, "user_podman", lambda name: user)
    monkeypatch.setattr(pwd, "getpwnam", lambda name: type("pw", (), {"pw_dir": str(home), "pw_uid": 4242})())
    monkeypatch.setattr(trace, "processes", lambda uid, marker: {})
    monkeypatch.setattr(trace.os, "geteuid", lambda: 0)
    ran = []
    monkeypatch.setattr(trace.subprocess, "run", lambda argv, **kw: ran.append(argv))
    before = trace.Footprint(volumes={"ab-old-home"}, images={"i4": set(), "i2": {"localhost/keep:1"}})
    swept = trace.sweep(before, "agentsh-test", "/tmp/pytest-1", "/tmp/pytest-1", exclusive=True)
    assert ["rm", "-f", "-t", "0", "c1"] in root.calls and not any("c2" in c for c in root.calls)
    removed = {c[2] for c in root.calls if c[:2] == ["volume", "rm"]}
    assert removed == {"ab-repo-1-home", "agentsh-cache-npm"}  # not someone else's, not one from before
    assert set(root.images()) == {"i2", "i4"}  # the test image and the new unnamed layer went
    assert ["system", "reset", "-f"] in user.calls
    assert ["userdel", "-r", "agentsh-test"] in ran
    assert swept == ["container ab-repo-1 (project t0/repo)", "volume ab-repo-1-home", "volume agentsh-cache-npm"]


def test_the_sweep_of_a_run_that_was_not_alone_touches_only_what_is_surely_its_own(monkeypatch, tmp_path):
    import pwd

    root = FakePodman(containers={"c1": ("ab-repo-1", "/tmp/pytest-1/t0/repo")}, volumes={"ab-repo-1-home"},
                      images={"i1": {"localhost/agentsh-test-tiny:latest"}})
    user = FakePodman(containers={"u1": ("ab-u", "/home/t/work/r")})
    home = tmp_path / "home"
    home.mkdir()
    (home / trace.USER_MARK).write_text("")
    monkeypatch.setattr(trace, "Podman", lambda: root)
    monkeypatch.setattr(trace, "user_podman", lambda name: user)
    monkeypatch.setattr(pwd, "getpwnam", lambda name: type("pw", (), {"pw_dir": str(home), "pw_uid": 4242})())
    monkeypatch.setattr(trace, "processes", lambda uid, marker: {})
    monkeypatch.setattr(trace.os, "geteuid", lambda: 0)
    ran = []
    monkeypatch.setattr(trace.subprocess, "run", lambda argv, **kw: ran.append(argv))
    before = trace.Footprint(user_exists=True, user_containers={"u1": ("ab-u", "/home/t/work/r")})
    trace.sweep(before, "agentsh-test", "/tmp/pytest-1", "/tmp/pytest-1", exclusive=False)
    assert root.calls == [["rm", "-f", "-t", "0", "c1"]] and set(root.images()) == {"i1"}
    assert user.calls == [] and ran == []  # another run may be using them


def test_a_test_image_held_by_a_storage_only_container_is_forced_out(monkeypatch):
    """A recreate killed half-way can leave a container only in storage: a plain rmi cannot remove the image."""

    class Held(FakePodman):
        def __call__(self, *args):
            if args[0] == "rmi" and "-f" not in args:
                self.calls.append(list(args))
                return subprocess.CompletedProcess(args, 2, "", "image is in use by a container")
            return super().__call__(*[a for a in args if a != "-f"])

    root = Held(images={"i1": {"localhost/agentsh-test-tiny:latest"}, "i2": {"localhost/keep:1"}})
    monkeypatch.setattr(trace, "Podman", lambda: root)
    monkeypatch.setattr(trace, "uid_of", lambda user: None)
    monkeypatch.setattr(trace, "processes", lambda uid, marker: {})
    before = trace.Footprint(images={"i2": {"localhost/keep:1"}})
    trace.sweep(before, "agentsh-test", "/tmp/pytest-1", "/tmp/pytest-1", exclusive=True)
    assert set(root.images()) == {"i2"}  # forced, and only the suite's own image
    assert ["rmi", "localhost/agentsh-test-tiny:latest"] in root.calls
