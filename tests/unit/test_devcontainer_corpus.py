"""A corpus of devcontainer.json files written after public projects' patterns (tests/unit/data/devcontainer).

Each file is fully resolved or refused: every property it has is honoured,
not applied with the reason, or ignored, and nothing else; a file named
refused-* is refused in one line. A handful have their whole plan checked.
Registry (OCI) features resolve against a registry held in memory that
publishes each one named: each ends with a digest, its files and options.
"""

import json
import os
import shutil

import pytest

from agentsh.base.errors import ConfigError
from agentsh.base.state import Store
from agentsh.policy import devcontainer, devcontainer_features, devcontainer_oci
from tests.oci_registry import MemoryRegistry, feature_tar

CORPUS = os.path.join(os.path.dirname(__file__), "data", "devcontainer")
FILES = sorted(f for f in os.listdir(CORPUS) if f.endswith(".json"))
ENV = {"HOME": "/home/u", "USER": "u", "GITHUB_TOKEN": "ghp_example"}


def project(tmp_path, name):
    root = tmp_path / "app"
    (root / ".devcontainer").mkdir(parents=True)
    shutil.copyfile(os.path.join(CORPUS, name), root / ".devcontainer" / "devcontainer.json")
    (root / ".devcontainer" / "Dockerfile").write_text("FROM mcr.microsoft.com/devcontainers/base:bookworm\n")
    for feature in ("tools", "lint"):
        folder = root / ".devcontainer" / "local-features" / feature
        folder.mkdir(parents=True)
        (folder / "devcontainer-feature.json").write_text(json.dumps(
            {"id": feature, "options": {"version": {"type": "string", "default": "1"}},
             **({"installsAfter": ["./lint"]} if feature == "tools" else {})}))
        (folder / "install.sh").write_text("#!/bin/sh\necho installing\n")
    compose = os.path.join(CORPUS, "compose", name[:-len(".json")])  # the compose files a compose-based one names
    if os.path.isdir(compose):
        shutil.copytree(compose, root, dirs_exist_ok=True)
    return root


def load(root):
    path = str(root / ".devcontainer" / "devcontainer.json")
    with open(path, "rb") as f:
        raw = f.read()
    data = devcontainer.parse(raw.decode("utf-8"), path)
    return devcontainer.Devcontainer(path, data, str(root), ENV), data


def unaccounted(d, data):
    def top(p):
        return p.split(" ")[0].split("[")[0].split(".")[0]

    named = set(d.honoured) | {top(p) for p, _ in d.not_applied} | {top(p) for p, _ in d.ignored}
    return sorted(k for k in data if k not in named)


def test_the_corpus_is_large_enough():
    assert len(FILES) >= 40


@pytest.mark.parametrize("name", FILES)
def test_every_file_is_resolved_or_refused(tmp_path, name, monkeypatch, own_cache):
    root = project(tmp_path, name)
    if name.startswith("refused-"):
        with pytest.raises(ConfigError) as e:
            load(root)
        assert "\n" not in str(e.value) and "devcontainer.json" in str(e.value)
        return
    d, data = load(root)
    assert unaccounted(d, data) == []
    assert all(why for _, why in d.not_applied)
    notices = d.notices()
    assert len(notices) <= 1  # one notice
    plan = d.plan()
    json.dumps(plan)
    for steps in plan["lifecycle"].values():  # nothing left for the host to fill in
        for step in steps:
            assert not any("${localWorkspaceFolder" in a or "${containerWorkspaceFolder" in a or "${localEnv" in a
                           for a in step["argv"])
    for m in plan["mounts"]:
        assert "${" not in (m["source"] or "") and "${" not in m["target"]
    assert not any("ghp_example" in v for v in d.env.values())  # host values only per command
    if d.registry_features():
        resolve(d, monkeypatch)
        assert all(f.files and (f.oci is None or f.digest) for f in d.features)
        assert not [p for p, _ in d.not_applied if p.startswith("features ") and "/" in p and "://" not in p]


def resolve(d, monkeypatch):
    """Publish every registry feature `d` names (its options declared with defaults), then resolve them."""
    memory = MemoryRegistry().install(monkeypatch)
    for f in d.features:
        if f.oci is not None:
            options = {"version": {"type": "string", "default": "latest"}, "flag": {"type": "boolean", "default": True}}
            memory.publish(f.oci.base, f.oci.tag or "latest", feature_tar({"id": f.oci.id, "version": "1.0.0",
                                                                          "options": options}))
    devcontainer_features.resolve(d, devcontainer_oci.Fetcher(True), Store())


LOCAL = {"digest": None, "resolved": None, "version": None, "pinned_by": None}


def oci(ref, options):
    """The plan entry of a registry feature as `resolve` publishes it."""
    return {"id": ref.rsplit("/", 1)[-1].split(":")[0], "source": ref, "folder": None, "options": options, "files": 2,
            "version": "1.0.0", "pinned_by": "resolved now"}


EXPECTED = {
    "python-dockerfile-args.json": {
        "image": None, "user": "vscode", "ports": ["8000"], "not_applied": [],
        "build": {"dockerfile": "{root}/.devcontainer/Dockerfile", "context": "{root}", "args": ["NODE_VERSION", "VARIANT"],
                  "target": None, "cache_from": [], "options": []},
        "lifecycle": {"postCreateCommand": [{"name": None, "argv": ["/bin/sh", "-c", "pip install -e .[dev]"],
                                             "host_values": []}]},
        "ignored": [{"property": "customizations", "why": "editor settings"}]},
    "python-django-compose.json": {
        "compose": True, "image": None, "user": "vscode", "ports": ["8000"], "workdir": "{root}",
        "build": {"dockerfile": "{root}/.devcontainer/Dockerfile", "context": "{root}", "args": [], "target": None,
                  "cache_from": [], "options": []},
        "compose_plan": {"files": ["{root}/docker-compose.yml", "{root}/.devcontainer/docker-compose.extend.yml",
                                   "{root}/.devcontainer/db.env"],
                         "service": "web", "siblings": ["db"], "shutdown_action": "stopCompose",
                         "forward_ports": ["db:5432"], "command": ["/bin/sh", "-c", "sleep infinity"]},
        "lifecycle": {"postCreateCommand": [{"name": None, "argv": ["/bin/sh", "-c", "pip install -r requirements.txt"],
                                             "host_values": []}]},
        "not_applied": [{"property": "services.web.cap_add SYS_PTRACE",
                         "why": "adds capabilities; config cap_add is yours to set"},
                        {"property": "services.web.security_opt seccomp:unconfined",
                         "why": "loosens the sandbox's confinement (seccomp, AppArmor, SELinux, no-new-privileges)"}]},
    "node-pnpm-volume.json": {
        "image": "mcr.microsoft.com/devcontainers/javascript-node:20", "user": "node",
        "mounts": [{"type": "volume", "source": "app-node_modules", "target": "{root}/node_modules", "readonly": False}]},
    "go-image.json": {
        "not_applied": [{"property": "runArgs --cap-add=SYS_PTRACE",
                         "why": "adds capabilities; config cap_add is yours to set"},
                        {"property": "runArgs --security-opt seccomp=unconfined",
                         "why": "loosens the sandbox's confinement (seccomp, AppArmor, SELinux, no-new-privileges)"}],
        "run_args": []},
    "secrets-localenv.json": {
        "env": ["EDITOR", "OPENAI_API_KEY", "TZ"], "env_per_command": ["GITHUB_TOKEN"], "env_from_container": []},
    "remoteenv-path.json": {
        "env": ["GOPATH", "GOPRIVATE"], "env_from_container": ["PATH"], "unset": ["GOFLAGS"]},
    "kube-mounts.json": {
        "mounts": [{"type": "bind", "source": "/home/u/.kube", "target": "/home/vscode/.kube", "readonly": False},
                   {"type": "bind", "source": "/home/u/.aws", "target": "/home/vscode/.aws", "readonly": True}]},
    "rust-lifecycle.json": {
        "wait_for": "updateContentCommand",
        "lifecycle": {"onCreateCommand": [{"name": None, "argv": ["/bin/sh", "-c", "rustup component add clippy rustfmt"],
                                           "host_values": []}],
                      "updateContentCommand": [{"name": None, "argv": ["/bin/sh", "-c", "cargo fetch"],
                                                "host_values": []}],
                      "postCreateCommand": [{"name": None, "argv": ["cargo", "build"], "host_values": []}]}},
    "terraform-features.json": {
        "features": [oci("ghcr.io/devcontainers/features/terraform:1", {"VERSION": "1.8", "FLAG": "true"}),
                     oci("ghcr.io/devcontainers/features/azure-cli:1", {"VERSION": "latest", "FLAG": "true"})],
        "not_applied": []},
    "oci-feature-order.json": {
        "features": [oci("ghcr.io/devcontainers/features/common-utils:2",
                         {"VERSION": "latest", "FLAG": "true", "USERNAME": "vscode", "UPGRADEPACKAGES": "false"}),
                     {"id": "lint", "source": "./local-features/lint", "folder": "{root}/.devcontainer/local-features/lint",
                      "options": {"VERSION": "1"}, "files": 2, **LOCAL},
                     oci("ghcr.io/devcontainers/features/python:1",
                         {"VERSION": "3.12", "FLAG": "true", "INSTALLTOOLS": "false"}),
                     oci("ghcr.io/devcontainers/features/git:1", {"VERSION": "latest", "FLAG": "true"})],
        "not_applied": [{"property": "features https://example.com/features/legacy.tgz",
                         "why": "features from a URL are not fetched by agentsh; install the tool in a Dockerfile"}]},
    "local-feature.json": {
        "features": [{"id": "lint", "source": "./local-features/lint", "folder": "{root}/.devcontainer/local-features/lint",
                      "options": {"VERSION": "1"}, "files": 2, **LOCAL},
                     {"id": "tools", "source": "./local-features/tools",
                      "folder": "{root}/.devcontainer/local-features/tools", "options": {"VERSION": "2"}, "files": 2,
                      **LOCAL}]},
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_expected_plans(tmp_path, name, monkeypatch, own_cache):
    root = project(tmp_path, name)
    d, _ = load(root)
    if d.registry_features():
        resolve(d, monkeypatch)
    plan = d.plan()
    want = json.loads(json.dumps(EXPECTED[name]).replace("{root}", str(root)))
    for f in plan["features"]:  # digests are the registry's: checked to be the ones resolved
        if f["digest"]:
            assert f.pop("resolved") == f"{f['source'].rsplit(':', 1)[0]}@{f.pop('digest')}"
        else:
            f.pop("digest"), f.pop("resolved")
    for f in want.get("features", ()):
        f.pop("digest", None), f.pop("resolved", None)
    assert {k: plan[k] for k in want} == want


COMPOSED = {"elixir-compose.json": ("elixir", ["db"]), "kotlin-compose-postgres.json": ("app", ["db"]),
            "node-compose-mongo.json": ("app", ["db"]), "python-django-compose.json": ("web", ["db"]),
            "ruby-rails-compose.json": ("rails-app", ["postgres", "redis", "selenium"])}


@pytest.mark.parametrize("name", sorted(COMPOSED))
def test_compose_files_make_the_service_the_sandbox(tmp_path, name, own_cache):
    """With their compose files the compose-based ones apply: the service is the sandbox, the rest siblings."""
    root = project(tmp_path, name)
    d, _ = load(root)
    assert (d.service, sorted(d.siblings)) == COMPOSED[name]
    assert d.image or d.dockerfile
    assert d.workdir == str(root)  # /app, /workspaces/app: the project at its own path
    assert not [w for w, _ in d.not_applied if w.startswith("workspaceFolder")]
