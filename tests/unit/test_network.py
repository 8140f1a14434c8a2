"""Network policy logic: patterns, sets, decisions, config, lockdown, spec pieces, proposals."""


import pytest

from agentsh.base.errors import ConfigError
from agentsh.egress import network
from agentsh.host import project
from agentsh.policy import config, lockdown, rules
from agentsh.policy.rules import Policy, parse_rule
from agentsh.sandbox import lifecycle as sandbox
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
    assert "api.anthropic.com" in rules.expand(["@anthropic"])
    assert rules.expand(["@github", "github.com"]).count("github.com") == 1
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
    assert args == ["--network=none", "-v", f"{network.RESOLV_CONF}:/etc/resolv.conf:ro",
                    "-v", f"{network.HOSTS}:/etc/hosts:ro"]
    with open(network.RESOLV_CONF) as f:  # the proxy's DNS answerer, on the sandbox's loopback
        assert [line for line in f if line.startswith("nameserver")] == ["nameserver 127.0.0.1\n"]
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
    locked = lockdown.lockdown(cfg)
    assert (locked["env"], locked["credentials"], locked["mounts"], locked["cap_add"]) == ([], [], [], [])
    assert locked["network"]["mode"] == "allow" and locked["network"]["allow"] == ["@anthropic", "@openai", "@google"]
    assert lockdown.lockdown(cfg, ["anthropic"])["network"]["allow"] == ["@anthropic"]
    assert cfg["mounts"] and cfg["network"]["mode"] == "full"  # the original is untouched
    monkeypatch.setattr("agentsh.creds.delivery.sandbox_additions", lambda p, e: (
        ["--tmpfs", "/run/agentsh/secrets:rw", "-v", "/tmp/agent.sock:/run/agentsh/ssh-agent.sock"],
        {"SSH_AUTH_SOCK": "/run/agentsh/ssh-agent.sock"}))
    args = sandbox.spec(proj, locked, engine).run_args
    joined = " ".join(args)
    assert "ssh-agent.sock" not in joined and "SSH_AUTH_SOCK" not in joined
    assert proj.home_volume not in joined and "/home/agent:rw,nosuid,nodev,mode=0700,U" in args
    upper, work = lockdown.overlay_dirs(proj)
    assert f"{proj.root}:{proj.root}:O,upperdir={upper},workdir={work}" in args
    assert f"{tmp_path}:/data" not in joined and "--cap-add=NET_RAW" not in args
    # Unlocked, the same config keeps its home volume and the agent socket.
    plain = " ".join(sandbox.spec(proj, cfg, engine).run_args)
    assert proj.home_volume in plain and "ssh-agent.sock" in plain


def test_allow_host_records_and_validates(proj, tmp_path):
    from agentsh.base.errors import AgentshError
    from agentsh.base.state import Store

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
    patterns, counts = rules.propose(entries)
    assert patterns == ["@github", "internal.dev:8443", "plain.dev", "@registries"]
    assert {"host": "internal.dev", "port": 8443, "count": 2} in counts
    for p in patterns:
        assert rules.check_allow([p], "proposal") == [p]  # each proposal is a valid allow entry (else it raises)


def test_attach_is_a_no_op_outside_proxied_modes(proj):
    engine, runner = fake_engine()
    from agentsh.base.state import Store

    assert network.attach(proj, config.load(), engine, Store()) is None
    assert runner.calls == []


# -- internal addresses: the classifier and who may name them -------------------------------
#
# Every spelling below is one an agent may put in CONNECT or an absolute URL.
# "Internal" means the proxy, running on the host, would reach the host itself
# or its networks through it.

INTERNAL_LITERALS = [
    # loopback and unspecified
    "127.0.0.1", "127.255.255.254", "127.0.1.1", "::1", "[::1]", "[0:0:0:0:0:0:0:1]", "0.0.0.0", "0.1.2.3",
    "[::]",
    # link-local (cloud metadata lives here), private, shared, unique-local, site-local
    "169.254.169.254", "169.254.0.1", "[fe80::1]", "[fe80::fc:ff:fe00:1]", "[febf::1]", "10.0.0.5",
    "10.255.255.255", "172.16.0.1", "172.31.255.255", "192.168.0.1", "192.168.255.255", "100.64.0.1",
    "100.127.255.255", "[fc00::1]", "[fd00::2]", "[fd00:ec2::254]", "[fec0::1]",
    # multicast, broadcast, reserved, documentation, benchmarking
    "224.0.0.1", "239.255.255.250", "255.255.255.255", "240.0.0.1", "192.0.0.8", "192.0.2.2", "198.18.0.1",
    "198.51.100.7", "203.0.113.9", "192.88.99.1", "[ff02::1]", "[ff05::1:3]", "[2001:db8::1]", "[100::1]",
    "[4000::1]", "[3fff::1]",
    # IPv4-mapped (::ffff:a.b.c.d), in every spelling
    "[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "[::FFFF:7F00:0001]", "[0:0:0:0:0:ffff:7f00:1]",
    "[0000:0000:0000:0000:0000:ffff:127.0.0.1]", "[::ffff:0.0.0.0]", "[::ffff:0:0]", "[::ffff:10.0.0.1]",
    "[::ffff:a9fe:a9fe]", "[::ffff:c0a8:101]", "[::ffff:100.64.0.1]", "::ffff:127.0.0.1",
    # IPv4-compatible (::a.b.c.d) and IPv4-translated (::ffff:0:a.b.c.d)
    "[::127.0.0.1]", "[::7f00:1]", "[::10.0.0.1]", "[::a9fe:a9fe]", "[::0.0.0.2]", "[::8.8.8.8]",
    "[::ffff:0:127.0.0.1]", "[::ffff:0:7f00:1]", "[::ffff:0:a00:1]", "[::ffff:0:8.8.8.8]",
    # NAT64 (64:ff9b::/96 and the local-use 64:ff9b:1::/48), 6to4 (2002::/16), Teredo
    "[64:ff9b::127.0.0.1]", "[64:ff9b::7f00:1]", "[64:ff9b::a9fe:a9fe]", "[64:ff9b::192.168.0.1]",
    "[64:ff9b::a00:1]", "[64:ff9b:1::1]", "[64:ff9b:1::8.8.8.8]",
    "[2002:7f00:1::]", "[2002:7f00:1::1]", "[2002:a00:1::1]", "[2002:c0a8:101::1]", "[2002:a9fe:a9fe::1]",
    "[2002::1]", "[2001:0:7f00:1::1]", "[2001:0:4136:e378:8000:63bf:80ff:fffe]",
]

PUBLIC_LITERALS = [
    "8.8.8.8", "1.1.1.1", "93.184.216.34", "11.0.0.1", "100.63.255.255", "100.128.0.1", "126.255.255.255",
    "128.0.0.1", "169.255.0.1", "172.15.255.255", "172.32.0.1", "192.167.255.255", "192.169.0.1",
    "198.20.0.1", "223.255.255.255", "[2606:4700:4700::1111]", "[2a00:1450:4001::200e]",
    "[::ffff:8.8.8.8]", "[64:ff9b::8.8.8.8]", "[2002:808:808::1]",
]

NON_CANONICAL_IPV4 = ["127.1", "127.0.1", "0x7f.0.0.1", "0X7F.0.0.1", "0x7f000001", "0177.0.0.1", "0177.0.0.01",
                      "2130706433", "017700000001", "127.0.0.1.", "10.1", "0xa.0.0.1", "012.0.0.1", "167772161",
                      "0xc0.0.2.2", "3221225986", "8.8.2056", "0x8.8.8.8"]

# every port, so only the address decides
EVERY_IP = ["0.0.0.0/0:*", "[::/0]:*"]


@pytest.mark.parametrize("host", INTERNAL_LITERALS)
def test_internal_literals_are_refused_in_learn_mode(host):
    allowed, why = Policy("learn", []).decide(host, 443)
    assert not allowed and "internal address" in why, why


@pytest.mark.parametrize("host", INTERNAL_LITERALS)
def test_a_rule_listing_every_ip_names_no_internal_one(host):
    """0.0.0.0/0 and ::/0 list every address but name no internal range: still refused."""
    allowed, why = Policy("allow", EVERY_IP).decide(host, 443)
    assert not allowed and "internal address" in why, why


@pytest.mark.parametrize("host", INTERNAL_LITERALS)
def test_internal_literals_are_not_on_an_allowlist_of_names(host):
    assert Policy("allow", rules.expand(["*.example.com", "@github"])).decide(host, 443) == (False, "IP address not on the allowlist")


@pytest.mark.parametrize("host", PUBLIC_LITERALS)
def test_public_literals_pass_in_learn_mode_and_under_a_rule_listing_every_ip(host):
    assert Policy("learn", []).decide(host, 443) == (True, "learn")
    assert Policy("allow", EVERY_IP).decide(host, 443)[0]


@pytest.mark.parametrize("host", NON_CANONICAL_IPV4)
def test_non_canonical_ipv4_spellings_are_refused_even_when_their_address_is_listed(host):
    policy = Policy("learn", ["127.0.0.1:*", "10.0.0.1:*", "192.0.2.2:*", "8.8.8.8:*", "*.0.0.1:*", "*.0.1:*"])
    allowed, why = policy.decide(host, 443)
    if host == "127.0.0.1.":  # a trailing dot is only a fully qualified spelling of the canonical literal
        assert allowed and why == "127.0.0.1:*"
    else:
        assert not allowed and why.startswith("non-canonical IPv4 address"), why


@pytest.mark.parametrize("host", ["fe80::1%eth0", "[fe80::1%eth0]", "[fe80::1%25eth0]", "[::1%lo]",
                                  "[::ffff:127.0.0.1%1]", "[fd00::2%2]"])
def test_ipv6_zone_ids_are_refused(host):
    policy = Policy("learn", ["[fe80::/10]:*", "[::1]:*", "127.0.0.1:*", "[fd00::/8]:*"])
    assert policy.decide(host, 443) == (False, "IPv6 zone ids are not accepted")


@pytest.mark.parametrize("host", ["\x1b[31mred.example", "bel\x07.example", "a\x00b.example", "cr\r.example",
                                  "\xff\xfe.example", "caf\xe9.example", "a..b", "-a.example", "a_-.example",
                                  "x" * 300, "a b", "", "[", "[::1", "::ffff:0177.0.0.1", "1.2.3.4:5:6", "*.example"])
def test_malformed_hosts_are_refused_before_any_lookup(host, monkeypatch):
    import socket

    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: pytest.fail("a malformed host reached a resolver"))
    allowed, why = Policy("learn", []).decide(host, 443)
    assert not allowed and why in ("not a host name or IP address", "host name too long", "no host"), why


@pytest.mark.parametrize("rules,host,port", [
    (["10.0.0.5"], "10.0.0.5", 443),
    (["127.0.0.1:8080"], "127.0.0.1", 8080),
    (["127.0.0.1:8080"], "[::ffff:127.0.0.1]", 8080),  # the same address, mapped
    (["127.0.0.1:8080"], "[::ffff:7f00:1]", 8080),
    (["[::ffff:127.0.0.1]:8080"], "127.0.0.1", 8080),  # a mapped rule names the IPv4 address
    (["10.0.0.0/8"], "10.1.2.3", 443),
    (["10.0.0.0/8:5432"], "10.200.0.1", 5432),
    (["172.16.0.0/12:*"], "172.20.1.1", 22),
    (["192.168.1.0/24"], "192.168.1.77", 80),
    (["169.254.169.254"], "169.254.169.254", 80),
    (["100.64.0.0/10"], "100.100.100.100", 443),
    (["[::1]:80"], "::1", 80),
    (["[::1]:80"], "[0:0:0:0:0:0:0:1]", 80),
    (["[fd00::/8]:443"], "[fd12:3456::1]", 443),
    (["[fc00::/7]:*"], "[fdff::1]", 9999),
    (["[fe80::/10]:*"], "[fe80::1]", 22),
    (["[64:ff9b::7f00:1]:*"], "[64:ff9b::127.0.0.1]", 1),
    (["[2002:7f00:1::/48]:*"], "[2002:7f00:1::5]", 1),
    (["0.0.0.0:*"], "0.0.0.0", 1),
])
def test_a_rule_naming_the_address_or_its_range_allows_it(rules, host, port):
    for mode in ("allow", "learn"):
        allowed, why = Policy(mode, rules).decide(host, port)
        assert allowed and why == rules[0], (mode, why)


@pytest.mark.parametrize("rules,host,port", [
    (["10.0.0.5"], "10.0.0.6", 443),
    (["127.0.0.1:8080"], "127.0.0.1", 8081),
    (["127.0.0.1:8080"], "127.0.0.2", 8080),
    (["127.0.0.1:8080"], "[::1]", 8080),  # another address
    (["127.0.0.1:*"], "[::127.0.0.1]", 8080),  # IPv4-compatible: not the IPv4 address
    (["127.0.0.1:*"], "[64:ff9b::127.0.0.1]", 8080),  # NAT64: not the IPv4 address
    (["127.0.0.1:*"], "[2002:7f00:1::1]", 8080),  # 6to4: not the IPv4 address
    (["10.0.0.0/7:*"], "10.0.0.1", 443),  # wider than the private block: lists, does not name
    (["8.0.0.0/5:*"], "10.0.0.1", 443),
    (["[::/0]:*"], "[::ffff:127.0.0.1]", 443),
    (["[fc00::/6]:*"], "[fd00::1]", 443),
    (["192.168.0.0/16"], "192.168.1.1", 8080),  # 80 and 443 only
])
def test_a_rule_not_naming_the_address_does_not_allow_it(rules, host, port):
    for mode in ("allow", "learn"):
        assert not Policy(mode, rules).decide(host, port)[0], mode


def _ip(text):
    import ipaddress

    return ipaddress.ip_address(text)


RESOLVED_INTERNAL = ["127.0.0.1", "127.0.1.1", "::1", "::ffff:127.0.0.1", "0.0.0.0", "::", "10.0.0.1",
                     "192.168.1.1", "172.17.0.1", "169.254.169.254", "100.64.0.1", "fe80::1", "fd00::2",
                     "::ffff:10.0.0.1", "::127.0.0.1", "64:ff9b::a9fe:a9fe", "2002:7f00:1::1", "224.0.0.251",
                     "ff02::fb"]


@pytest.mark.parametrize("mode", ["allow", "learn"])
@pytest.mark.parametrize("addr", RESOLVED_INTERNAL)
def test_a_wildcard_rule_never_names_an_address_its_names_resolve_to(mode, addr):
    policy = Policy(mode, ["*.example.com:*", "*.containers.internal:*", "*.npmjs.org"])
    assert policy.decide("rebind.example.com", 8080) == (True, "*.example.com:*")  # the name passes...
    assert policy.admits("rebind.example.com", 8080, _ip(addr)) == (False, policy.admits("x", 1, _ip(addr))[1])
    assert not policy.admits("host.containers.internal", 443, _ip(addr))[0]  # ...its address does not
    assert not policy.admits("registry.npmjs.org", 443, _ip(addr))[0]


@pytest.mark.parametrize("mode", ["allow", "learn"])
def test_an_exact_name_rule_names_what_that_name_resolves_to(mode):
    policy = Policy(mode, ["localhost:8080", "host.containers.internal:3000", "db.lan:5432", "*.lan:*"])
    assert policy.admits("localhost", 8080, _ip("127.0.0.1")) == (True, "localhost:8080")
    assert policy.admits("localhost", 8080, _ip("::1")) == (True, "localhost:8080")
    assert policy.admits("host.containers.internal", 3000, _ip("127.0.0.1"))[0]
    assert policy.admits("db.lan", 5432, _ip("10.1.2.3")) == (True, "db.lan:5432")
    assert not policy.admits("localhost", 9090, _ip("127.0.0.1"))[0]  # another port
    assert not policy.admits("other.lan", 5432, _ip("10.1.2.3"))[0]  # only through the wildcard
    assert not policy.admits("evil.example", 8080, _ip("127.0.0.1"))[0]
    assert policy.admits("evil.example", 8080, _ip("93.184.216.34")) == (True, "")


def test_an_ip_rule_names_resolved_addresses_too():
    policy = Policy("learn", ["10.0.0.0/8:5432", "127.0.0.1:8080"])
    assert policy.admits("db.corp.example", 5432, _ip("10.9.8.7")) == (True, "10.0.0.0/8:5432")
    assert policy.admits("db.corp.example", 5432, _ip("::ffff:10.9.8.7")) == (True, "10.0.0.0/8:5432")
    assert not policy.admits("db.corp.example", 5433, _ip("10.9.8.7"))[0]
    assert policy.admits("localhost", 8080, _ip("127.0.0.1")) == (True, "127.0.0.1:8080")


@pytest.mark.parametrize("addr,reason", [
    ("127.0.0.1", "loopback"), ("::1", "loopback"), ("0.0.0.0", "unspecified"), ("::", "unspecified"),
    ("169.254.169.254", "link-local"), ("fe80::1", "link-local"), ("10.0.0.1", "private"),
    ("172.16.0.1", "private"), ("192.168.0.1", "private"), ("100.64.0.1", "shared (carrier-grade NAT)"),
    ("fc00::1", "unique-local"), ("224.0.0.1", "multicast"), ("ff02::1", "multicast"), ("240.0.0.1", "reserved"),
    ("::ffff:127.0.0.1", "IPv4-mapped loopback"), ("::7f00:1", "IPv4-compatible loopback"),
    ("::ffff:0:7f00:1", "IPv4-translated loopback"), ("64:ff9b::7f00:1", "NAT64 loopback"),
    ("2002:a9fe:a9fe::", "6to4 link-local"), ("2001:0:7f00:1::", "Teredo loopback"),
    ("::808:808", "IPv4-compatible (deprecated)"), ("4000::1", "reserved"),
])
def test_classify_names_the_range(addr, reason):
    assert rules.classify(_ip(addr))[0] == reason


@pytest.mark.parametrize("addr", ["8.8.8.8", "2606:4700:4700::1111", "64:ff9b::808:808", "2002:808:808::",
                                  "2001:0:4136:e378:8000:63bf:f7f7:f7f7"])
def test_classify_passes_global_unicast(addr):
    assert rules.classify(_ip(addr)) is None


def test_mapped_loopback_is_caught_although_python_says_it_is_not_loopback():
    addr = _ip("::ffff:127.0.0.1")
    if addr.is_loopback:  # newer Pythons look inside; 3.11 does not, and the check must not depend on it
        pytest.skip("this Python's ipaddress sees through IPv4-mapped addresses")
    assert not Policy("learn", []).decide("[::ffff:127.0.0.1]", 80)[0]


@pytest.mark.parametrize("text,first,last", [
    ("10.0.0.0/8", "10.0.0.0", "10.255.255.255"),
    ("10.0.0.0/8:8080", "10.0.0.0", "10.255.255.255"),
    ("[fd00::/8]:443", "fd00::", "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
    ("fd00::/8", "fd00::", "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
    ("[::ffff:10.0.0.0/104]", "10.0.0.0", "10.255.255.255"),
    ("192.168.1.7", "192.168.1.7", "192.168.1.7"),
])
def test_cidr_rules(text, first, last):
    import ipaddress

    rule = parse_rule(text)
    assert rule.contains(_ip(first)) and rule.contains(_ip(last))
    before, after = int(_ip(first)) - 1, int(_ip(last)) + 1
    ip_type = ipaddress.IPv4Address if _ip(first).version == 4 else ipaddress.IPv6Address
    assert not rule.contains(ip_type(before)) and not rule.contains(ip_type(after))


@pytest.mark.parametrize("bad", ["10.0.0.5/8", "10.0.0.0/33", "*.10.0.0.0/8", "127.1", "0x7f.0.0.1",
                                 "2130706433:80", "[fe80::1%eth0]", "fe80::1%eth0", "*", "*:443", "10.0.0.0/8/8"])
def test_malformed_address_rules(bad):
    with pytest.raises(ValueError):
        parse_rule(bad)


def test_propose_leaves_out_hosts_a_hostile_request_logged():
    entries = [{"host": "\x1b]0;pwned\x07", "port": 443}, {"host": "a\x00b", "port": 443},
               {"host": "x" * 300, "port": 443}, {"host": "ok.example", "port": "443"},
               {"host": "ok.example", "port": True}, {"host": "127.1", "port": 80},
               {"host": "good.example", "port": 443}, {"host": "::ffff:7f00:1", "port": 8080}]
    patterns, counts = rules.propose(entries)
    assert patterns == ["[::ffff:7f00:1]:8080", "good.example"]
    assert [c["host"] for c in counts] == ["::ffff:7f00:1", "good.example"]


def test_the_balanced_preset_of_config_md_allows_apis_registries_and_github_only():
    import json
    import os
    import re

    from agentsh.policy.rules import check_allow, expand

    with open(os.path.join(os.path.dirname(__file__), "..", "..", "docs", "config.md")) as f:
        block = re.search(r'\[network\]          # "balanced"\nmode = "allow"\nallow = (\[.*\])\n', f.read())
    items = json.loads(block.group(1))
    assert check_allow(items, "[network] allow") == items
    policy = Policy("allow", expand(items))
    for host in ("api.anthropic.com", "api.openai.com", "registry.npmjs.org", "pypi.org", "github.com"):
        assert policy.decide(host, 443)[0], host
    assert not policy.decide("example.com", 443)[0] and not policy.decide("github.com", 22)[0]
