"""devcontainer.json resolved as the spec and the reference CLI resolve it: variables, env, configs, fuzz."""

import json
import random

import pytest

from agentsh.base.errors import ConfigError
from agentsh.policy import devcontainer
from agentsh.policy.devcontainer_vars import Resolver, container_substitute, devcontainer_id

ENV = {"HOME": "/home/u", "USER": "u", "TOKEN": "s3cr3t", "EMPTY": ""}


def resolve(text, root="/src/app"):
    return Resolver(root, f"{root}/.devcontainer/devcontainer.json", ENV).text(text)


@pytest.mark.parametrize("text, want, host", [
    ("${localWorkspaceFolder}/x", "/src/app/x", set()),
    ("${containerWorkspaceFolder}", "/src/app", set()),  # the project is mounted at its own path
    ("${localWorkspaceFolderBasename}-${containerWorkspaceFolderBasename}", "app-app", set()),
    ("${localEnv:HOME}/.kube", "/home/u/.kube", {"HOME"}),
    ("${env:USER}", "u", {"USER"}),
    ("${localEnv:MISSING}", "", set()),
    ("${localEnv:MISSING:fallback}", "fallback", set()),
    ("${localEnv:MISSING:a:b}", "a", set()),  # the reference takes the first default word
    ("${localEnv:EMPTY:x}", "", {"EMPTY"}),  # set but empty is set
    ("${localHomeFolder}", "/home/u", {"HOME"}),
    ("$${literal}", "$${literal}", set()),  # an unknown name stays as written
    ("${unknown} and ${}", "${unknown} and ${}", set()),
    ("${containerEnv:PATH}:/x", "${containerEnv:PATH}:/x", set()),  # resolved inside, later
    ("no variables", "no variables", set()),
])
def test_substitution(text, want, host):
    got = resolve(text)
    assert got == want and set(got.host) == host


def test_container_env_is_resolved_from_the_sandbox():
    assert container_substitute("${containerEnv:PATH}:/x ${containerEnv:NO:dflt} ${containerEnv:NONE}",
                                {"PATH": "/usr/bin"}) == "/usr/bin:/x dflt "
    assert resolve("${containerEnv:PATH}").container and not resolve("${localEnv:HOME}").container


def test_devcontainer_id_is_the_reference_clis():
    # The reference CLI: sha256 of JSON.stringify(idLabels, sorted keys), as BigInt in base 32, 52 digits.
    assert devcontainer_id("/home/u/proj", "/home/u/proj/.devcontainer/devcontainer.json") == \
        "14ak8ob72e8kj9tspe40d7s4kp04qkoe2serr1g7b3oea7nffegl"
    assert resolve("${devcontainerId}") == devcontainer_id("/src/app", "/src/app/.devcontainer/devcontainer.json")


def test_a_variable_without_a_name_is_refused():
    with pytest.raises(ConfigError, match="names no variable"):
        resolve("${localEnv}")


def dc(root, data, environ=None, name="devcontainer.json"):
    (root / ".devcontainer").mkdir(exist_ok=True)
    (root / ".devcontainer" / name).write_text(json.dumps(data))
    return devcontainer.Devcontainer(str(root / ".devcontainer" / name), data, str(root), environ or ENV)


def test_host_values_never_reach_the_container_env(tmp_path):
    d = dc(tmp_path, {"containerEnv": {"WS": "${containerWorkspaceFolder}", "TOK": "${localEnv:TOKEN}",
                                       "LIT": "$${literal}", "N": 3},
                      "remoteEnv": {"PATH": "${containerEnv:PATH}:/opt/bin", "GONE": None, "HOMEDIR": "${env:HOME}",
                                    "MIX": "${localEnv:USER}:${containerEnv:PATH}"}})
    assert d.env == {"WS": str(tmp_path), "LIT": "$${literal}", "N": "3"}
    assert d.exec_env == {"TOK": "s3cr3t", "HOMEDIR": "/home/u"}  # given to each command like credentials
    assert d.late_env == {"PATH": "${containerEnv:PATH}:/opt/bin"}
    assert d.unset == ["GONE"]
    assert dict(d.not_applied)["remoteEnv.MIX"].startswith("mixes host values")
    notices = d.notices()
    assert any("containerEnv.TOK takes the host's TOKEN" in n for n in notices)
    assert any("remoteEnv.HOMEDIR takes the host's HOME" in n for n in notices)
    assert sorted(d.host_vars) == ["HOME", "TOKEN"]


def test_remote_env_null_removes_what_container_env_set(tmp_path):
    d = dc(tmp_path, {"containerEnv": {"A": "1", "B": "${localEnv:TOKEN}"}, "remoteEnv": {"A": None, "B": None}})
    assert d.env == {} and d.exec_env == {} and d.unset == ["A", "B"]


def test_substitution_reaches_every_property_agentsh_uses(tmp_path):
    (tmp_path / ".devcontainer").mkdir()
    (tmp_path / ".devcontainer" / "Dockerfile").write_text("FROM x\n")
    d = dc(tmp_path, {
        "build": {"dockerfile": "Dockerfile", "args": {"USER_NAME": "${localEnv:USER}", "WS": "${localWorkspaceFolder}"}},
        "mounts": ["source=${localEnv:HOME}/.kube,target=/home/vscode/.kube,type=bind",
                   "source=${localWorkspaceFolderBasename}-cache,target=${containerWorkspaceFolder}/node_modules,type=volume"],
        "postCreateCommand": "cd ${containerWorkspaceFolder} && make",
        "postStartCommand": ["echo", "${localEnv:USER}"],
        "remoteUser": "${localEnv:USER}",
        "workspaceFolder": "${containerWorkspaceFolder}",
    })
    assert d.build_args == {"USER_NAME": "u", "WS": str(tmp_path)}
    assert d.mounts == ["/home/u/.kube:/home/vscode/.kube"]
    assert d.volumes == [(f"{tmp_path.name}-cache", f"{tmp_path}/node_modules", False)]
    assert d.lifecycle["postCreateCommand"] == [("", ["/bin/sh", "-c", f"cd {tmp_path} && make"], frozenset())]
    assert d.lifecycle["postStartCommand"] == [("", ["echo", "u"], frozenset({"USER"}))]  # handed over by pipe
    assert d.user == "u" and d.workdir == str(tmp_path)
    assert not d.not_applied and not d.ignored


def test_forward_ports_of_another_service_are_not_the_sandboxs(tmp_path):
    d = dc(tmp_path, {"forwardPorts": ["db:5432", 3000, "localhost:8080", "5432"], "appPort": [9000, "8001:8000"]})
    assert d.ports == [3000, 8080, 5432, 9000, 8000]
    assert dict(d.not_applied) == {"forwardPorts db:5432": "a port of another host or service"}
    assert "appPort 8001:8000: published as container port 8000" in d.notices()[0]


def test_mounts_of_every_kind(tmp_path):
    d = dc(tmp_path, {"mounts": [
        "source=/srv/data,target=/data,type=bind,readonly,consistency=cached",
        {"source": "vol", "target": "/cache", "type": "volume"},
        "type=volume,target=/anon",
        "type=tmpfs,target=/scratch",
        "source=/var/run/docker.sock,target=/var/run/docker.sock,type=bind",
        "source=x,target=/y,type=npipe",
        "source=/a,target=/b,type=bind,bind-propagation=rshared"]})
    assert d.mounts == ["/srv/data:/data:ro", "/a:/b"]
    assert d.volumes == [("vol", "/cache", False)]
    assert d.tmpfs == [("/anon", ""), ("/scratch", "")]
    assert dict(d.not_applied) == {
        "mounts[4] /var/run/docker.sock": "would hand the sandbox the host's container engine",
        "mounts[5] type=npipe": "only bind, volume and tmpfs mounts"}
    assert ("mounts[6].bind-propagation", "mount option agentsh does not pass") in d.ignored
    assert d.volume_name("k123", "vol") == "agentsh-dc-k123-vol"


def test_compose_applies_nothing_and_says_so_in_one_line(tmp_path):
    d = dc(tmp_path, {"dockerComposeFile": ["../docker-compose.yml"], "service": "app", "workspaceFolder": "/w",
                      "remoteUser": "node", "forwardPorts": [3000, "db:3306"], "postCreateCommand": "npm ci"})
    assert d.compose and d.user is None and d.ports == [] and d.lifecycle == {} and d.image is None
    assert [p for p, _ in d.not_applied] == ["dockerComposeFile ../docker-compose.yml", "service", "workspaceFolder",
                                             "remoteUser", "forwardPorts", "postCreateCommand"]
    assert len(d.notices()) == 1 and "nothing of this file is applied" in d.notices()[0]


def test_lifecycle_forms_and_wait_for(tmp_path):
    d = dc(tmp_path, {"onCreateCommand": "a", "updateContentCommand": ["b", "c"],
                      "postCreateCommand": {"x": "d", "y": ["e"]}, "postStartCommand": "", "postAttachCommand": "f",
                      "waitFor": "onCreateCommand"})
    assert list(d.lifecycle) == ["onCreateCommand", "updateContentCommand", "postCreateCommand", "postAttachCommand"]
    assert d.wait_for == "onCreateCommand"
    assert [label for label, _, _ in d.lifecycle["postCreateCommand"]] == ["x", "y"]
    with pytest.raises(ConfigError, match="waitFor"):
        dc(tmp_path, {"waitFor": "never"})


def test_host_requirements_and_editor_settings_are_reported(tmp_path):
    d = dc(tmp_path, {"hostRequirements": {"cpus": 4, "memory": "8gb", "gpu": "optional"},
                      "customizations": {}, "settings": {}, "extensions": [], "updateRemoteUserUID": True,
                      "shutdownAction": "none", "$schema": "x", "secrets": {}, "nonsense": 1})
    line = d.notices()[0]
    assert "hostRequirements (cpus 4, memory 8gb, gpu optional): not checked" in line
    assert "customizations, settings, extensions, $schema (editor settings)" in line
    assert "nonsense (not a devcontainer.json property)" in line
    assert d.plan()["host_requirements"] == {"cpus": 4, "memory": "8gb", "gpu": "optional"}


# -- every property accounted for -------------------------------------------------------


def accounted(d, data):
    """Each top-level key is honoured, not applied (with why) or ignored."""
    named = set(d.honoured) | {p.split(" ")[0].split("[")[0].split(".")[0] for p, _ in d.not_applied} | \
        {p.split(" ")[0].split("[")[0].split(".")[0] for p, _ in d.ignored}
    return {k for k in data if devcontainer._printable(k) not in named}


def test_a_utf8_bom_is_accepted(tmp_path):
    (tmp_path / ".devcontainer.json").write_bytes(b'\xef\xbb\xbf{"image": "debian:12"}')
    assert devcontainer.load(str(tmp_path)).image == "debian:12"


def test_a_missing_dockerfile_is_one_line(tmp_path):
    (tmp_path / ".devcontainer.json").write_text('{"build": {"dockerfile": "Dockerfile"}}')
    with pytest.raises(ConfigError, match=r"key 'build.dockerfile': .*Dockerfile does not exist"):
        devcontainer.load(str(tmp_path))


def test_build_target_options_and_cache_from(tmp_path):
    (tmp_path / ".devcontainer").mkdir()
    (tmp_path / ".devcontainer" / "Dockerfile").write_text("FROM x AS dev\n")
    d = dc(tmp_path, {"build": {"dockerfile": "Dockerfile", "target": "dev", "cacheFrom": "ghcr.io/o/app:cache",
                                "options": ["--no-cache", "--build-arg=X=1", "--network=host", "--secret",
                                            "id=a,src=/etc/shadow", "--platform", "linux/amd64"], "weird": 1}})
    assert d.target == "dev" and d.cache_from == ["ghcr.io/o/app:cache"]
    assert d.build_options == ["--no-cache", "--platform=linux/amd64"] and d.build_args == {"X": "1"}
    assert set(dict(d.not_applied)) == {"build.options --network=host", "build.options --secret"}
    assert ("build.weird", "not a build property") in d.ignored


# -- choosing a config -------------------------------------------------------------------


def test_named_configs_are_found_listed_and_chosen(tmp_path):
    for name in ("python", "node"):
        (tmp_path / ".devcontainer" / name).mkdir(parents=True)
        (tmp_path / ".devcontainer" / name / "devcontainer.json").write_text(f'{{"image": "{name}:1"}}')
    assert devcontainer.configs(str(tmp_path)) == [
        ("node", str(tmp_path / ".devcontainer/node/devcontainer.json")),
        ("python", str(tmp_path / ".devcontainer/python/devcontainer.json"))]
    assert devcontainer.find(str(tmp_path)) is None  # several and none chosen
    assert "several devcontainer configs (node, python)" in devcontainer.ambiguity(str(tmp_path))
    assert devcontainer.load(str(tmp_path), "python").image == "python:1"
    assert "no devcontainer config named 'go'" in devcontainer.ambiguity(str(tmp_path), "go")
    path = devcontainer.find(str(tmp_path), "node")
    assert devcontainer.config_root(path) == str(tmp_path) and devcontainer.config_name(path) == "node"
    import shutil

    shutil.rmtree(tmp_path / ".devcontainer" / "node")
    assert devcontainer.find(str(tmp_path)).endswith("python/devcontainer.json")  # the only one is found
    assert devcontainer.ambiguity(str(tmp_path)) is None
    (tmp_path / ".devcontainer" / "devcontainer.json").write_text('{"image": "top:1"}')
    assert devcontainer.load(str(tmp_path)).image == "top:1"  # the top one comes first
    assert devcontainer.load(str(tmp_path), ".").image == "top:1"


def test_a_symlinked_named_config_folder_is_not_looked_into(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "devcontainer.json").write_text('{"image": "x"}')
    root = tmp_path / "p"
    (root / ".devcontainer").mkdir(parents=True)
    (root / ".devcontainer" / "evil").symlink_to(elsewhere)
    assert devcontainer.configs(str(root)) == [] and devcontainer.find(str(root)) is None
    assert devcontainer.find(str(root), "evil") is None


# -- fuzzed shapes: the module's own error, or a Devcontainer; nothing else -------------

KEYS = ["image", "build", "dockerFile", "context", "remoteUser", "containerUser", "containerEnv", "remoteEnv",
        "mounts", "forwardPorts", "appPort", "runArgs", "privileged", "capAdd", "securityOpt", "init",
        "overrideCommand", "workspaceFolder", "workspaceMount", "hostRequirements", "features",
        "overrideFeatureInstallOrder", "waitFor", "onCreateCommand", "updateContentCommand", "postCreateCommand",
        "postStartCommand", "postAttachCommand", "initializeCommand", "dockerComposeFile", "service",
        "customizations", "name", "secrets", "portsAttributes", "x"]
WORDS = ["", "a", "-", "--privileged", "${localEnv:HOME}", "${containerEnv:PATH}", "${localEnv}", "${", "}",
         "source=/a,target=/b", "type=volume,source=v,target=/v", "type=tmpfs,target=/t", "db:5432", "3000",
         "/etc/passwd", "../..", "./f", "ghcr.io/x/y:1", "\u001b[2J", "\u0000", "-e", "A=1", "--cap-add",
         "postCreateCommand", "Dockerfile", "..", ".", "é", "${devcontainerId}", "$${x}", "a:b:c"]


def shape(rng, depth=0):
    kind = rng.randrange(9 if depth < 3 else 5)
    if kind == 0:
        return rng.choice(WORDS)
    if kind == 1:
        return rng.choice([0, 1, -1, 3000, 70000, 1.5, 2 ** 70])
    if kind == 2:
        return rng.choice([True, False])
    if kind == 3:
        return None
    if kind == 4:
        return rng.choice(WORDS) + rng.choice(WORDS)
    if kind in (5, 6):
        return [shape(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(KEYS + WORDS): shape(rng, depth + 1) for _ in range(rng.randrange(4))}


def test_fuzzed_files_raise_only_config_errors(tmp_path):
    rng = random.Random(14)
    (tmp_path / ".devcontainer").mkdir()
    (tmp_path / ".devcontainer" / "Dockerfile").write_text("FROM x\n")
    (tmp_path / ".devcontainer" / "f").mkdir()
    path = str(tmp_path / ".devcontainer" / "devcontainer.json")
    outcomes = {"ok": 0, "refused": 0}
    for _ in range(3000):
        data = {rng.choice(KEYS): shape(rng) for _ in range(rng.randrange(1, 6))}
        try:
            d = devcontainer.Devcontainer(path, data, str(tmp_path), ENV)
        except ConfigError as e:
            assert str(e) and "\n" not in e.message
            outcomes["refused"] += 1
            continue
        d.notices()
        json.dumps(d.plan())
        assert not accounted(d, data), data
        outcomes["ok"] += 1
    assert outcomes["ok"] > 300 and outcomes["refused"] > 300


@pytest.mark.parametrize("text", ["", "{", "[]", "null", '{"a": 1,,}', "\ufeff", '{"a": "\\ud800"}',
                                  "[" * 5000 + "]" * 5000, '{"image": "x"} trailing'])
def test_fuzzed_text_raises_only_config_errors(tmp_path, text):
    (tmp_path / ".devcontainer.json").write_text(text, errors="surrogatepass")
    try:
        devcontainer.load(str(tmp_path))
    except ConfigError:
        pass
