"""isolation = "gvisor": the config rule, the runsc flags per network mode, the runtime wrapper, refusals."""

import os
import stat

import pytest

from agentsh.base.errors import ConfigError
from agentsh.host import project
from agentsh.policy import config
from agentsh.sandbox import isolation
from agentsh.sandbox import lifecycle as sandbox
from tests.conftest import git_init
from tests.unit.fake_engine import fake_engine


@pytest.fixture
def proj(tmp_path):
    return project.find(str(git_init(tmp_path / "repo")))


@pytest.fixture
def runsc_at(monkeypatch, tmp_path):
    path = tmp_path / "bin" / "runsc"
    path.parent.mkdir()
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    monkeypatch.setattr(isolation, "runsc", lambda: str(path))
    return str(path)


def gvisor(user_config, network="full"):
    user_config(f'isolation = "gvisor"\n[network]\nmode = "{network}"\n')
    return config.load()


def test_a_project_file_raises_isolation_but_never_lowers_it():
    user = {**config.defaults(), "isolation": "gvisor"}
    assert config.merge_project(user, {"isolation": "container"}, "p/.agentsh.toml")["isolation"] == "gvisor"
    plain = config.defaults()
    assert config.merge_project(plain, {"isolation": "gvisor"}, "p/.agentsh.toml")["isolation"] == "gvisor"
    with pytest.raises(ConfigError):
        config.validate({"isolation": "vm"}, "config.toml")


@pytest.mark.parametrize("network, flag", [("none", "--network=none"), ("full", "--network=host"),
                                           ("allow", "--network=host"), ("learn", "--network=host")])
def test_each_network_mode_gets_its_runsc_network(proj, user_config, runsc_at, network, flag):
    engine, _ = fake_engine()
    want = sandbox.spec(proj, gvisor(user_config, network), engine)
    args = want.run_args
    target, text = want.runtime
    assert args[args.index("--runtime") + 1] == target and target.startswith(os.environ["XDG_DATA_HOME"])
    assert text.splitlines()[-1] == f'exec {runsc_at} {flag} --host-uds=create "$@"'
    assert "--runtime" not in sandbox.spec(proj, _container(user_config), engine).run_args


def _container(user_config):
    user_config("")
    return config.load()


def test_the_same_flags_are_the_same_wrapper_and_a_switch_changes_the_spec(proj, user_config, runsc_at):
    engine, _ = fake_engine()
    one = sandbox.spec(proj, gvisor(user_config), engine)
    two = sandbox.spec(proj, gvisor(user_config), engine)
    none = sandbox.spec(proj, gvisor(user_config, "none"), engine)
    plain = sandbox.spec(proj, _container(user_config), engine)
    assert one.runtime == two.runtime and one.hash == two.hash
    assert none.runtime[0] != one.runtime[0] and len({one.hash, none.hash, plain.hash}) == 3


def test_install_writes_the_wrapper_once_executable(tmp_path):
    target = str(tmp_path / "runtimes" / "abc" / "runsc")
    isolation.install((target, "#!/bin/sh\nexec true\n"))
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o755 and open(target).read() == "#!/bin/sh\nexec true\n"
    before = os.stat(target).st_mtime_ns
    isolation.install((target, "other"))  # there already: one stat, unchanged
    assert os.stat(target).st_mtime_ns == before
    isolation.install(None)


def test_an_ssh_agent_needs_host_sockets_and_rootless_v1_needs_no_cgroups(monkeypatch, runsc_at):
    rootful, _ = fake_engine()
    rootless, _ = fake_engine(rootless=True)
    monkeypatch.setattr(isolation, "cgroups_v2", lambda: False)
    assert isolation.runsc_flags(rootful, "full", ssh_agent=True) == ["--network=host", "--host-uds=all"]
    assert isolation.runsc_flags(rootless, "none") == ["--network=none", "--host-uds=create", "--ignore-cgroups"]
    monkeypatch.setattr(isolation, "cgroups_v2", lambda: True)
    assert "--ignore-cgroups" not in isolation.runsc_flags(rootless, "none")


def test_rootless_gvisor_runs_as_the_namespaces_root_not_keep_id(proj, user_config, runsc_at):
    engine, _ = fake_engine(rootless=True)
    args = sandbox.spec(proj, gvisor(user_config), engine).run_args
    assert "--user=0:0" in args and "--userns=keep-id" not in args


def test_no_runsc_and_docker_are_one_line_each(proj, user_config, monkeypatch):
    cfg = gvisor(user_config)
    monkeypatch.setattr(isolation, "runsc", lambda: None)
    with pytest.raises(ConfigError) as e:
        sandbox.spec(proj, cfg, fake_engine()[0])
    assert "runsc" in e.value.message and "apt-get install runsc" in e.value.fix
    with pytest.raises(ConfigError) as e:
        isolation.run_args(cfg, type("Docker", (), {"is_podman": False, "name": "docker"})(), "full")
    assert "not available with docker" in e.value.message and "\n" not in e.value.message
