"""A compose-based devcontainer.json: compose files read, merged, interpolated, the service applied, refusals."""

import json
import random

import pytest

from agentsh.base.errors import ConfigError
from agentsh.policy import devcontainer, trust
from agentsh.policy.devcontainer_compose import Env, Refused, interpolate, merge, parse_dotenv

HOST = {"HOME": "/home/u", "TOKEN": "s3cr3t", "EMPTY": ""}


def project(tmp_path, files, config=None, environ=HOST):
    """A project with compose files (name -> text, under the root) and its devcontainer.json."""
    (tmp_path / ".devcontainer").mkdir(exist_ok=True)
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    data = {"dockerComposeFile": "../compose.yml", "service": "app", **(config or {})}
    path = tmp_path / ".devcontainer" / "devcontainer.json"
    path.write_text(json.dumps(data))
    return devcontainer.Devcontainer(str(path), data, str(tmp_path), environ)


@pytest.mark.parametrize("text, want, host", [
    ("${TOKEN}", "s3cr3t", {"TOKEN"}),
    ("$TOKEN/x", "s3cr3t/x", {"TOKEN"}),
    ("${MISSING}", "", set()),
    ("${MISSING:-dflt}", "dflt", set()),
    ("${MISSING-dflt}", "dflt", set()),
    ("${EMPTY:-dflt}", "dflt", {"EMPTY"}),  # :- treats empty as unset
    ("${EMPTY-dflt}", "", {"EMPTY"}),  # - only unset
    ("${FROMFILE}", "file", set()),  # .env values are project content, not host values
    ("${MISSING:-${FROMFILE}}", "file", set()),  # nested default
    ("${TOKEN:+set}", "set", {"TOKEN"}),
    ("$$5 and $${X}", "$5 and ${X}", set()),
    ("no variables", "no variables", set()),
    ("a $ b", "a $ b", set()),
])
def test_interpolation(text, want, host):
    got = interpolate(text, Env(HOST, {"FROMFILE": "file", "TOKEN": "dotenv loses"}), "where")
    assert got == want and set(got.host) == host


@pytest.mark.parametrize("text", ["${MISSING:?needed}", "${MISSING?}", "${unclosed", "${1BAD}", "${X%y}"])
def test_interpolation_refusals_are_one_line(text):
    with pytest.raises(Refused) as e:
        interpolate(text, Env({}, {}), "compose.yml: services.app.image")
    assert "\n" not in e.value.why and "compose.yml" in e.value.why


def test_dotenv_forms():
    assert parse_dotenv("# c\nA=1\nexport B='two words'\nC=\"x\\ny\"\nD=v # note\nE\n\n") == {
        "A": "1", "B": "two words", "C": "x\ny", "D": "v"}
    with pytest.raises(Refused):
        parse_dotenv("not a line")


def test_merge_as_compose_does():
    got = merge([
        {"services": {"app": {"image": "a", "ports": ["1:1"], "environment": ["A=1", "B=2"], "command": ["x", "y"],
                              "volumes": ["v:/data", "./a:/a"], "build": {"context": ".", "args": {"X": "1"}}}},
         "volumes": {"v": {}}},
        {"services": {"app": {"image": "b", "ports": ["2:2"], "environment": {"B": "3"}, "command": "z",
                              "volumes": ["w:/data"], "build": {"args": ["Y=2"]}}, "db": {"image": "pg"}},
         "volumes": {"w": {}}},
    ], "compose.yml")
    app = got["services"]["app"]
    assert app["image"] == "b" and app["ports"] == ["1:1", "2:2"] and app["command"] == "z"
    assert app["environment"] == {"A": "1", "B": "3"}
    assert app["volumes"] == ["w:/data", "./a:/a"]  # by target
    assert app["build"] == {"context": ".", "args": {"X": "1", "Y": "2"}}
    assert set(got["services"]) == {"app", "db"} and set(got["volumes"]) == {"v", "w"}


COMPOSE = """
services:
  app:
    build:
      context: .
      dockerfile: .devcontainer/Dockerfile
      args: {VARIANT: "3.12", TOK: "${TOKEN}"}
      target: dev
    env_file: [app.env]
    environment:
      DATABASE_URL: postgres://db:5432/${DB:-app}
      API: ${TOKEN}
      FROM_HOST:
    volumes:
      - .:/workspaces/proj:cached
      - cache:/home/dev/.cache
      - ./data:/data:ro
      - /var/run/docker.sock:/var/run/docker.sock
      - /scratch
    working_dir: /workspaces/proj
    user: "1000:1000"
    command: sleep infinity
    cap_add: [SYS_PTRACE]
    security_opt: [seccomp:unconfined]
    privileged: true
    network_mode: host
    extra_hosts: ["api.local:127.0.0.1"]
    depends_on: [db]
    healthcheck: {test: ["CMD", "true"]}
    x-custom: 1
    frobnicate: yes
  db:
    image: localhost/postgres:16
    environment:
      POSTGRES_PASSWORD: ${PGPASS-postgres}
      LEAK: ${TOKEN}
    volumes: [pgdata:/var/lib/postgresql/data, ./init.sql:/init.sql:ro, /etc:/host-etc]
    ports: ["5432:5432"]
    devices: [/dev/kvm]
  worker:
    build: ./worker
volumes:
  cache:
  pgdata:
"""


def full(tmp_path, config=None):
    (tmp_path / "proj").mkdir()
    root = tmp_path / "proj"
    (root / ".devcontainer").mkdir()
    (root / ".devcontainer" / "Dockerfile").write_text("FROM x\n")
    (root / "data").mkdir()
    (root / "init.sql").write_text("")
    return project(root, {"compose.yml": COMPOSE,
                          "app.env": "FROM_FILE=1\nDATABASE_URL=overridden\n", ".env": "DB=shop\n"},
                   {"dockerComposeFile": ["../compose.yml"], "forwardPorts": ["db:5432", 3000],
                    "remoteEnv": {"EXTRA": "1"}, "workspaceFolder": "/workspaces/proj/sub"}), root


def test_the_service_is_the_sandbox(tmp_path):
    d, root = full(tmp_path)
    assert d.service == "app" and d.dockerfile == str(root / ".devcontainer" / "Dockerfile")
    assert d.context == str(root) and d.target == "dev" and set(d.build_args) == {"VARIANT", "TOK"}
    assert d.build_host_args == ["TOK"]  # a host value reaches the build by env, never argv
    assert d.env == {"DATABASE_URL": "postgres://db:5432/shop", "FROM_FILE": "1", "EXTRA": "1"}
    assert d.exec_env == {"API": "s3cr3t"}  # from the host: per command, never at create time
    assert d.user == "1000:1000" and d.workdir == str(root / "sub")  # /workspaces/proj is the project's bind
    assert d.service_command == ["/bin/sh", "-c", "sleep infinity"]
    assert d.run_args == ["--add-host=api.local:127.0.0.1"]
    assert d.mounts == [f"{root}/data:/data:ro"] and [v[:2] for v in d.volumes] == [("cache", "/home/dev/.cache")]
    assert ("/scratch", "") in d.tmpfs
    assert d.ports == [3000] and d.sibling_ports == [("db", 5432)]
    not_applied = dict(d.not_applied)
    assert not_applied["services.app.privileged"].startswith("gives the sandbox every capability")
    assert not_applied["services.app.cap_add SYS_PTRACE"].startswith("adds capabilities")
    assert "loosens" in not_applied["services.app.security_opt seccomp:unconfined"]
    assert not_applied["services.app.network_mode host"] == "shares a host namespace with the sandbox"
    assert "inside the project" in not_applied["services.app.volumes[3] /var/run/docker.sock:/var/run/docker.sock"]
    assert not_applied["services.app.frobnicate"] == "not a compose service property agentsh knows"
    assert ("services.app.healthcheck", "ab-up does not wait on health") in d.ignored
    assert len(d.notices()) == 1


def test_siblings_keep_only_what_is_safe(tmp_path):
    d, root = full(tmp_path)
    assert set(d.siblings) == {"db"}  # worker needs a build: refused with the reason
    db = d.siblings["db"]
    assert db["image"] == "localhost/postgres:16" and db["environment"] == {"POSTGRES_PASSWORD": "postgres"}
    assert db["volumes"] == [
        {"type": "volume", "source": "pgdata", "target": "/var/lib/postgresql/data", "readonly": False},
        {"type": "bind", "source": str(root / "init.sql"), "target": "/init.sql", "readonly": True}]
    not_applied = dict(d.not_applied)
    assert "withheld" in not_applied["services.db.environment.LEAK"]
    assert "inside the project" in not_applied["services.db.volumes[2] /etc:/host-etc"]
    assert not_applied["services.db.devices /dev/kvm"] == "gives the sandbox host devices"
    assert "not built by agentsh" in not_applied["services.worker.build"]
    assert "ports" not in db and any(p == "services.db.ports" for p, _ in d.ignored)


def test_every_key_is_accounted_for(tmp_path):
    d, _ = full(tmp_path)
    named = set(d.honoured) | {p.split(" ")[0] for p, _ in d.not_applied} | {p.split(" ")[0] for p, _ in d.ignored}
    for key in ("build", "env_file", "environment", "volumes", "working_dir", "command", "cap_add", "privileged",
                "security_opt", "network_mode", "extra_hosts", "depends_on", "healthcheck", "x-custom", "frobnicate"):
        assert any(n.startswith(f"services.app.{key}") for n in named), key
    assert {"dockerComposeFile", "service", "forwardPorts", "remoteEnv", "workspaceFolder"} <= set(d.honoured)
    plan = d.plan()
    json.dumps(plan)
    assert plan["compose_plan"]["service"] == "app" and plan["compose_plan"]["siblings"] == ["db"]
    assert plan["compose_plan"]["forward_ports"] == ["db:5432"]


def test_override_command_true_keeps_the_keep_alive(tmp_path):
    d = project(tmp_path, {"compose.yml": "services: {app: {image: x, command: [run, it]}}"},
                {"overrideCommand": True})
    assert d.service_command is None and ("services.app.command",
                                          "overrideCommand: the sandbox runs agentsh's keep-alive") in d.ignored


def test_run_services_and_depends_on(tmp_path):
    d = project(tmp_path, {"compose.yml": "services: {app: {image: x, depends_on: {cache: {condition: "
                           "service_started}}}, db: {image: pg}, cache: {image: redis, depends_on: [q]}, "
                           "q: {image: q}, other: {image: o}}"}, {"runServices": ["db"]})
    assert set(d.siblings) == {"db", "cache", "q"} and d.siblings["cache"]["depends_on"] == ["q"]


def test_extends_inside_the_project(tmp_path):
    d = project(tmp_path, {"compose.yml": "services:\n  base: {image: b, environment: {A: '1'}}\n"
                           "  app: {extends: base, environment: {B: '2'}}\n"
                           "  other: {extends: {file: more.yml, service: m}}\n",
                           "more.yml": "services: {m: {image: m}}"})
    assert d.image == "b" and d.env == {"A": "1", "B": "2"} and d.siblings["other"]["image"] == "m"
    assert str(tmp_path / "more.yml") in d.files()


@pytest.mark.parametrize("files, config, why", [
    ({"compose.yml": "services: {app: {extends: {file: /etc/compose.yml, service: x}}}"}, {}, "outside the project"),
    ({"compose.yml": "include: [other.yml]\nservices: {app: {image: x}}"}, {}, "'include'"),
    ({"compose.yml": "services: {db: {image: x}}"}, {}, "not a service"),
    ({"compose.yml": "services: {app: {image: x}}"}, {"runServices": ["nope"]}, "runServices names nope"),
    ({"compose.yml": "services: {app: {image: '${NEEDED:?set it}'}}"}, {}, "NEEDED must be set"),
    ({"compose.yml": "services: [1, 2]"}, {}, "services must be a mapping"),
    ({"compose.yml": "a: &a [*a]"}, {}, ""),
    ({"compose.yml": ": : :\n\t- ["}, {}, "invalid YAML"),
    ({}, {}, "compose.yml"),
    ({"compose.yml": "services: {app: {image: x}}"}, {"dockerComposeFile": "../../outside.yml"}, "outside"),
])
def test_what_cannot_be_honoured_applies_nothing(tmp_path, files, config, why):
    d = project(tmp_path, files, {"remoteUser": "node", "forwardPorts": [3000], "postCreateCommand": "x", **config})
    assert d.user is None and d.ports == [] and d.lifecycle == {} and d.image is None and d.siblings == {}
    assert len(d.notices()) == 1 and "nothing of this file is applied" in d.notices()[0]
    assert why in d.not_applied[0][1]


def test_trust_covers_compose_files_dotenv_and_env_files(tmp_path):
    d = project(tmp_path, {"compose.yml": "services: {app: {image: x, env_file: app.env}}", ".env": "A=1\n",
                           "app.env": "B=2\n"})
    anchor = str(tmp_path / ".devcontainer" / "devcontainer.json")
    before = trust.content_hash(anchor, (tmp_path / ".devcontainer" / "devcontainer.json").read_bytes())
    assert set(trust.covered_files(anchor)) >= {str(tmp_path / n) for n in ("compose.yml", ".env", "app.env")}
    for name in ("compose.yml", ".env", "app.env"):
        old = (tmp_path / name).read_text()
        (tmp_path / name).write_text(old + "\n# edited\n")
        assert trust.content_hash(anchor, (tmp_path / ".devcontainer" / "devcontainer.json").read_bytes()) != before
        (tmp_path / name).write_text(old)
    assert d.env == {"B": "2"}


def test_a_symlinked_compose_file_is_refused(tmp_path):
    (tmp_path / "real.yml").write_text("services: {app: {image: x}}")
    (tmp_path / "compose.yml").symlink_to(tmp_path / "real.yml")
    d = project(tmp_path, {})
    assert d.image is None and "nothing of this file is applied" in d.notices()[0]


WORDS = ["app", "db", "x", "${TOKEN}", "${A:-b}", "$$", "${", "..", "/etc", "./a:/a", "v:/v", "1", "host", "true",
         "sleep infinity", "\x00", "${X:?}", "service:db", "~/.ssh:/s"]
KEYS = ["image", "build", "environment", "env_file", "volumes", "ports", "command", "entrypoint", "user",
        "working_dir", "privileged", "cap_add", "network_mode", "extends", "depends_on", "labels", "tmpfs",
        "extra_hosts", "devices", "healthcheck", "secrets", "frob", "x-a", "context", "dockerfile", "args",
        "target", "file", "service", "type", "source", "target", "read_only"]


def shape(rng, depth=0):
    kind = rng.randrange(7 if depth < 3 else 4)
    if kind == 0:
        return rng.choice(WORDS)
    if kind == 1:
        return rng.randrange(-1, 70000)
    if kind == 2:
        return rng.choice([True, False, None])
    if kind == 3:
        return rng.choice(WORDS) + rng.choice(WORDS)
    if kind in (4, 5):
        return [shape(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(KEYS + WORDS): shape(rng, depth + 1) for _ in range(rng.randrange(4))}


def test_fuzzed_compose_files_raise_only_config_errors(tmp_path):
    rng = random.Random(14)
    (tmp_path / ".devcontainer").mkdir()
    (tmp_path / "a").mkdir()
    outcomes = {"applied": 0, "refused": 0, "error": 0}
    for _ in range(1500):
        services = {rng.choice(["app", "db", "x", "1bad"]): {rng.choice(KEYS): shape(rng)
                                                            for _ in range(rng.randrange(1, 5))}
                    for _ in range(rng.randrange(1, 4))}
        doc = {"services": services, **({"volumes": {"v": shape(rng)}} if rng.random() < 0.3 else {})}
        (tmp_path / "compose.yml").write_text(json.dumps(doc) if rng.random() < 0.9 else json.dumps(doc)[:-3])
        config = {"dockerComposeFile": "../compose.yml", "service": rng.choice(["app", "db", None]),
                  "forwardPorts": rng.choice([[], ["db:5432"], ["x:1"]]),
                  "overrideCommand": rng.choice([True, False]), "runServices": rng.choice([None, ["db"], "db"])}
        path = str(tmp_path / ".devcontainer" / "devcontainer.json")
        try:
            d = devcontainer.Devcontainer(path, config, str(tmp_path), HOST)
        except ConfigError as e:
            assert str(e) and "\n" not in e.message
            outcomes["error"] += 1
            continue
        assert len(d.notices()) <= 1
        json.dumps(d.plan())
        outcomes["applied" if d.service else "refused"] += 1
    assert min(outcomes.values()) > 20, outcomes


# -- the siblings' compose file and the sandbox's network (sandbox.compose) ------------------------------------


def siblings_dev(tmp_path):
    return project(tmp_path, {"compose.yml": "services:\n  app: {image: x}\n"
                              "  db: {image: pg, environment: {P: 'a$$b'}, volumes: [data:/d, ./i:/i:ro, /t],"
                              " labels: {io.agentsh.sibling: forged, team: x}, command: run $$HOME}\n"
                              "volumes: {data: {}}\n", "i": ""},
                   {"forwardPorts": ["db:5432"]})


def fake_project(tmp_path):
    from types import SimpleNamespace

    return SimpleNamespace(sandbox="ab-app-1234abcd", key="k1", slug="app", root=str(tmp_path))


@pytest.mark.parametrize("mode, network, ports", [("full", "ab-app-1234abcd-net", ["127.0.0.1::5432"]),
                                                  ("allow", "ab-app-1234abcd-int", None)])
def test_the_siblings_file_is_agentshs_own(tmp_path, mode, network, ports):
    from agentsh.sandbox import compose

    d = siblings_dev(tmp_path)
    doc = compose.document(fake_project(tmp_path), {"network": {"mode": mode}}, d)
    db = doc["services"]["db"]
    assert doc["networks"] == {"sandbox": {"external": True, "name": network}} and db["networks"] == ["sandbox"]
    assert db["container_name"] == "ab-app-1234abcd-db" and db["restart"] == "no"
    assert db["labels"] == {"team": "x", "io.agentsh.sibling": "ab-app-1234abcd"}  # its own label cannot be forged
    assert db["environment"] == {"P": "a$$b"} and db["command"] == "run $$HOME"  # compose reads back a$b, $HOME
    assert db["volumes"] == ["data:/d", f"{tmp_path}/i:/i:ro", "/t"]
    assert doc["volumes"] == {"data": {"name": "agentsh-dc-k1-data"}}  # the sandbox's volume of the same name
    assert db.get("ports") == ports  # host loopback, and only where the network is not internal


def test_the_sandbox_joins_the_siblings_network_and_hosts_file(tmp_path, monkeypatch):
    from agentsh.egress import network
    from agentsh.sandbox import compose

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    proj = fake_project(tmp_path)
    hosts = compose.hosts_path(proj.sandbox)
    full = compose.sandbox_net_args(proj, {"network": {"mode": "full"}}, [])
    assert full == ["--network=ab-app-1234abcd-net", "-v", f"{hosts}:/etc/hosts:ro"]
    proxied, _ = network.run_args({"network": {"mode": "allow"}})
    allow = compose.sandbox_net_args(proj, {"network": {"mode": "allow"}}, proxied)
    assert allow[0] == "--network=ab-app-1234abcd-int" and "--network=none" not in allow
    assert f"{hosts}:/etc/hosts:ro" in allow and f"{network.RESOLV_CONF}:/etc/resolv.conf:ro" in allow
    assert compose.sandbox_net_args(proj, {"network": {"mode": "none"}}, ["--network=none"]) == ["--network=none"]
    d = siblings_dev(tmp_path)
    assert "no network to reach them" in compose.notices({"network": {"mode": "none"}}, d)[0]
    assert "are not published" in compose.notices({"network": {"mode": "learn"}}, d)[0]
    assert compose.notices({"network": {"mode": "full"}}, d) == []


def test_the_hosts_file_is_rewritten_in_place(tmp_path, monkeypatch):
    import os

    from agentsh.sandbox import compose

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    os.makedirs(compose.files_dir("ab-x"))
    compose.write_hosts("ab-x", "x", {"db": {"address": "10.89.0.3"}})
    inode = os.stat(compose.hosts_path("ab-x")).st_ino
    compose.write_hosts("ab-x", "x", {"db": {"address": "10.89.0.9"}, "web": {"address": ""}})
    assert os.stat(compose.hosts_path("ab-x")).st_ino == inode  # a bind mount follows the inode
    text = open(compose.hosts_path("ab-x")).read()
    assert "10.89.0.9\tdb ab-x-db\n" in text and "web" not in text and text.startswith("127.0.0.1\tlocalhost\n")


def test_without_the_compose_tool_one_line(monkeypatch):
    from types import SimpleNamespace

    from agentsh.base.errors import AgentshError
    from agentsh.sandbox import compose

    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(AgentshError, match="need podman-compose"):
        compose.tool(SimpleNamespace(is_podman=True, exe="podman"))


@pytest.mark.parametrize("plugin, standalone, expected", [
    (True, "/usr/bin/docker-compose", ["docker", "compose"]),
    (False, "/usr/bin/docker-compose", ["/usr/bin/docker-compose"]),
    (False, None, None)])
def test_docker_takes_its_plugin_then_the_stand_alone_tool(monkeypatch, plugin, standalone, expected):
    import subprocess
    from types import SimpleNamespace

    from agentsh.base.errors import AgentshError
    from agentsh.sandbox import compose

    monkeypatch.setattr("shutil.which", lambda name: standalone if name == "docker-compose" else None)
    monkeypatch.setattr(subprocess, "run", lambda argv, **kw: SimpleNamespace(returncode=0 if plugin else 1))
    engine = SimpleNamespace(is_podman=False, exe="docker")
    if expected is None:
        with pytest.raises(AgentshError, match="need Docker Compose") as e:
            compose.tool(engine)
        assert "apt-get install docker-compose" in e.value.fix
    else:
        assert compose.tool(engine) == expected


def test_ab_allow_names_each_sibling(tmp_path):
    from agentsh.policy import config

    d = siblings_dev(tmp_path)
    w = config.widened({}, d)
    assert w["siblings"] == [{"service": "db", "image": "pg", "mounts": [f"{tmp_path}/i -> /i"], "ports": [5432]}]
    assert any(label == "sibling" and value.startswith("db: image pg") for label, value in config.widen_lines(w))


def test_a_parse_is_reused_for_the_same_bytes_only(tmp_path):
    import os

    from agentsh.policy import devcontainer_compose

    first = project(tmp_path, {"compose.yml": "services: {app: {image: one}}"})
    data = (tmp_path / "compose.yml").read_bytes()
    assert first.image == "one" and os.path.isfile(devcontainer_compose._cache_path(data))
    assert project(tmp_path, {"compose.yml": "services: {app: {image: one}}"}).image == "one"
    assert project(tmp_path, {"compose.yml": "services: {app: {image: two}}"}).image == "two"
    dates = project(tmp_path, {"compose.yml": "services: {app: {image: x, labels: {d: 2024-01-01}}}"})
    assert dates.image == "x"  # not plain JSON data: parsed each time, never cached
    assert not os.path.exists(devcontainer_compose._cache_path((tmp_path / "compose.yml").read_bytes()))


def test_an_internal_network_with_a_gateway_is_seen():
    from agentsh.sandbox.compose import gateways

    cni = '[{"name": "n", "subnets": [{"subnet": "10.89.3.0/24"}], "internal": true}]'
    netavark = '[{"name": "n", "subnets": [{"subnet": "10.89.3.0/24", "gateway": "10.89.3.1"}]}]'
    docker = '[{"Name": "n", "IPAM": {"Config": [{"Subnet": "172.20.0.0/16", "Gateway": "172.20.0.1"}]}}]'
    assert gateways(cni) == [] and gateways(netavark) == ["10.89.3.1"] and gateways(docker) == ["172.20.0.1"]
    assert gateways("not json") == ["unknown"]


def test_an_internal_network_with_a_gateway_is_refused_and_removed():
    from agentsh.base.errors import AgentshError
    from agentsh.sandbox import compose

    calls = []

    class Engine:
        def call(self, *args, check=True):
            calls.append(args[:2])
            if args[:2] == ("network", "inspect"):
                made = ("network", "create") in calls
                return (0 if made else 1), ('[{"subnets": [{"subnet": "10.9.0.0/24", "gateway": "10.9.0.1"}]}]'
                                            if made else ""), ""
            return 0, "", ""

    with pytest.raises(AgentshError, match=r"gateway \(10.9.0.1\).*not started"):
        compose._network(Engine(), "ab-x", {"network": {"mode": "allow"}})
    assert calls[-1] == ("network", "rm")


def test_a_warm_check_asks_proc_not_the_engine():
    import os

    from agentsh.base import layout
    from agentsh.base.state import Store
    from agentsh.host import liveness
    from agentsh.sandbox import compose

    store = Store()
    me = os.getpid()
    alive = {"web": {"container": "c", "pid": me, "pid_start": liveness.start_time(me)}}
    dead = {"web": {"container": "c", "pid": me, "pid_start": 1}}
    store.write(layout.compose_record("ab-x"), {"hash": "h1", "siblings": alive})
    assert compose.warm(store, "ab-x", "h1") and not compose.warm(store, "ab-x", "h2")  # the file changed
    store.write(layout.compose_record("ab-x"), {"hash": "h1", "siblings": dead})
    assert not compose.warm(store, "ab-x", "h1")  # crashed (or pid reused): started again
    assert compose.warm(store, "ab-x", "h1", local=False)  # a remote engine's pid means nothing here


@pytest.mark.parametrize("key, value", [("user", "--privileged"), ("working_dir", "-w"), ("stop_signal", "--x y"),
                                        ("shm_size", "-1"), ("tmpfs", ["relative"]), ("healthcheck", "x")])
def test_a_siblings_values_cannot_become_engine_flags(tmp_path, key, value):
    d = project(tmp_path, {"compose.yml": json.dumps({"services": {"app": {"image": "x"},
                                                                   "db": {"image": "pg", key: value}}})})
    assert key not in d.siblings["db"] and f"services.db.{key}" in dict(d.not_applied)


def test_a_siblings_volume_target_holds_no_mount_options(tmp_path):
    d = project(tmp_path, {"compose.yml": json.dumps({"services": {"app": {"image": "x"}, "db": {
        "image": "pg", "volumes": [{"type": "volume", "source": "v", "target": "/d:z,rw"}]}}})})
    assert d.siblings == {} and "without ':' or ','" in d.notices()[0]


@pytest.mark.parametrize("shutdown, stopped", [("stopCompose", True), ("none", False), ("stopContainer", False)])
def test_ab_down_stops_the_siblings_as_shutdown_action_says(shutdown, stopped):
    from agentsh.base import layout
    from agentsh.base.state import Store
    from agentsh.sandbox import compose

    calls = []

    class Engine:
        is_podman = True

        def call(self, *args, check=True):
            calls.append(args[0])
            return 0, "c1\n" if args[0] == "ps" else "", ""

    store = Store()
    store.write(layout.compose_record("ab-x"), {"hash": "h", "shutdown": shutdown, "siblings": {}})
    compose.down(Engine(), store, "ab-x")
    assert ("stop" in calls) == stopped
    compose.down(Engine(), store, "ab-x", remove=True)
    assert "rm" in calls and store.read(layout.compose_record("ab-x")) is None


def test_the_text_dry_run_names_the_service_and_siblings(tmp_path):
    from agentsh.cli.up import render_plan

    d = siblings_dev(tmp_path)
    plan = {"sandbox": "ab-x", "project": str(tmp_path), "build": None, "image": "x", "pull": False, "user": None,
            "env": [], "env_per_command": [], "mounts": [], "ports": [], "lifecycle": {}, "wait_for": None,
            "not_applied": [], "ignored": [], "devcontainer": d.plan()}
    text = render_plan(plan)
    assert "service  app (the sandbox; compose files" in text and "sibling  db (port 5432 on host loopback)" in text
