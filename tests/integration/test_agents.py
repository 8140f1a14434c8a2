"""ab-agent, the instructions file, shared caches and limits against real Podman."""

import json
import os
import re
import subprocess

import pytest

from tests.conftest import BIN, ab, inspect, podman, remove_sandboxes_under

DEFAULT_IMAGE = "localhost/agentsh:latest"

FAKE_PROFILE = '''
[agents.fake]
command = ["sh", "-c", 'echo "args:$*"; mkdir -p "$HOME/.fake"; echo run >> "$HOME/.fake/log"; wc -l < "$HOME/.fake/log"', "fake"]
permissive_args = ["--yolo"]
continue_args = ["--continue"]
sessions = ["$HOME/.fake/log"]
imports = ["claude"]
login_files = ["~/.fake/token"]
login_env = ["FAKE_TOKEN"]
'''


@pytest.fixture(scope="session")
def default_image(engine_ready):
    """localhost/agentsh:latest, built with `ab-image build` when missing (never skipped)."""
    if podman("image", "exists", DEFAULT_IMAGE, check=False).returncode != 0:
        env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
        proc = ab("ab-image", "build", "-q", timeout=3600, env=env)
        assert proc.returncode == 0, f"ab-image build failed: {proc.stderr.decode()[-2000:]}"
    return DEFAULT_IMAGE


def agent(repo, *args, input=None):
    return ab("ab-agent", "--dir", str(repo), *args, input=input)


@pytest.mark.default_image
def test_builtin_profiles_resolve_to_the_clis_in_the_default_image(default_image, user_config, repo, tmp_path):
    user_config(f'image = "{default_image}"\n')
    try:
        for name in ("claude", "codex", "gemini", "opencode"):
            proc = agent(repo, name, "--", "--version")
            err = proc.stderr.decode()
            assert proc.returncode == 0, (name, err)
            assert re.search(r"\d+\.\d+\.\d+", proc.stdout.decode()), (name, proc.stdout)
            # no credentials stored: one line naming the import to run
            lines = [line for line in err.splitlines() if "ab-creds import" in line]
            assert len(lines) == 1, (name, err)
            assert f"run 'ab-creds import {name}'" in lines[0]
        # aider is not in the default image: 127 and how to install it
        proc = agent(repo, "aider")
        assert proc.returncode == 127
        assert b"aider is not installed in this sandbox; install it: pipx install aider-chat" in proc.stderr
        proc = agent(repo, "shell", "--", "sh", "-c", "echo $HOME; exit 5")
        assert proc.returncode == 5 and proc.stdout == b"/home/agent\n"
    finally:
        remove_sandboxes_under(str(tmp_path))


@pytest.mark.usefixtures("sandbox_env")
class TestWithTheTinyImage:

    @pytest.fixture(autouse=True)
    def profile(self, sandbox_env, user_config, tiny_image):
        self.write_config = lambda extra="": user_config(f'image = "{tiny_image}"\n{extra}\n{FAKE_PROFILE}')
        self.write_config()

    def run_fake(self, repo, *args):
        proc = agent(repo, "fake", *args)
        assert proc.returncode == 0, proc.stderr.decode()
        lines = proc.stdout.decode().splitlines()
        return lines[0], int(lines[1]), proc.stderr.decode()

    def test_flags_continue_and_state_surviving_down_rm(self, repo):
        assert self.run_fake(repo)[:2] == ("args:--yolo", 1)  # nothing to continue yet
        assert self.run_fake(repo)[:2] == ("args:--continue --yolo", 2)
        ab("ab-down", "--rm", str(repo), check=True)
        assert podman("container", "exists", inspect_name(repo), check=False).returncode != 0
        # a new sandbox, the same home volume: the state and the conversation are still there
        assert self.run_fake(repo)[:2] == ("args:--continue --yolo", 3)
        assert self.run_fake(repo, "--new")[:2] == ("args:--yolo", 4)
        assert self.run_fake(repo, "--safe")[:2] == ("args:--continue", 5)
        # agent arguments mean a specific invocation: no continuing, options pass through
        assert self.run_fake(repo, "--", "-p", "--x")[:2] == ("args:--yolo -p --x", 6)
        ab("ab-down", "--rm", "--volumes", str(repo), check=True)
        assert self.run_fake(repo)[:2] == ("args:--yolo", 1)

    def test_exit_status_is_the_agents_and_unknown_names_are_usage_errors(self, repo, user_config, tiny_image):
        user_config(f'image = "{tiny_image}"\n[agents.fails]\ncommand = ["sh", "-c", "exit 42"]\n')
        assert agent(repo, "fails").returncode == 42
        proc = agent(repo, "nope")
        assert proc.returncode == 2 and b"no agent profile named 'nope'" in proc.stderr
        missing = agent(repo, "claude")  # the tiny image has no claude
        assert missing.returncode == 127 and b"npm install -g @anthropic-ai/claude-code" in missing.stderr

    def test_missing_credentials_is_one_line_and_a_stored_one_reaches_the_run(self, repo):
        _, _, err = self.run_fake(repo)
        lines = [line for line in err.splitlines() if "credentials" in line]
        assert lines == ["agentsh: fake has no credentials in the sandbox: run 'ab-creds import claude' "
                         "on the host, or log in inside the sandbox"]
        # a stored credential named by the profile reaches the sandbox for the run, with no grant
        self.write_config().write_text(self.config_path().read_text().replace(
            'imports = ["claude"]', 'imports = ["claude"]\ncredentials = ["FAKE_TOKEN"]'))
        ab("ab-creds", "set", "FAKE_TOKEN", input=b"s3cret\n", check=True)
        proc = agent(repo, "fake")
        assert proc.returncode == 0 and b"has no credentials" not in proc.stderr, proc.stderr
        # not a lasting grant: plain ab-exec does not receive it
        out = ab("ab-exec", "--dir", str(repo), "--", "sh", "-c", 'echo "[${FAKE_TOKEN:-}]"', check=True).stdout
        assert out == b"[]\n"
        name = inspect_name(repo)
        assert b"s3cret" not in podman("container", "inspect", name).stdout.encode()

    def config_path(self):
        from pathlib import Path

        return Path(os.environ["XDG_CONFIG_HOME"]) / "agentsh" / "config.toml"

    def test_instructions_file_is_linked_where_agents_read_it_and_the_project_stays_clean(self, repo):
        (self.config_path().parent / "AGENTS.md").write_text("Always answer in haiku.\n")
        self.run_fake(repo)
        script = ('for f in ~/.claude/CLAUDE.md ~/.gemini/GEMINI.md ~/.codex/AGENTS.md ~/.config/opencode/AGENTS.md; '
                  'do printf "%s: " "$f"; cat "$f"; done; echo x > /run/agentsh/AGENTS.md 2>/dev/null || echo ro')
        out = ab("ab-exec", "--dir", str(repo), "--", "sh", "-c", script, check=True).stdout.decode()
        assert out.count("Always answer in haiku.") == 4 and out.rstrip().endswith("ro")
        status = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--ignored"],
                                capture_output=True, text=True, check=True).stdout
        assert status == ""
        # a file the user keeps in the sandbox home is never replaced
        ab("ab-exec", "--dir", str(repo), "--", "sh", "-c",
           "rm ~/.claude/CLAUDE.md; echo mine > ~/.claude/CLAUDE.md", check=True)
        self.run_fake(repo)
        out = ab("ab-exec", "--dir", str(repo), "--", "cat", "/home/agent/.claude/CLAUDE.md", check=True).stdout
        assert out == b"mine\n"

    @pytest.fixture
    def cache_volumes(self, tmp_path):
        """The shared cache volumes this test makes are removed after it (those that were there stay)."""
        names = ["agentsh-cache-npm", "agentsh-cache-pip"]
        had = {n for n in names if podman("volume", "exists", n, check=False).returncode == 0}
        yield names
        remove_sandboxes_under(str(tmp_path))  # they hold the volumes
        for name in set(names) - had:
            podman("volume", "rm", name, check=False)

    def test_shared_caches_are_one_volume_across_projects(self, repo, tmp_path, cache_volumes):
        from tests.conftest import git_init

        self.write_config('caches = ["npm", "pip"]')
        other = git_init(tmp_path / "other")
        script = 'echo "$npm_config_cache $PIP_CACHE_DIR"; touch "$npm_config_cache/from-$1"; ls "$npm_config_cache"'
        first = ab("ab-exec", "--dir", str(repo), "--", "sh", "-c", script, "sh", "a", check=True).stdout.decode()
        assert first.splitlines()[0] == "/var/cache/agentsh/npm /var/cache/agentsh/pip"
        second = ab("ab-exec", "--dir", str(other), "--", "sh", "-c", script, "sh", "b", check=True).stdout.decode()
        assert "from-a" in second and "from-b" in second
        mounts = {m.get("Name"): m["Destination"] for m in inspect(inspect_name(repo))["Mounts"]}
        assert mounts["agentsh-cache-npm"] == "/var/cache/agentsh/npm"
        # a project file cannot ask for shared caches
        (other / ".agentsh.toml").write_text('caches = ["cargo"]\n')
        proc = ab("ab-allow", str(other))  # refused before any trust is recorded
        assert proc.returncode == 125 and b"key 'caches' can only be set in the user config" in proc.stderr

    def test_limits_are_visible_in_podman_inspect(self, repo):
        self.write_config('cpus = 1.5\nmemory = "256m"\npids = 321')
        name = json.loads(ab("ab-up", str(repo), "--json", check=True).stdout)["name"]
        host = inspect(name)["HostConfig"]
        assert host["NanoCpus"] == 1_500_000_000
        assert host["Memory"] == 256 * 1024 * 1024
        assert host["PidsLimit"] == 321


def inspect_name(repo):
    from agentsh.host.project import Project

    return Project(str(repo)).sandbox
