"""Network policy logic: patterns, sets, decisions, config, lockdown, spec pieces, proposals."""

import os

import pytest

from agentsh import config, network, project, sandbox
from agentsh.errors import ConfigError
from agentsh.network import Policy, parse_rule
from tests.conftest import git_init
from tests.unit.fake_engine import fake_engine


@pytest.fixture
def proj(tmp_path):
    return project.find(str(git_init(tmp_path / "repo")))


@pytest.mark.parametrize("pattern,host,port,ok", [
    ("api.anthropic.com", "api.anthropic.com", 443, True),
    ("api.anthropic.com", "API.Anthropic.com.", 80, True),
    ("api.anthropic.com", "api.anthropic.com", 8443, False),
    ("api.anthropic.com", "evil-api.anthropic.com", 443, False),
    ("*.npmjs.org", "registry.npmjs.org", 443, True),
    ("*.npmjs.org", "npmjs.org", 443, False),
    ("*.npmjs.org", "npmjs.org.evil.com", 443, False),
    ("github.com:443", "github.com", 80, False),
    ("github.com:*", "github.com", 22, True),
    ("10.0.0.5:8080", "10.0.0.5", 8080, True),
    ("[::1]:80", "::1", 80, True),
    ("example.com", "93.184.216.34", 443, False),
])
def test_rule_matching(pattern, host, port, ok):
    assert Policy("allow", [pattern]).decide(host, port)[0] is ok


def test_ip_literals_are_refused_unless_listed():
    policy = Policy("allow", ["*.example.com"])
    assert policy.decide("1.2.3.4", 443) == (False, "IP address not on the allowlist")
    assert policy.decide("a.example.com", 443) == (True, "*.example.com")


def test_learn_allows_everything_but_only_rules_are_explicit():
    policy = Policy("learn", ["listed.example"])
    assert policy.decide("anything.example", 443) == (True, "learn")
    assert policy.explicit("listed.example", 443) and not policy.explicit("anything.example", 443)


@pytest.mark.parametrize("bad", ["", "a..b", "*.1.2.3.4", "host:0", "host:99999", "host:http", "[::1", "-a.com"])
def test_malformed_patterns(bad):
    with pytest.raises(ValueError):
        parse_rule(bad)


def test_sets_expand_and_unknown_sets_are_config_errors(tmp_path):
    assert "api.anthropic.com" in network.expand(["@anthropic"])
    assert network.expand(["@github", "github.com"]).count("github.com") == 1
    with pytest.raises(ConfigError, match="unknown set @nope"):
        config.validate({"network": {"allow": ["@nope"]}}, "config.toml")
    with pytest.raises(ConfigError, match="network.mode"):
        config.validate({"network": {"mode": "open"}}, "config.toml")
    cfg = config.validate({"network": {"mode": "allow", "allow": ["@registries", "x.dev:8443"]}, "lockdown": True},
                          "config.toml")
    assert cfg["lockdown"] is True


def test_project_allow_adds_to_the_users(tmp_path):
    merged = config.merge(config.merge(config.defaults(), {"network": {"allow": ["a.dev"]}}),
                          {"network": {"allow": ["b.dev"], "mode": "allow"}})
    assert merged["network"] == {"mode": "allow", "allow": ["a.dev", "b.dev"]}


def test_run_args_per_mode():
    cfg = config.defaults()
    assert network.run_args(cfg) == ([], {})
    cfg["network"]["mode"] = "none"
    assert network.run_args(cfg) == (["--network=none"], {})
    cfg["network"]["mode"] = "allow"
    args, env = network.run_args(cfg)
    assert args == ["--network=none"]
    for name in ("HTTP_PROXY", "https_proxy", "ALL_PROXY"):
        assert env[name] == "http://127.0.0.1:3128"
    assert env["NO_PROXY"] == env["no_proxy"] == "localhost,127.0.0.1,::1"


def test_spec_for_allow_mode_has_no_network_and_the_proxy_env(proj):
    engine, _ = fake_engine()
    cfg = config.load(flags={"network": {"mode": "allow"}})
    args = sandbox.spec(proj, cfg, engine).run_args
    assert "--network=none" in args and "HTTPS_PROXY=http://127.0.0.1:3128" in args


def test_lockdown_drops_credentials_mounts_ssh_and_the_home_volume(proj, tmp_path, monkeypatch):
    engine, _ = fake_engine(rootless=True)
    cfg = config.load(flags={"env": ["TOKEN"], "credentials": ["API"], "mounts": [f"{tmp_path}:/data"],
                             "cap_add": ["NET_RAW"], "network": {"mode": "full", "allow": ["x.dev"]}})
    locked = network.lockdown(cfg)
    assert (locked["env"], locked["credentials"], locked["mounts"], locked["cap_add"]) == ([], [], [], [])
    assert locked["network"]["mode"] == "allow" and locked["network"]["allow"] == ["@anthropic", "@openai", "@google"]
    assert network.lockdown(cfg, ["anthropic"])["network"]["allow"] == ["@anthropic"]
    assert cfg["mounts"] and cfg["network"]["mode"] == "full"  # the original is untouched
    monkeypatch.setattr("agentsh.inject.sandbox_additions", lambda p, e: (
        ["--tmpfs", "/run/agentsh/secrets:rw", "-v", "/tmp/agent.sock:/run/agentsh/ssh-agent.sock"],
        {"SSH_AUTH_SOCK": "/run/agentsh/ssh-agent.sock"}))
    args = sandbox.spec(proj, locked, engine).run_args
    joined = " ".join(args)
    assert "ssh-agent.sock" not in joined and "SSH_AUTH_SOCK" not in joined
    assert proj.home_volume not in joined and "/home/agent:rw,nosuid,nodev,mode=0700,U" in args
    upper, work = network.overlay_dirs(proj)
    assert f"{proj.root}:{proj.root}:O,upperdir={upper},workdir={work}" in args
    assert f"{tmp_path}:/data" not in joined and "--cap-add=NET_RAW" not in args
    # Unlocked, the same config keeps its home volume and the agent socket.
    plain = " ".join(sandbox.spec(proj, cfg, engine).run_args)
    assert proj.home_volume in plain and "ssh-agent.sock" in plain


def test_allow_host_records_and_validates(proj, tmp_path):
    from agentsh.errors import AgentshError
    from agentsh.state import Store

    store = Store()
    assert network.allow_host(store, proj, "api.example.com") is True
    assert network.allow_host(store, proj, "api.example.com") is False
    assert network.added(store, proj) == ["api.example.com"]
    with pytest.raises(AgentshError, match="cannot allow"):
        network.allow_host(store, proj, "bad host")
    cfg = config.load(flags={"network": {"mode": "allow", "allow": ["@github"]}})
    policy = network.policy_for(cfg, store, proj)
    assert policy.decide("api.example.com", 443)[0] and policy.decide("github.com", 443)[0]


def test_propose_groups_sets_and_keeps_odd_ports():
    entries = [{"host": "github.com", "port": 443}, {"host": "api.github.com", "port": 443},
               {"host": "pypi.org", "port": 443}, {"host": "internal.dev", "port": 8443},
               {"host": "internal.dev", "port": 8443}, {"host": "plain.dev", "port": 80}, {"bad": 1}]
    patterns, counts = network.propose(entries)
    assert patterns == ["@github", "internal.dev:8443", "plain.dev", "@registries"]
    assert {"host": "internal.dev", "port": 8443, "count": 2} in counts
    for p in patterns:
        assert network.check_allow([p], "proposal")


def test_attach_is_a_no_op_outside_proxied_modes(proj):
    engine, runner = fake_engine()
    from agentsh.state import Store

    assert network.attach(proj, config.load(), engine, Store()) is None
    assert runner.calls == []
