"""The engine quirk handled by agentsh itself: detected once, remembered, applied to every later command."""

import os

import pytest

from agentsh.host import engine as engine_mod
from agentsh.host.engine import Engine, HostQuirk

QUIRK = ("Error: runc: runc create failed: unable to start container process: error during container init: "
         "error setting rlimits for ready process: error setting rlimit type 7: operation not permitted\n")


class Runner:
    def __init__(self, answers):
        self.answers, self.calls = list(answers), []

    def __call__(self, argv, input=None, timeout=None):
        self.calls.append((argv, os.environ.get("CONTAINERS_CONF")))
        return self.answers.pop(0)


@pytest.fixture
def no_conf(monkeypatch):
    monkeypatch.delenv("CONTAINERS_CONF", raising=False)
    monkeypatch.delenv(engine_mod.COMPAT_OPT_OUT, raising=False)
    yield
    os.environ.pop("CONTAINERS_CONF", None)


def test_a_quirk_is_answered_with_the_shipped_settings_once_and_remembered(no_conf):
    runner = Runner([(126, "", QUIRK), (0, "cid\n", "")])
    eng = Engine("podman", runner=runner, exe="/usr/bin/podman")
    assert eng.run_detached(["img", "sleep", "1"]) == "cid"
    assert [conf for _, conf in runner.calls] == [None, engine_mod.compat_conf()]
    assert os.path.exists(engine_mod._compat_marker())
    os.environ.pop("CONTAINERS_CONF")
    later = Engine("podman", exe="/usr/bin/podman")  # a later command, any of them
    assert later.compat and os.environ["CONTAINERS_CONF"] == engine_mod.compat_conf()


def test_the_users_own_containers_conf_is_never_overridden(no_conf, monkeypatch, tmp_path):
    monkeypatch.setenv("CONTAINERS_CONF", str(tmp_path / "mine.conf"))
    runner = Runner([(126, "", QUIRK)])
    eng = Engine("podman", runner=runner, exe="/usr/bin/podman")
    with pytest.raises(HostQuirk) as e:
        eng.run_detached(["img"])
    assert len(runner.calls) == 1 and not os.path.exists(engine_mod._compat_marker())
    assert "mine.conf" in e.value.fix and "error setting rlimits" in e.value.message


def test_opting_out_leaves_the_engine_as_it_is(no_conf, monkeypatch):
    monkeypatch.setenv(engine_mod.COMPAT_OPT_OUT, "0")
    runner = Runner([(126, "", QUIRK)])
    with pytest.raises(HostQuirk) as e:
        Engine("podman", runner=runner, exe="/usr/bin/podman").run_detached(["img"])
    assert len(runner.calls) == 1 and engine_mod.COMPAT_OPT_OUT in e.value.fix
    # The message quotes the engine's own first line whole, never cut mid-word.
    assert QUIRK.strip() in e.value.message
