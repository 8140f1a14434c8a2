"""The cd hook and a sandbox that predates the config: said once per session, or recreated when asked."""

import os

import pytest

from agentsh.app import enter, hooks
from agentsh.base.state import Store
from agentsh.cli import hook as hook_cli
from agentsh.host import project
from agentsh.policy import config, trust
from agentsh.sandbox import lifecycle
from tests.conftest import git_init
from tests.unit.fake_engine import fake_engine


@pytest.fixture
def setup(tmp_path, monkeypatch):
    """An allowed project with on_enter = "up", its sandbox made and running (this process as its init)."""
    repo = git_init(tmp_path / "repo")
    store = Store()

    def project_file(text="", hook=""):
        (repo / ".agentsh.toml").write_text(text + '[hook]\non_enter = "up"\n' + hook)
        trust.allow(store, str(repo / ".agentsh.toml"))
        return project.find(str(repo))

    proj = project_file()
    engine, runner = fake_engine(images={config.DEFAULT_IMAGE})
    runner.pid = os.getpid()
    monkeypatch.setattr(hook_cli, "Engine", lambda name: engine, raising=False)
    import agentsh.host.engine as engine_module

    monkeypatch.setattr(engine_module, "Engine", lambda name="podman", **kw: engine)
    lifecycle.up(proj, config.load(proj, store), engine, store)
    lifecycle.up(proj, config.load(proj, store), engine, store)  # the second one records the init process
    notes = []
    monkeypatch.setattr(hook_cli, "notice", notes.append)
    monkeypatch.setenv("AGENTSH_SESSION", "session-one")
    return {"repo": repo, "store": store, "engine": engine, "runner": runner, "notes": notes,
            "project_file": project_file}


def decision(setup):
    return hooks.decide(str(setup["repo"]), setup["store"])


def test_a_sandbox_made_under_this_config_is_not_stale(setup):
    assert enter.stale_spec(decision(setup), setup["engine"], setup["store"]) is None
    assert hook_cli.enter(str(setup["repo"])) == hooks.ENTER_UP and setup["notes"] == []


def test_a_changed_config_is_said_once_per_session_and_nothing_is_recreated(setup, monkeypatch):
    setup["project_file"]('memory = "300m"\n')
    assert enter.stale_spec(decision(setup), setup["engine"], setup["store"])
    calls = len(setup["runner"].calls)
    assert hook_cli.enter(str(setup["repo"])) == hooks.ENTER_UP
    assert len(setup["notes"]) == 1
    assert "predates your config" in setup["notes"][0] and "run 'ab up' to recreate it" in setup["notes"][0]
    assert 'on_stale = "recreate"' in setup["notes"][0]
    assert not [c for c in setup["runner"].calls[calls:] if c[0] in ("rm", "run")]  # the old sandbox stays
    hook_cli.enter(str(setup["repo"]))
    assert len(setup["notes"]) == 1  # once
    monkeypatch.setenv("AGENTSH_SESSION", "session-two")
    hook_cli.enter(str(setup["repo"]))
    assert len(setup["notes"]) == 2  # once more in another shell session


def test_on_stale_recreate_recreates_it(setup):
    setup["project_file"]('memory = "300m"\n', 'on_stale = "recreate"\n')
    calls = len(setup["runner"].calls)
    assert hook_cli.enter(str(setup["repo"])) == hooks.ENTER_UP
    done = [c[0] for c in setup["runner"].calls[calls:] if c[0] in ("create", "start", "rm", "run")]
    assert done == ["create", "start", "rm"]  # the new sandbox made and started before the old one goes
    assert any("spec changed; recreating" in n for n in setup["notes"])
    assert not any("predates" in n for n in setup["notes"])


def test_on_stale_is_checked():
    with pytest.raises(Exception) as e:
        config.validate({"hook": {"on_stale": "sometimes"}}, "config.toml")
    assert "on_stale" in str(e.value)
