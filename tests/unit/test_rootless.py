"""What rootless Podman needs from the host (agentsh.host.rootless), and how engine errors are explained."""

import os

import pytest

from agentsh.host import rootless
from agentsh.host.engine import Engine, RootlessSetup

# What Podman 4.3 says when /dev/net/tun is mode 0600 (measured), for `run` and for a build's RUN step.
RUN_TUN_ERROR = ('time="2026-12-02T00:36:02Z" level=warning msg="\\"/\\" is not a shared mount"\n'
                 'Error: /usr/bin/slirp4netns failed: "open(\\"/dev/net/tun\\"): Permission denied\\nWARNING: '
                 'Support for seccomp is experimental\\nchild failed(1)\\n"\n')
BUILD_TUN_ERROR = 'Error: building at STEP "RUN true": failed to read from slirp4netns sync pipe: EOF\n'


@pytest.fixture
def ids(tmp_path):
    subuid, subgid = tmp_path / "subuid", tmp_path / "subgid"
    subuid.write_text("alice:100000:65536\nbob:165536:65536\n")
    subgid.write_text("alice:100000:65536\n")
    return {"subuid": str(subuid), "subgid": str(subgid), "proc": str(tmp_path / "proc")}


def test_a_user_with_full_ranges_needs_nothing(ids, monkeypatch):
    monkeypatch.setattr(rootless, "_which", lambda program, extra=(): f"/usr/bin/{program}")
    monkeypatch.setattr(rootless, "_subids_from_nss", lambda: False)
    assert rootless.userns_problems(user="alice", uid=1000, **ids) == []


def test_missing_ranges_get_a_usermod_with_a_free_range(ids, monkeypatch):
    monkeypatch.setattr(rootless, "_which", lambda program, extra=(): f"/usr/bin/{program}")
    monkeypatch.setattr(rootless, "_subids_from_nss", lambda: False)
    monkeypatch.setattr(rootless.os, "geteuid", lambda: 1000)
    (problem,) = rootless.userns_problems(user="bob", uid=1001, **ids)  # bob has subuids, no subgids
    assert problem.key == "subuid" and "fewer than 65536 subordinate ids in subgid" in problem.message
    assert problem.fix == "sudo usermod --add-subgids 231072-296607 bob && podman system migrate"
    (problem,) = rootless.userns_problems(user="carol", uid=1002, **ids)
    assert problem.fix == ("sudo usermod --add-subuids 231072-296607 --add-subgids 231072-296607 carol "
                           "&& podman system migrate")


def test_ranges_named_by_uid_count(ids, monkeypatch):
    monkeypatch.setattr(rootless, "_which", lambda program, extra=(): f"/usr/bin/{program}")
    monkeypatch.setattr(rootless, "_subids_from_nss", lambda: False)
    with open(ids["subuid"], "a") as f:
        f.write("1003:300000:65536\n")
    with open(ids["subgid"], "a") as f:
        f.write("1003:300000:65536\n")
    assert rootless.userns_problems(user="dave", uid=1003, **ids) == []


def test_ranges_from_nss_are_not_second_guessed(ids, monkeypatch):
    monkeypatch.setattr(rootless, "_which", lambda program, extra=(): f"/usr/bin/{program}")
    monkeypatch.setattr(rootless, "_subids_from_nss", lambda: True)
    assert rootless.userns_problems(user="carol", uid=1002, **ids) == []


def test_missing_uidmap_and_disabled_user_namespaces(ids, monkeypatch, tmp_path):
    monkeypatch.setattr(rootless, "_which", lambda program, extra=(): None if "map" in program else "/usr/bin/apt-get")
    monkeypatch.setattr(rootless, "_subids_from_nss", lambda: False)
    monkeypatch.setattr(rootless.os, "geteuid", lambda: 1000)
    (tmp_path / "proc/user").mkdir(parents=True)
    (tmp_path / "proc/user/max_user_namespaces").write_text("0\n")
    found = rootless.userns_problems(user="alice", uid=1000, **ids)
    assert [p.key for p in found] == ["userns", "uidmap"]
    assert found[0].fix == "sudo sysctl -w user.max_user_namespaces=15000"
    assert found[1].fix == "sudo apt-get install -y uidmap"


def test_tun_that_the_user_cannot_open_is_named_with_its_fix(tmp_path, monkeypatch):
    tun = tmp_path / "tun"
    tun.write_text("")
    tun.chmod(0o600)
    real = os.access
    monkeypatch.setattr(rootless.os, "access", lambda path, mode: False if path == str(tun) else real(path, mode))
    monkeypatch.setattr(rootless.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(rootless, "_which", lambda program, extra=(): f"/usr/bin/{program}")
    (problem,) = rootless.network_problems(str(tun))
    assert problem.key == "tun" and problem.network and "is mode 0600" in problem.message
    assert problem.fix == f"sudo chmod 666 {tun}"
    (problem,) = rootless.network_problems(str(tmp_path / "absent"))
    assert problem.fix == "sudo modprobe tun"


def test_summary_is_one_line_with_every_fix():
    found = [rootless.Problem("uidmap", "newuidmap is missing", "sudo apt-get install -y uidmap"),
             rootless.Problem("tun", "/dev/net/tun is mode 0600", "sudo chmod 666 /dev/net/tun", network=True)]
    message, fix = rootless.summary(found)
    assert message == "newuidmap is missing; /dev/net/tun is mode 0600"
    assert fix == "sudo apt-get install -y uidmap && sudo chmod 666 /dev/net/tun"


def test_diagnose_matches_the_error_to_the_problem():
    tun = rootless.Problem("tun", "/dev/net/tun is mode 0600", "sudo chmod 666 /dev/net/tun", network=True)
    ids = rootless.Problem("subuid", "u has fewer than 65536 subordinate ids", "sudo usermod ...")
    assert rootless.diagnose(BUILD_TUN_ERROR, [tun, ids]) == [tun]
    assert rootless.diagnose("Error: cannot set up namespace using newuidmap: exit status 1", [tun, ids]) == [ids]
    assert rootless.diagnose("Error: no such image", [tun, ids]) == []
    assert rootless.diagnose(BUILD_TUN_ERROR, []) == []  # nothing wrong that we can see: the engine's words stand


def test_engine_reason_is_the_first_line_without_the_helpers_output():
    assert rootless.engine_reason(RUN_TUN_ERROR) == '/usr/bin/slirp4netns failed: "open(\\"/dev/net/tun\\"): Permission denied'


def test_a_rootless_engine_error_says_what_is_missing_and_the_fix_in_one_line(monkeypatch):
    tun = rootless.Problem("tun", "/dev/net/tun is mode 0600: u cannot open it", "sudo chmod 666 /dev/net/tun",
                           network=True)
    monkeypatch.setattr(rootless, "problems", lambda **kw: [tun])
    engine = Engine("podman", runner=lambda *a, **k: (0, "", ""), rootless=True, exe="podman")
    e = engine.error(RUN_TUN_ERROR, "run")
    assert isinstance(e, RootlessSetup)
    assert str(e) == ('rootless podman run failed (/usr/bin/slirp4netns failed: "open(\\"/dev/net/tun\\"): '
                      'Permission denied): /dev/net/tun is mode 0600: u cannot open it; '
                      'fix (once, as root): sudo chmod 666 /dev/net/tun')
    assert "\n" not in str(e)
    rootful = Engine("podman", runner=lambda *a, **k: (0, "", ""), rootless=False, exe="podman")
    assert not isinstance(rootful.error(RUN_TUN_ERROR, "run"), RootlessSetup)


def test_a_rootless_up_that_fails_on_the_network_names_the_fix(monkeypatch, tmp_path):
    """ab-up's `run -d` failing the way Podman does with a 0600 /dev/net/tun."""
    from agentsh.base.errors import EngineError

    tun = rootless.Problem("tun", "/dev/net/tun is mode 0600: u cannot open it", "sudo chmod 666 /dev/net/tun",
                           network=True)
    monkeypatch.setattr(rootless, "problems", lambda **kw: [tun])
    engine = Engine("podman", runner=lambda argv, **kw: (126, "", RUN_TUN_ERROR), rootless=True, exe="podman")
    with pytest.raises(EngineError) as e:
        engine.run_detached(["--name", "x", "img"])
    assert str(e.value).endswith("fix (once, as root): sudo chmod 666 /dev/net/tun")
