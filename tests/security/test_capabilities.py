"""A non-root agent holds no capability, in any set, in any process of its sandbox.

Podman gives a non-root `--user` (and `--userns=keep-id`) every `--cap-add`
in all five sets, ambient included, so a list of capabilities meant for root
once reached the agent itself: `setuid(0)` worked, and so did a `chown` that
left files the host user could not remove. These tests read
/proc/PID/status in real sandboxes, for the container's own processes and
for `ab-exec`'s, and try the attacks. Each runs twice, as an ordinary host
user (uid 1001 or so):

- rootless: the user's own rootless Podman (`--userns=keep-id`);
- rootful: a rootful Podman reached through CONTAINER_HOST (a `podman
  system service` run as root for the test), so the sandbox runs with
  `--user=UID:GID`.

Root inside the sandbox, with the documented minimum, only when asked for:
a rootful engine run by root, or a devcontainer naming root.
"""

import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from agentsh.sandbox.lifecycle import MIN_CAPS
from tests.conftest import TINY_IMAGE, ab, podman, remove_sandboxes_under

SETS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")
CAP_BITS = {"CHOWN": 0, "DAC_OVERRIDE": 1, "FOWNER": 3, "FSETID": 4, "KILL": 5, "SETGID": 6, "SETUID": 7,
            "NET_RAW": 13}
MIN_MASK = sum(1 << CAP_BITS[c] for c in MIN_CAPS)  # 0xfb
# The sandbox's processes: PID 1 (the init), the keep-alive it runs (the
# container's own command), the `ab-exec` shell and a process it starts.
PROBE = ("for p in $(echo 1 $(pidof sleep) $$ | tr ' ' '\\n' | sort -u); do "
         "sed -n \"s/^\\(Cap[A-Za-z]*\\):[[:space:]]*/$p \\1 /p\" /proc/$p/status; done; "
         "sed -n 's/^\\(Cap[A-Za-z]*\\):[[:space:]]*/child \\1 /p' /proc/self/status")


def parse_caps(text):
    """{process: {set: int}} from PROBE's lines "PID CapXxx HEX"."""
    out = {}
    for line in text.splitlines():
        who, name, value = line.split()
        out.setdefault(who, {})[name] = int(value, 16)
    return out


def caps_of(agent):
    proc = agent.ab("ab-exec", "--", "sh", "-c", PROBE, check=True)
    caps = parse_caps(proc.stdout.decode())
    assert len(caps) >= 3 and {"1", "child"} <= set(caps), caps  # init, keep-alive, shell (and child) were read
    assert all(set(sets) == set(SETS) for sets in caps.values()), caps
    return caps


def hexes(caps):
    return {who: {k: hex(v) for k, v in sets.items()} for who, sets in caps.items()}


@pytest.fixture(scope="module")
def rootful_socket(rootless_user, tiny_image):
    """A rootful Podman API only the test user can reach: the rootful engine of an ordinary user."""
    directory = Path(tempfile.mkdtemp(prefix="agentsh-test-rootful-"))  # 0700, outside root's pytest dirs
    socket, log = directory / "podman.sock", directory / "service.log"
    with open(log, "wb") as out:
        service = subprocess.Popen(["podman", "system", "service", "--time=0", f"unix://{socket}"],
                                   stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 20
        while not socket.exists():
            if service.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"podman system service did not start: {log.read_text()[-300:]}")
            time.sleep(0.05)
        os.chown(socket, rootless_user.uid, rootless_user.gid)
        os.chown(directory, rootless_user.uid, rootless_user.gid)
        yield f"unix://{socket}"
    finally:
        service.terminate()
        try:
            service.wait(timeout=10)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait()
        shutil.rmtree(directory, ignore_errors=True)


class Agent:
    """An ordinary host user running agentsh on one project, with its own config and state."""

    def __init__(self, user, mode, env):
        self.user, self.mode = user, mode
        self.uid, self.gid = user.uid, user.gid
        self.work = user.mkdir(f"work/caps-{uuid.uuid4().hex[:8]}")
        self.repo = self.work / "repo"
        self.env = {**user.env, **env, "XDG_CONFIG_HOME": str(self.work / "config"),
                    "XDG_STATE_HOME": str(self.work / "state")}
        self.run("git", "init", "-q", str(self.repo), check=True)
        self.config(f'image = "{TINY_IMAGE}"\n')

    def run(self, *args, cwd=None, check=False):
        argv = ["runuser", "-u", self.user.name, "--", "env", "-i", *(f"{k}={v}" for k, v in self.env.items()), *args]
        proc = subprocess.run(argv, cwd=cwd or self.repo.parent, capture_output=True, timeout=300)
        if check and proc.returncode != 0:
            raise AssertionError(f"{args} ({self.mode}) exited {proc.returncode}: {proc.stderr.decode()}")
        return proc

    def ab(self, *args, check=False):
        return self.run(*args, cwd=self.repo, check=check)

    def config(self, text):
        self.run("mkdir", "-p", str(self.work / "config/agentsh"), check=True)
        path = self.work / "config/agentsh/config.toml"
        path.write_text(text)
        os.chown(path, self.uid, self.gid)

    def sandbox(self):
        return json.loads(self.ab("ab-up", "--json", str(self.repo), check=True).stdout)["name"]

    def podman(self, *args, check=True):
        """The engine holding this agent's sandboxes, used directly (as the host user, not the agent)."""
        if self.mode == "rootful":
            return podman(*args, check=check)
        raw = self.run("podman", *args)
        proc = subprocess.CompletedProcess(raw.args, raw.returncode, raw.stdout.decode(), raw.stderr.decode())
        if check and proc.returncode != 0:
            raise AssertionError(f"podman {args} exited {proc.returncode}: {proc.stderr}")
        return proc

    def clean(self):
        self.ab("ab-down", "--rm", "--volumes", str(self.repo))
        remove_sandboxes_under(str(self.work), lambda *a, check=False: self.podman(*a, check=check))
        shutil.rmtree(self.work)  # as root: whatever an attack left behind goes too


@pytest.fixture(params=["rootless", "rootful"])
def agent(request, rootless_user):
    env = {"CONTAINER_HOST": request.getfixturevalue("rootful_socket")} if request.param == "rootful" else {}
    made = Agent(rootless_user, request.param, env)
    yield made
    made.clean()


def test_non_root_agent_holds_no_capability_in_any_set(agent):
    agent.sandbox()
    caps = caps_of(agent)
    assert agent.ab("ab-exec", "--", "id", "-u", check=True).stdout == f"{agent.uid}\n".encode()
    assert caps == {who: dict.fromkeys(SETS, 0) for who in caps}, hexes(caps)


def test_non_root_agent_cannot_setuid_to_root(agent):
    agent.sandbox()
    proc = agent.ab("ab-exec", "--", "nsenter", "-S", "0", "-G", "0", "id", "-u")
    assert proc.returncode != 0 and proc.stdout != b"0\n", proc.stdout
    assert b"not permitted" in proc.stderr, proc.stderr
    proc = agent.ab("ab-exec", "--", "nsenter", "-S", "0", "id", "-u")  # setuid alone
    assert proc.returncode != 0 and proc.stdout != b"0\n", proc.stdout


def test_non_root_agent_cannot_make_files_the_host_user_cannot_remove(agent):
    agent.sandbox()
    attack = ("mkdir -p trap/sub && echo x > trap/sub/f && echo x > trap/f; "
              "chown 12345:12345 trap/f; chown -R 0:0 trap; "
              "nsenter -S 0 -G 0 sh -c 'mkdir trap/by-root && echo x > trap/by-root/f'; true")
    agent.ab("ab-exec", "--", "sh", "-c", attack, check=True)
    trap = agent.repo / "trap"
    assert (trap / "sub" / "f").is_file()  # the attack ran
    for base, dirs, files in os.walk(trap):
        for name in [".", *dirs, *files]:
            st = os.lstat(os.path.join(base, name))
            assert (st.st_uid, st.st_gid) == (agent.uid, agent.gid), os.path.join(base, name)
    proc = agent.run("rm", "-rf", str(trap))
    assert proc.returncode == 0 and not trap.exists(), proc.stderr


def test_exec_as_root_into_a_non_root_sandbox_gains_no_capability(agent):
    """Even `podman exec -u 0` by the host user: the sandbox's bounding set is empty."""
    name = agent.sandbox()
    proc = agent.podman("exec", "-u", "0", name, "sh", "-c", "id -u; grep ^Cap /proc/self/status")
    uid, *lines = proc.stdout.splitlines()
    caps = {line.split(":")[0]: int(line.split()[1], 16) for line in lines}
    assert uid == "0" and caps == dict.fromkeys(SETS, 0), caps


def test_config_cap_add_grants_a_non_root_agent_exactly_what_it_names(agent):
    """The user's own choice: a cap_add reaches the agent, ambient set included, and nothing more."""
    agent.config(f'image = "{TINY_IMAGE}"\ncap_add = ["NET_RAW"]\n')
    agent.sandbox()
    caps = caps_of(agent)
    assert caps == {who: dict.fromkeys(SETS, 1 << CAP_BITS["NET_RAW"]) for who in caps}, hexes(caps)
    assert agent.ab("ab-exec", "--", "nsenter", "-S", "0", "id", "-u").returncode != 0


DEVCONTAINER_AS_ROOT = f'{{"image": "{TINY_IMAGE}", "containerUser": "root"}}\n'


def test_devcontainer_root_gets_only_the_documented_minimum(agent):
    (agent.repo / ".devcontainer").mkdir()
    (agent.repo / ".devcontainer" / "devcontainer.json").write_text(DEVCONTAINER_AS_ROOT)
    agent.run("chown", "-R", f"{agent.uid}:{agent.gid}", str(agent.repo / ".devcontainer"))
    agent.ab("ab-allow", str(agent.repo), check=True)
    agent.sandbox()
    assert agent.ab("ab-exec", "--", "id", "-u", check=True).stdout == b"0\n"
    caps = caps_of(agent)
    root_sets = {"CapInh": 0, "CapPrm": MIN_MASK, "CapEff": MIN_MASK, "CapBnd": MIN_MASK, "CapAmb": 0}
    assert caps == {who: root_sets for who in caps}, hexes(caps)


@pytest.mark.usefixtures("sandbox_env")
def test_rootful_sandbox_of_the_root_user_gets_only_the_documented_minimum(repo):
    if os.geteuid() != 0:
        pytest.skip("a rootful engine run by root")
    ab("ab-up", str(repo), check=True)
    proc = ab("ab-exec", "--dir", str(repo), "--", "sh", "-c", PROBE, check=True)
    caps = parse_caps(proc.stdout.decode())
    assert len(caps) >= 3 and {"1", "child"} <= set(caps), caps
    root_sets = {"CapInh": 0, "CapPrm": MIN_MASK, "CapEff": MIN_MASK, "CapBnd": MIN_MASK, "CapAmb": 0}
    assert caps == {who: root_sets for who in caps}, hexes(caps)
