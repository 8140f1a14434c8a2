import json
import os

import pytest

from agentsh.base.errors import ConfigError
from agentsh.policy import devcontainer

DATA = os.path.join(os.path.dirname(__file__), "data")


@pytest.mark.parametrize("text, want", [
    ('{"a": 1,}', {"a": 1}),
    ('{"a": [1, 2, ], }', {"a": [1, 2]}),
    ('{"url": "http://x//y", // c\n "b": "/* not a comment */"}', {"url": "http://x//y", "b": "/* not a comment */"}),
    ('{"q": "say \\"hi\\", // still string"}', {"q": 'say "hi", // still string'}),
    ('/* head */ {"a": /* mid */ 1 /* tail */, /* before brace */ }', {"a": 1}),
    ('{"a": 1, // comment after comma\n}', {"a": 1}),
])
def test_jsonc(text, want):
    assert json.loads(devcontainer.strip_jsonc(text)) == want


def test_real_world_file(tmp_path):
    (tmp_path / ".devcontainer").mkdir()
    with open(os.path.join(DATA, "devcontainer-python.json")) as f:
        (tmp_path / ".devcontainer" / "devcontainer.json").write_text(f.read())
    (tmp_path / ".devcontainer" / "Dockerfile").write_text("FROM x\n")
    dc = devcontainer.load(str(tmp_path))
    assert dc.dockerfile == str(tmp_path / ".devcontainer" / "Dockerfile")
    assert dc.context == str(tmp_path)
    assert dc.build_args == {"VARIANT": "3.12-bookworm", "NODE_VERSION": "lts/*"}
    assert dc.user == "vscode"
    assert dc.env == {"APP_ENV": "dev", "URL": "http://example.com/a//b"}
    assert dc.mounts == [f"{tmp_path}/../data:/data:ro"]
    assert dc.volumes == [("vol", "/cache", False)]
    assert dc.ports == [8000]  # db:5432 is another service's port
    assert dc.post_create_commands() == [["/bin/sh", "-c", "pip3 install --user -r requirements.txt"]]
    assert dc.ignored == [("customizations", "editor settings")]
    assert [p for p, _ in dc.not_applied] == ["forwardPorts db:5432", "initializeCommand"]
    assert [(f.ref, f.oci.registry, f.oci.repository, f.digest) for f in dc.features] == [
        ("ghcr.io/devcontainers/features/github-cli:1", "ghcr.io", "devcontainers/features/github-cli", None)]  # at ab-up
    assert dc.files() == [dc.path, dc.dockerfile]
    notices = dc.notices()
    assert len(notices) == 1
    assert "initializeCommand (it would run on the host; never run)" in notices[0]
    assert "ignored: customizations (editor settings)" in notices[0]


def test_object_post_create_and_old_spelling(tmp_path):
    (tmp_path / "Containerfile").write_text("FROM x\n")
    (tmp_path / ".devcontainer.json").write_text(
        '{"dockerFile": "Containerfile", "postCreateCommand": {"a": "make", "b": ["npm", "ci"]}}')
    dc = devcontainer.load(str(tmp_path))
    assert dc.dockerfile == str(tmp_path / "Containerfile")
    assert dc.post_create_commands() == [["/bin/sh", "-c", "make"], ["npm", "ci"]]
    assert [label for label, _, _ in dc.lifecycle["postCreateCommand"]] == ["a", "b"]  # run in parallel
    assert not dc.not_applied and not dc.ignored


def test_errors_name_the_file(tmp_path):
    (tmp_path / ".devcontainer.json").write_text('{"image": "x" "oops"}')
    with pytest.raises(ConfigError, match=r"\.devcontainer\.json: invalid JSON"):
        devcontainer.load(str(tmp_path))
    (tmp_path / ".devcontainer.json").write_text('[1]')
    with pytest.raises(ConfigError, match="top level must be an object"):
        devcontainer.load(str(tmp_path))


def test_absent():
    assert devcontainer.load("/nonexistent-project") is None


# -- values are checked like user input ------------------------------------------------


def write_dc(root, data):
    (root / ".devcontainer").mkdir(exist_ok=True)
    (root / ".devcontainer" / "devcontainer.json").write_text(json.dumps(data))
    (root / ".devcontainer" / "Dockerfile").write_text("FROM x\n")


@pytest.mark.parametrize("data, key, message", [
    ({"image": "--privileged"}, "image", "is not an image reference"),
    ({"image": "debian latest"}, "image", "is not an image reference"),
    ({"image": 3}, "image", "must be a string"),
    ({"build": {"dockerfile": "../../../etc/passwd"}}, "build.dockerfile", "is outside the project"),
    ({"build": {"dockerfile": "/etc/passwd"}}, "build.dockerfile", "is outside the project"),
    ({"build": {"dockerfile": "Dockerfile", "context": "../.."}}, "build.context", "is outside the project"),
    ({"build": {"dockerfile": "Dockerfile", "context": "/"}}, "build.context", "is outside the project"),
    ({"dockerFile": "Dockerfile", "context": "/home"}, "build.context", "is outside the project"),
    ({"build": {"dockerfile": "Dockerfile\u001b[2J"}}, "build.dockerfile", "control character"),
    ({"build": "Dockerfile"}, "build", "must be an object"),
    ({"build": {"dockerfile": "Dockerfile", "args": {"A B": "1"}}}, "build.args", "is not a variable name"),
    ({"build": {"dockerfile": "Dockerfile", "args": {"--network": "host"}}}, "build.args", "is not a variable name"),
    ({"build": {"dockerfile": "Dockerfile", "args": {"A": "x\u0000y"}}}, "build.args", "control character"),
    ({"build": {"dockerfile": "Dockerfile", "args": {"A": ["list"]}}}, "build.args", "must be a string"),
    ({"remoteUser": "root --privileged"}, "remoteUser", "is not a user name"),
    ({"remoteUser": "--user=0"}, "remoteUser", "is not a user name"),
    ({"containerUser": "a:b:c"}, "containerUser", "is not a user name"),
    ({"remoteUser": 0}, "remoteUser", "is not a user name"),
    ({"containerEnv": {"-e": "x"}}, "containerEnv", "is not a variable name"),
    ({"containerEnv": {"A=B": "x"}}, "containerEnv", "is not a variable name"),
    ({"remoteEnv": {"A": "\u001b]0;pwned\u0007"}}, "remoteEnv", "control character"),
    ({"containerEnv": ["A=1"]}, "containerEnv", "must be an object"),
    ({"mounts": ["source=data,target=/data,type=bind"]}, "mounts", "is not an absolute path"),
    ({"mounts": ["source=/srv,target=/data:U,type=bind"]}, "mounts", "holds ':' or ','"),
    ({"mounts": [{"source": "/srv", "target": "/data,rw", "type": "bind"}]}, "mounts", "holds ':' or ','"),
    ({"mounts": ["source=/srv,target=/proc,type=bind"]}, "mounts", "would cover /"),
    ({"mounts": ["source=/srv,target=/run/agentsh,type=bind"]}, "mounts", "would cover /"),
    ({"mounts": ["source=/srv,target=relative,type=bind"]}, "mounts", "is not absolute"),
    ({"mounts": ["source=/a:b,target=/x,type=bind"]}, "mounts", "holds ':'"),
    ({"mounts": [42]}, "mounts", "strings or objects"),
    ({"mounts": "source=/srv,target=/x"}, "mounts", "must be a list"),
    ({"forwardPorts": ["abc"]}, "forwardPorts", "is not a port"),
    ({"forwardPorts": [0]}, "forwardPorts", "is not a port"),
    ({"forwardPorts": [70000]}, "forwardPorts", "is not a port"),
    ({"forwardPorts": [True]}, "forwardPorts", "is not a port"),
    ({"forwardPorts": ["80 -v /:/h"]}, "forwardPorts", "is not a port"),
    ({"forwardPorts": "3000"}, "forwardPorts", "must be a list"),
    ({"postCreateCommand": "echo \u001b[2J"}, "postCreateCommand", "control character"),
    ({"postCreateCommand": ["echo", ["nested"]]}, "postCreateCommand", "holds strings only"),
    ({"postCreateCommand": 7}, "postCreateCommand", "must be a string, a list or an object"),
])
def test_hostile_devcontainer_values_are_refused_naming_file_and_key(tmp_path, data, key, message):
    write_dc(tmp_path, data)
    with pytest.raises(ConfigError) as e:
        devcontainer.load(str(tmp_path))
    assert f"devcontainer.json: key '{key}'" in str(e.value) and message in str(e.value)


def test_legitimate_devcontainer_values_are_kept(tmp_path):
    write_dc(tmp_path, {
        "image": "mcr.microsoft.com/devcontainers/python:1-3.12-bookworm",
        "remoteUser": "1000:1000",
        "containerEnv": {"A": "1", "B": 2, "C": True},
        "build": {"args": {"V": 3}},
        "mounts": [{"source": "${localWorkspaceFolder}/data", "target": "/data", "type": "bind", "readonly": True},
                   "source=/srv/cache,target=/cache,type=bind"],
        "forwardPorts": [3000, "db:5432", "8080"],
        "postCreateCommand": {"a": "make\nmake test", "b": ["npm", "ci", 1]},
    })
    dc = devcontainer.load(str(tmp_path))
    assert dc.image.startswith("mcr.microsoft.com/") and dc.user == "1000:1000"
    assert dc.env == {"A": "1", "B": "2", "C": "true"} and dc.build_args == {"V": "3"}
    assert dc.mounts == [f"{tmp_path}/data:/data:ro", "/srv/cache:/cache"]
    assert dc.ports == [3000, 8080]
    assert dc.post_create_commands() == [["/bin/sh", "-c", "make\nmake test"], ["npm", "ci", "1"]]


def test_run_args_and_other_engine_flags_that_weaken_the_sandbox_are_refused(tmp_path):
    write_dc(tmp_path, {"runArgs": ["--privileged", "-v", "/:/host", "--cap-add", "SYS_ADMIN", "--pid=host",
                                    "--device", "/dev/kvm", "--security-opt", "seccomp=unconfined",
                                    "--security-opt=apparmor=unconfined", "--network=host", "--userns=host"],
                        "workspaceMount": "source=/,target=/w",
                        "capAdd": ["SYS_ADMIN"], "privileged": True, "securityOpt": ["seccomp=unconfined"],
                        "\u001b[2Jname": 1})
    dc = devcontainer.load(str(tmp_path))
    refused = dict(dc.not_applied)
    assert refused == {
        "runArgs --privileged": "gives the sandbox every capability and the host's devices",
        "runArgs -v /:/host": "host paths reach the sandbox only through mounts, which ab-allow shows",
        "runArgs --cap-add SYS_ADMIN": "adds capabilities; config cap_add is yours to set",
        "runArgs --pid=host": "shares a host namespace with the sandbox",
        "runArgs --device /dev/kvm": "gives the sandbox host devices",
        "runArgs --security-opt seccomp=unconfined": refused["runArgs --security-opt seccomp=unconfined"],
        "runArgs --security-opt=apparmor=unconfined": refused["runArgs --security-opt seccomp=unconfined"],
        "runArgs --network=host": "shares a host namespace with the sandbox",
        "runArgs --userns=host": "shares a host namespace with the sandbox",
        "workspaceMount": f"agentsh mounts the project at its own path, {tmp_path}",
        "capAdd SYS_ADMIN": "adds capabilities; config cap_add is yours to set",
        "privileged": "gives the sandbox every capability and the host's devices",
        "securityOpt seccomp=unconfined": refused["securityOpt seccomp=unconfined"],
    }
    assert "seccomp" in refused["securityOpt seccomp=unconfined"]
    assert dc.ignored == [("'\\x1b[2Jname'", "not a devcontainer.json property")]
    assert "\u001b" not in dc.notices()[0]  # names from the file are shown escaped
    assert dc.run_args == [] and not dc.mounts and dc.user is None and dc.image is None and dc.dockerfile is None


def test_safe_run_args_are_passed_rebuilt(tmp_path):
    write_dc(tmp_path, {"runArgs": ["--add-host=db:127.0.0.1", "--shm-size", "1g", "-e", "A=1", "--env=B=${localWorkspaceFolderBasename}",
                                    "-p", "8080:80", "--tmpfs", "/scratch:size=64m,exec", "--init", "--rm",
                                    "--label", "team=x", "--label=io.agentsh.managed=false", "--weird-flag"]})
    dc = devcontainer.load(str(tmp_path))
    assert dc.run_args == ["--add-host=db:127.0.0.1", "--shm-size=1g", "--label=team=x"]
    assert dc.env == {"A": "1", "B": tmp_path.name}
    assert dc.ports == [80] and dc.tmpfs == [("/scratch", "size=64m,exec")]
    assert dict(dc.not_applied) == {"runArgs --label=io.agentsh.managed=false": "agentsh's own labels",
                                    "runArgs --weird-flag": "not known to be safe in a sandbox"}
    assert {p for p, _ in dc.ignored} == {"runArgs --init", "runArgs --rm", "runArgs -p 8080:80"}


def test_a_dockerfile_reached_through_a_symlink_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "Dockerfile").write_text("FROM x\n")
    root = tmp_path / "p"
    root.mkdir()
    (root / "linked").symlink_to(outside)
    write_dc(root, {"build": {"dockerfile": "../linked/Dockerfile"}})
    with pytest.raises(ConfigError, match="reached through a symlink"):
        devcontainer.load(str(root))
    write_dc(root, {"build": {"dockerfile": "Dockerfile", "context": "../linked"}})
    with pytest.raises(ConfigError, match="key 'build.context'.*reached through a symlink"):
        devcontainer.load(str(root))


def test_a_symlinked_devcontainer_is_never_read(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "devcontainer.json").write_text('{"image": "x"}')
    root = tmp_path / "p"
    root.mkdir()
    (root / ".devcontainer").symlink_to(elsewhere)  # a directory link: not looked into
    assert devcontainer.find(str(root)) is None
    (root / ".devcontainer.json").symlink_to(elsewhere / "devcontainer.json")  # a file link: found, refused
    from agentsh.policy.trust import NotRegular

    with pytest.raises(NotRegular, match="symlink"):
        devcontainer.load(str(root))
