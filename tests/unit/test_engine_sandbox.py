import os

import pytest

from agentsh.base.errors import AgentshError, EngineError
from agentsh.base.state import Store
from agentsh.host import project
from agentsh.host.engine import Engine, NoSuchContainer
from agentsh.policy import config
from agentsh.sandbox import lifecycle as sandbox
from tests.conftest import git_init
from tests.unit.fake_engine import fake_engine


@pytest.fixture
def proj(tmp_path):
    return project.find(str(git_init(tmp_path / "repo")))


def flags_of(args):
    return set(args)


def cap_adds(args):
    return [a.split("=", 1)[1] for a in args if a.startswith("--cap-add=")]


@pytest.fixture
def invoking_uid(monkeypatch):
    """Pretend the invoking user has a given uid (and the same gid)."""

    def set_uid(uid):
        monkeypatch.setattr(sandbox.os, "getuid", lambda: uid)
        monkeypatch.setattr(sandbox.os, "getgid", lambda: uid)

    return set_uid


def test_security_defaults_rootful(proj, invoking_uid):
    invoking_uid(1001)
    engine, _ = fake_engine(rootless=False)
    args = sandbox.spec(proj, config.load(), engine).full_run_args()
    for flag in ("--init", "--cap-drop=all", "--security-opt=no-new-privileges", "--pids-limit=4096",
                 "--user=1001:1001", "--pull=never"):
        assert flag in args
    assert "--userns=keep-id" not in args
    # Podman would put every --cap-add of a non-root user into its ambient set
    assert cap_adds(args) == []


def test_only_a_root_sandbox_gets_the_minimum_right_after_the_drop(proj, invoking_uid):
    invoking_uid(0)
    args = sandbox.spec(proj, config.load(), fake_engine(rootless=False)[0]).run_args
    assert "--user=0:0" in args
    at = args.index("--cap-drop=all")
    assert args[at + 1:at + 1 + len(sandbox.MIN_CAPS)] == [f"--cap-add={c}" for c in sorted(sandbox.MIN_CAPS)]
    assert cap_adds(args) == sorted(sandbox.MIN_CAPS)


def test_rootless_keep_id_gets_no_capability(proj):
    args = sandbox.spec(proj, config.load(), fake_engine(rootless=True)[0]).run_args
    assert "--cap-drop=all" in args and cap_adds(args) == []


def test_config_cap_add_is_all_a_non_root_sandbox_gets(proj, user_config, invoking_uid):
    user_config('cap_add = ["CAP_NET_RAW", "SYS_PTRACE"]\n')
    assert cap_adds(sandbox.spec(proj, config.load(), fake_engine(rootless=True)[0]).run_args) == \
        ["NET_RAW", "SYS_PTRACE"]
    invoking_uid(0)
    assert cap_adds(sandbox.spec(proj, config.load(), fake_engine(rootless=False)[0]).run_args) == \
        sorted({*sandbox.MIN_CAPS, "NET_RAW", "SYS_PTRACE"})


@pytest.mark.parametrize("args, root", [
    (["--userns=keep-id"], False),
    (["--userns=keep-id", "--user=root"], True),
    (["--user=0:0"], True),
    (["--user=root:wheel"], True),
    (["--user=1001:1001"], False),
    (["--user=0:0", "--user=vscode"], False),  # the last --user is the one Podman uses
    (["--user=1001", "--user=0"], True),
    ([], True),  # no --user and no keep-id: the image's user, root unless it says otherwise
])
def test_runs_as_root_follows_the_last_user_flag(args, root):
    assert sandbox.runs_as_root(["--cap-drop=all", *args, "-e", "X=--user=0"]) is root


def test_keep_id_when_rootless(proj):
    engine, _ = fake_engine(rootless=True)
    args = sandbox.spec(proj, config.load(), engine).run_args
    assert "--userns=keep-id" in args and not any(a.startswith("--user=") for a in args)


def test_mounts_project_same_path_host_git_read_only_and_no_host_home(proj):
    from agentsh.sandbox import gitbridge

    engine, _ = fake_engine()
    args = sandbox.spec(proj, config.load(), engine).run_args
    volumes = [args[i + 1] for i, a in enumerate(args) if a == "-v"]
    root = proj.root
    assert f"{root}:{root}" in volumes
    # The host's git dir only read-only; at its path, the sandbox's own git dir.
    assert f"{root}/.git:{gitbridge.HOST_GIT}:ro" in volumes
    assert f"{gitbridge.private_dir(proj.sandbox)}:{root}/.git" in volumes
    assert not any(v.split(":")[0] == f"{root}/.git" and not v.endswith(":ro") for v in volumes)
    assert f"{proj.home_volume}:/home/agent" in volumes
    home = os.path.expanduser("~")
    sources = [v.split(":")[0] for v in volumes]
    assert home not in sources
    assert not any("podman.sock" in v or "docker.sock" in v for v in volumes)
    assert not any(v.endswith(":Z") or v.endswith(":z") for v in volumes)  # no relabel of user files


def test_labels_and_name(proj):
    engine, _ = fake_engine()
    s = sandbox.spec(proj, config.load(), engine)
    args = s.full_run_args()
    labels = [args[i + 1] for i, a in enumerate(args) if a == "--label"]
    assert labels == ["io.agentsh.managed=true", f"io.agentsh.project={proj.root}", f"io.agentsh.spec={s.hash}"]
    assert args[args.index("--name") + 1] == proj.sandbox
    assert args[-2:] == ["sleep", "infinity"]


def test_spec_hash_follows_the_config(proj, user_config):
    engine, _ = fake_engine()
    first = sandbox.spec(proj, config.load(), engine).hash
    assert sandbox.spec(proj, config.load(), engine).hash == first
    user_config('image = "other"\n')
    assert sandbox.spec(proj, config.load(), engine).hash != first


def test_ca_bundle_mount_and_variables(proj, tmp_path, user_config):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n")
    user_config(f'ca_bundle = "{bundle}"\n')
    engine, _ = fake_engine()
    args = sandbox.spec(proj, config.load(), engine).run_args
    [mount] = [a for a in args if a.endswith(f":{sandbox.CA_PATH}:ro")]
    copy = mount.split(":")[0]  # agentsh's own copy of exactly the bytes it checked
    assert copy != str(bundle) and open(copy).read() == bundle.read_text()
    for var in ("SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS", "REQUESTS_CA_BUNDLE", "PIP_CERT", "GIT_SSL_CAINFO"):
        assert f"{var}={sandbox.CA_PATH}" in args
    user_config('ca_bundle = "image"\n')
    assert not any(sandbox.CA_PATH in a for a in sandbox.spec(proj, config.load(), engine).run_args)
    user_config(f'ca_bundle = "{tmp_path}/missing.pem"\n')
    with pytest.raises(AgentshError, match="missing.pem"):
        sandbox.spec(proj, config.load(), engine)


def test_limits_network_and_mounts(proj, tmp_path, user_config):
    (tmp_path / "cache").mkdir()
    user_config(f'memory = "2g"\ncpus = 1.5\npids = 99\nmounts = ["{tmp_path}/cache:/cache:ro"]\n'
                '[network]\nmode = "none"\n')
    engine, _ = fake_engine()
    args = sandbox.spec(proj, config.load(), engine).run_args
    for flag in ("--memory=2g", "--cpus=1.5", "--pids-limit=99", "--network=none", f"{tmp_path}/cache:/cache:ro"):
        assert flag in args
    user_config(f'mounts = ["{tmp_path}/nope:/x"]\n')
    with pytest.raises(AgentshError, match="does not exist"):
        sandbox.spec(proj, config.load(), engine)


def test_up_on_running_unchanged_sandbox_is_one_inspect(proj):
    engine, runner = fake_engine()
    sandbox.up(proj, config.load(), engine, Store())
    runner.calls.clear()
    record = sandbox.up(proj, config.load(), engine, Store())
    assert runner.commands() == ["container inspect"]
    assert record["state"] == "running" and record["name"] == proj.sandbox


def test_up_creates_then_starts_then_recreates(proj, user_config):
    engine, runner = fake_engine()
    store = Store()
    sandbox.up(proj, config.load(), engine, store)
    assert "run" in runner.commands()
    assert store.read(f"sandboxes/{proj.sandbox}.json")["project"] == proj.root
    runner.containers[proj.sandbox]["State"]["Status"] = "exited"
    runner.calls.clear()
    sandbox.up(proj, config.load(), engine, store)
    assert runner.commands() == ["container inspect", "container inspect", "start"]
    user_config('pids = 7\n')
    runner.images.add(config.DEFAULT_IMAGE)
    notes = []
    runner.calls.clear()
    sandbox.up(proj, config.load(), engine, store, notify=notes.append)
    assert notes == [f"spec changed; recreating sandbox {proj.sandbox}"]
    # the new container is made and started before the old one is removed
    assert runner.commands()[-6:] == ["ps", "create", "rename", "rename", "start", "rm"]
    assert runner.containers[proj.sandbox]["State"]["Status"] == "running"


def test_changed_spec_with_missing_image_keeps_the_old_sandbox(proj, user_config):
    engine, runner = fake_engine()
    sandbox.up(proj, config.load(), engine, Store())
    user_config('image = "localhost/nothing:here"\n')
    with pytest.raises(AgentshError, match="image localhost/nothing:here is not there"):
        sandbox.up(proj, config.load(), engine, Store())
    assert proj.sandbox in runner.containers


@pytest.mark.parametrize("stderr, kind, words", [
    ('Error: no container with name or ID "x" found: no such container', NoSuchContainer, "no such container"),
    ("Error: localhost/agentsh:latest: image not known", EngineError, "ab-image build"),
    ("Cannot connect to the Docker daemon at unix:///var/run/docker.sock.", EngineError, "not running"),
    ('Error: initializing source docker://debian:bookworm-slim: pinging container registry '
     'registry-1.docker.io: Get "https://registry-1.docker.io/v2/": dial tcp: lookup registry-1.docker.io: '
     'no such host', EngineError, "cannot reach the image registry"),
    ("Error: something odd\nhappened", EngineError, "podman run failed: Error: something odd happened"),
    ("Error: OCI runtime error: crun: cgroups in hybrid mode not supported, drop all controllers from cgroupv2",
     EngineError, "export CONTAINERS_CONF="),
    ("error setting rlimits for ready process: error setting rlimit type 7: operation not permitted",
     EngineError, "use runc and lower ulimits"),
])
def test_engine_errors_are_one_actionable_line(stderr, kind, words, monkeypatch):
    monkeypatch.delenv("CONTAINERS_CONF", raising=False)  # the fix named for a host with no settings of its own
    e = Engine("podman", exe="podman").error(stderr, "run")
    assert isinstance(e, kind) and words in str(e) and "\n" not in str(e)


def test_missing_engine_binary(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(EngineError, match="podman is not installed.*apt-get install podman"):
        Engine("podman").exe


def test_rootless_detection(monkeypatch):
    monkeypatch.delenv("CONTAINER_HOST", raising=False)
    assert Engine("podman").rootless == (os.geteuid() != 0)
    monkeypatch.setenv("DOCKER_HOST", "unix:///run/user/1000/docker.sock")
    assert Engine("docker").rootless is True
    monkeypatch.setenv("DOCKER_HOST", "unix:///var/run/docker.sock")
    assert Engine("docker").rootless is False


def test_exec_argv_passes_env_by_name_only():
    argv = Engine("podman", exe="podman").exec_argv("sb", ["env"], workdir="/p", env_names=["TOKEN"], tty=False)
    assert argv == ["podman", "exec", "-i", "-w", "/p", "-e", "TOKEN", "sb", "env"]


def test_warm_up_needs_no_engine_call_while_the_init_process_lives(proj):
    engine, runner = fake_engine()
    runner.pid = os.getpid()  # a process that is certainly alive
    store = Store()
    assert sandbox.up(proj, config.load(), engine, store)["state"] == "running"
    sandbox.up(proj, config.load(), engine, store)  # one inspect, which records the pid
    record = store.read(f"sandboxes/{proj.sandbox}.json")
    assert record["pid"] == os.getpid() and record["pid_start"]
    runner.calls.clear()
    assert sandbox.up(proj, config.load(), engine, store)["name"] == proj.sandbox
    assert runner.calls == []


def test_a_dead_or_reused_pid_falls_back_to_the_engine(proj):
    engine, runner = fake_engine()
    runner.pid = os.getpid()
    store = Store()
    sandbox.up(proj, config.load(), engine, store)
    sandbox.up(proj, config.load(), engine, store)
    record = store.read(f"sandboxes/{proj.sandbox}.json")
    store.write(f"sandboxes/{proj.sandbox}.json", {**record, "pid_start": record["pid_start"] + 1})
    runner.calls.clear()
    sandbox.up(proj, config.load(), engine, store)
    assert runner.commands() == ["container inspect"]


def test_cold_up_without_a_record_goes_straight_to_run(proj):
    engine, runner = fake_engine()
    sandbox.up(proj, config.load(), engine, Store())
    assert runner.commands() == ["run"]


def test_cold_up_adopts_a_container_it_has_no_record_of(proj, user_config):
    engine, runner = fake_engine()
    sandbox.up(proj, config.load(), engine, Store())
    Store().remove(f"sandboxes/{proj.sandbox}.json")
    runner.containers[proj.sandbox]["State"]["Status"] = "exited"
    runner.calls.clear()
    record = sandbox.up(proj, config.load(), engine, Store())
    assert runner.commands() == ["run", "container inspect", "start"] and record["state"] == "running"


def test_process_alive():
    from agentsh.host import liveness

    assert liveness.alive(os.getpid(), liveness.start_time(os.getpid()))
    assert not liveness.alive(os.getpid(), 1)
    assert not liveness.alive(None, None)
    assert not liveness.alive(2 ** 22 + 7, 5)


def test_the_pid_file_says_whether_the_sandbox_runs(proj):
    from agentsh.host import liveness

    engine, runner = fake_engine()
    runner.pid = os.getpid()
    store = Store()
    assert not liveness.sandbox_running(store, proj.sandbox)
    sandbox.up(proj, config.load(), engine, store)
    sandbox.up(proj, config.load(), engine, store)  # the inspect that learns the pid
    assert liveness.sandbox_running(store, proj.sandbox)
    with open(liveness.pid_file(store, proj.sandbox), "w") as f:
        f.write("garbage")
    assert not liveness.sandbox_running(store, proj.sandbox)


def test_ports_need_a_network(proj, user_config):
    user_config('ports = ["8080:80"]\n[network]\nmode = "none"\n')
    engine, _ = fake_engine()
    with pytest.raises(AgentshError, match='cannot be published when \\[network\\] mode = "none"'):
        sandbox.spec(proj, config.load(), engine)


def test_a_shell_fallback_is_remembered_for_that_sandbox_only(proj):
    from agentsh.host import liveness

    store = Store()
    assert liveness.shell_hint(store, proj.sandbox) is None
    liveness.remember(store, proj.sandbox, os.getpid())
    liveness.remember_shell(store, proj.sandbox, "sh")
    assert liveness.shell_hint(store, proj.sandbox) == "sh"
    liveness.remember(store, proj.sandbox, os.getppid())  # the sandbox was recreated
    assert liveness.shell_hint(store, proj.sandbox) is None
