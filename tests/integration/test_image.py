"""ab-image against real Podman: listing, failures, and the full default image.

The default-image tests build localhost/agentsh:latest on a Debian base made
here with debootstrap (`--bootstrap`; reused when it already exists) and run
the tools and agent CLIs in it. They take a few minutes on a fresh machine and
seconds when the engine's layer cache is warm.
"""

import json
import os
import re

import pytest

from tests.conftest import BIN, ab, podman

DEFAULT_IMAGE = "localhost/agentsh:latest"
LOCAL_BASE = "localhost/agentsh-base:bookworm"

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("engine_ready")]


def image_ls():
    proc = ab("ab-image", "ls", "--json", check=True)
    return json.loads(proc.stdout)


# -- cheap ----------------------------------------------------------------------

def test_ls_json_lists_agentsh_images_with_id_created_size(tiny_image):
    extra = f"localhost/agentsh-test-ls:{os.getpid()}"
    podman("tag", tiny_image, extra)
    try:
        rows = image_ls()
        by_name = {r["name"]: r for r in rows}
        assert tiny_image in by_name and extra in by_name
        assert all(r["name"].startswith("localhost/agentsh") for r in rows)
        row = by_name[extra]
        assert set(row) == {"name", "id", "created", "size"}
        assert row["id"] == by_name[tiny_image]["id"] and re.fullmatch(r"[0-9a-f]{12}", row["id"])
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", row["created"])
        assert isinstance(row["size"], int) and row["size"] > 0
        full_id = podman("image", "inspect", "--format", "{{.Id}}", extra).stdout.strip()
        assert full_id.startswith(row["id"])
    finally:
        podman("untag", tiny_image, extra, check=False)
    assert extra not in {r["name"] for r in image_ls()}


def test_ls_table_and_ab_front_command(tiny_image):
    proc = ab("ab", "image", "ls", check=True)
    lines = proc.stdout.decode().splitlines()
    assert lines[0].split() == ["NAME", "ID", "CREATED", "SIZE"]
    assert any(line.startswith(tiny_image + " ") for line in lines[1:])


def test_a_failing_build_exits_125_with_its_last_lines(tiny_image):
    # busybox has no apt-get: the first RUN step fails, quickly.
    tag = "localhost/agentsh-test-failing:latest"
    proc = ab("ab-image", "build", "--base", tiny_image, "--tag", tag, "--no-agents", timeout=300)
    err = proc.stderr.decode()
    assert proc.returncode == 125, err
    assert proc.stdout == b""
    assert "  | " in err and "apt-get: not found" in err
    last = err.rstrip().splitlines()[-1]
    assert re.match(rf"ab-image: podman build of {tag} failed at STEP \d+/\d+: .*apt-get: not found; ", last)
    assert podman("image", "exists", tag, check=False).returncode != 0


def test_an_explicit_base_that_cannot_be_pulled_is_a_one_line_error():
    proc = ab("ab-image", "build", "-q", "--base", "registry.invalid/agentsh/nothing:1", timeout=300)
    err = proc.stderr.decode()
    assert proc.returncode == 125 and proc.stdout == b""
    assert err.count("\n") == 1 and err.startswith("ab-image: cannot pull registry.invalid/agentsh/nothing:1")


def test_bad_flags_exit_2():
    assert ab("ab-image", "build", "--base", "x", "--bootstrap").returncode == 2
    assert ab("ab-image", "build", "--mirror", "not-a-url").returncode == 2
    assert ab("ab-image", "build", "--tag", "Not/Valid").returncode == 2


# -- the full default image --------------------------------------------------------------

@pytest.fixture(scope="module")
def default_image(engine_ready, tmp_path_factory):
    """localhost/agentsh:latest, built with --bootstrap (once per run); its JSON record."""
    if os.geteuid() != 0 and podman("image", "exists", LOCAL_BASE, check=False).returncode != 0:
        pytest.skip("--bootstrap needs root (debootstrap) unless localhost/agentsh-base:bookworm exists")
    # Module scope runs before the per-test isolation: isolate here too.
    xdg = tmp_path_factory.mktemp("xdg")
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}",
               **{var: str(xdg / var.lower()) for var in ("XDG_STATE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME")})
    env.pop("AGENTSH_ENGINE", None)
    had = {name: image_id(name) for name in (DEFAULT_IMAGE, LOCAL_BASE)}
    try:
        proc = ab("ab-image", "build", "--bootstrap", "--json", timeout=1800, env=env)
        assert proc.returncode == 0, proc.stderr.decode()[-3000:]
        record = json.loads(proc.stdout)
        record["stderr"] = proc.stderr.decode()
        yield record
    finally:
        restore_images(had)


def image_id(name):
    proc = podman("image", "inspect", "--format", "{{.Id}}", name, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


def restore_images(had):
    """Put each name back on the image it named before the build (none: remove it), and drop what
    the build made in its place, so the run leaves the machine's images as they were."""
    for name, old in had.items():
        new = image_id(name)
        if new == old:
            continue
        if old:
            podman("tag", old, name, check=False)
        else:
            podman("rmi", name, check=False)
        if new and new != old:
            podman("rmi", new, check=False)  # still in use (another name, a container): it stays


def run_in(image, script, *flags):
    return podman("run", "--rm", *flags, image, "bash", "-c", script, check=False)


@pytest.mark.default_image
def test_default_image_builds_with_bootstrap(default_image):
    assert default_image["image"] == DEFAULT_IMAGE
    assert default_image["base"] == LOCAL_BASE and default_image["base_source"] == "bootstrap"
    assert default_image["agents"] is True
    assert "STEP " in default_image["stderr"]
    info = json.loads(podman("image", "inspect", DEFAULT_IMAGE).stdout)[0]
    assert info["Id"].startswith(default_image["id"])
    assert info["Config"]["Labels"]["io.agentsh.image"] == "default"
    assert DEFAULT_IMAGE in {r["name"] for r in image_ls()}


@pytest.mark.default_image
def test_default_image_has_the_tools_and_node_22(default_image):
    proc = run_in(DEFAULT_IMAGE, "set -e; bash --version | head -1; git --version; rg --version | head -1; "
                  "jq --version; python3 --version; curl --version | head -1; less --version | head -1; "
                  "ps --version; ssh -V 2>&1; echo node=$(node --version); npm --version")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for word in ("GNU bash", "git version", "ripgrep", "jq-", "Python 3", "curl ", "less ", "procps", "OpenSSH"):
        assert word in out
    major = int(re.search(r"node=v(\d+)\.", out).group(1))
    assert major >= 20


@pytest.mark.default_image
def test_default_image_agent_clis_answer(default_image):
    for cli in ("claude", "codex", "gemini"):
        proc = run_in(DEFAULT_IMAGE, f"{cli} --version")
        assert proc.returncode == 0 and re.search(r"\d+\.\d+", proc.stdout), (cli, proc.stdout, proc.stderr)


@pytest.mark.default_image
def test_default_image_works_for_the_sandbox_user_on_a_fresh_home_volume(default_image):
    volume = f"agentsh-test-image-home-{os.getpid()}"
    podman("volume", "create", volume)
    try:
        proc = run_in(DEFAULT_IMAGE, 'touch "$HOME/x" && test ! -e /root/.npm && claude --version >/dev/null '
                      '&& printf "%s\\n" "$PS1"',
                      "--user", "12345:12345", "-e", "HOME=/home/agent", "-e", "AGENTSH_SANDBOX=ab-myproj-1234abcd",
                      "-v", f"{volume}:/home/agent")
        assert proc.returncode == 0, proc.stderr
        # an interactive bash shows the sandbox in its prompt
        proc = run_in(DEFAULT_IMAGE, 'bash -ic \'printf "%s\\n" "$PS1"\' 2>/dev/null',
                      "--user", "12345:12345", "-e", "HOME=/home/agent", "-e", "AGENTSH_SANDBOX=ab-myproj-1234abcd",
                      "-v", f"{volume}:/home/agent")
        assert "[sandbox myproj]" in proc.stdout
    finally:
        podman("volume", "rm", "-f", volume, check=False)


@pytest.mark.default_image
def test_no_agents_leaves_the_clis_out(default_image):
    tag = "localhost/agentsh-test-noagents:latest"
    proc = ab("ab-image", "build", "--bootstrap", "--no-agents", "--tag", tag, timeout=1800)
    try:
        assert proc.returncode == 0, proc.stderr.decode()[-3000:]
        assert proc.stdout.decode() == tag + "\n"
        out = run_in(tag, "node --version; command -v claude codex gemini opencode || echo none").stdout
        assert out.startswith("v") and out.rstrip().endswith("none")
    finally:
        podman("rmi", "-f", tag, check=False)
