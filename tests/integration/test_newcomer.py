"""The README as a newcomer meets it: its first command in a fresh clone, then every line of its tour.

Once as root and once as an ordinary user (the rootless_user fixture's
account), each a newcomer: a HOME of their own with nothing of agentsh's in
it (no venv, no PATH line, no config, no state) and, for the ordinary user,
a Podman storage and runtime dir of its own too (a first-time user's storage
is empty; quickstart moves an empty vfs store to overlay). No
CONTAINERS_CONF: agentsh must cope with this host's engine on its own.

The first command is the real scripts/quickstart of a fresh clone of this
repository. It installs agentsh into the newcomer's venv with pip (from the
package index this test run itself uses: its PIP_* settings and pip config
are passed on) and finds the system packages already there (nothing is
installed on the machine). The default image comes from an archive of the
one this machine has (AGENTSH_IMAGE_ARCHIVE, quickstart's offline way)
instead of a build. Then the tour runs line by line, each in a new
`bash -i` (so `ab` must be on PATH from ~/.bashrc, as for a new terminal),
and each line's effect is checked. The lines that would need a real agent
login or a terminal run with a stand-in: the agents with `--version`
instead of a task, the interactive shell with a script on stdin. The test
reads the tour from README.md and fails when the two part ways.
"""

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, podman
from tests.integration.test_agents import default_image  # noqa: F401 (the fixture: built when missing)

DEFAULT_IMAGE = "localhost/agentsh:latest"
IDENTITY = ("New Comer", "newcomer@example.invalid")
MAKEFILE = "test:\n\tcc -o hello hello.c && ./hello > test-output.txt\n"
HELLO_C = '#include <stdio.h>\nint main(void) { puts("built in the sandbox"); return 0; }\n'
FAKE_CLAUDE_LOGIN = '{"claudeAiOauth": {"accessToken": "sk-ant-oat01-newcomer-test", "refreshToken": "r"}}\n'

pytestmark = [pytest.mark.default_image]


# -- the README ------------------------------------------------------------------------------

def readme_block(heading):
    """The lines of the first ```sh block after `heading` in README.md."""
    text = (ROOT / "README.md").read_text()
    after = text[text.index(heading):]
    block = re.search(r"```sh\n(.*?)```", after, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def command_of(line):
    """A README line without its trailing `# comment` (two spaces or more before the #)."""
    return re.split(r"\s{2,}#\s", line, maxsplit=1)[0].strip()


def test_the_tour_is_what_this_test_runs():
    assert [command_of(line) for line in readme_block("## A two-minute tour")] == [c for c, _ in TOUR]
    setup = [command_of(line) for line in readme_block("## Set-up: two commands")]
    assert setup[0] == "cd ~/src/app && bash ~/src/agentsh/scripts/quickstart"  # the tour's app, this test's paths


# -- a newcomer ------------------------------------------------------------------------------

class Newcomer:
    """A user with a fresh HOME (and, rootless, a Podman storage of their own) running shell lines."""

    def __init__(self, base, user=None):
        self.base = Path(base)
        self.user = user  # tests.conftest.RootlessUser, or None for root
        self.home = self.base / "home"
        self.app = self.home / "src" / "app"
        self.clone = self.home / "src" / "agentsh"
        self.runtime = self.base / "run"
        self.cwd = self.app
        self.previous = self.app
        for d in (self.base, self.home, self.runtime):
            d.mkdir(parents=True, exist_ok=True)
        self.runtime.chmod(0o700)
        self.rootless = user is not None or os.geteuid() != 0
        path = "/usr/local/bin:/usr/bin:/bin" if self.rootless else \
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        self.env = {"HOME": str(self.home), "USER": self.name, "LOGNAME": self.name, "SHELL": "/bin/bash",
                    "LANG": "C.UTF-8", "PATH": path, "TERM": "dumb"}
        if self.rootless:  # a runtime dir of its own: its own pause process, beside the suite's
            self.env["XDG_RUNTIME_DIR"] = str(self.runtime)
        self.env.update({k: v for k, v in os.environ.items() if k.startswith("PIP_") and k != "PIP_CONFIG_FILE"})
        pip_conf = next((p for p in (os.environ.get("PIP_CONFIG_FILE"), os.path.expanduser("~/.config/pip/pip.conf"),
                                     os.path.expanduser("~/.pip/pip.conf")) if p and os.path.isfile(p)), None)
        if pip_conf:  # the index this run installs from (a local mirror on CI machines)
            shutil.copyfile(pip_conf, self.base / "pip.conf")
            self.env["PIP_CONFIG_FILE"] = str(self.base / "pip.conf")

    @property
    def name(self):
        import pwd

        return self.user.name if self.user else pwd.getpwuid(os.getuid()).pw_name

    @property
    def uid(self):
        return self.user.uid if self.user else os.getuid()

    def give(self, path):
        """Hand what root made under `path` to the newcomer."""
        if self.user:
            subprocess.run(["chown", "-R", f"{self.user.uid}:{self.user.gid}", str(path)], check=True)

    def argv(self, args):
        env = [f"{k}={v}" for k, v in self.env.items()]
        if self.user:
            return ["runuser", "-u", self.user.name, "--", "env", "-i", *env, *args]
        return ["env", "-i", *env, *args]

    def run(self, *args, input=None, cwd=None, timeout=900):
        """A command (argv) as the newcomer; the CompletedProcess with text output."""
        proc = subprocess.run(self.argv(args), cwd=cwd or self.cwd, input=input, capture_output=True,
                              timeout=timeout)
        proc.out, proc.err = proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
        return proc

    def sh(self, line, input=None, timeout=900):
        """One line as typed into a new terminal: `bash -i`, so ~/.bashrc (PATH, the hook) applies."""
        return self.run("bash", "-ic", line, input=input, timeout=timeout)

    def ok(self, line, input=None, timeout=900):
        proc = self.sh(line, input=input, timeout=timeout)
        assert proc.returncode == 0, f"{line!r} as {self.name} exited {proc.returncode}: {proc.err[-3000:]}"
        return proc

    def git(self, *args, cwd=None):
        return self.run("git", *args, cwd=cwd or self.app).out.strip()


def set_up(newcomer):
    """What a newcomer has before the README: a clone of agentsh, a git identity, a git repo with a Makefile."""
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(ROOT), str(newcomer.clone)], check=True,
                   capture_output=True)
    newcomer.app.mkdir(parents=True)
    (newcomer.home / ".gitconfig").write_text(f"[user]\n\tname = {IDENTITY[0]}\n\temail = {IDENTITY[1]}\n")
    (newcomer.app / "Makefile").write_text(MAKEFILE)
    (newcomer.app / "hello.c").write_text(HELLO_C)
    (newcomer.home / ".claude").mkdir()
    (newcomer.home / ".claude" / ".credentials.json").write_text(FAKE_CLAUDE_LOGIN)
    (newcomer.home / ".claude" / ".credentials.json").chmod(0o600)
    newcomer.give(newcomer.base)
    for args in (["init", "-q"], ["add", "."], ["commit", "-qm", "the app"]):
        assert newcomer.run("git", *args).returncode == 0


# -- each line of the tour, and what it must do ----------------------------------------------

def quickstart(n):
    """README set-up line 1, as written (cd into the repo, run quickstart); a script on the sandbox shell's stdin."""
    line = command_of(readme_block("## Set-up: two commands")[0])
    proc = n.run("bash", "-c", line, input=b"echo from-the-sandbox > quickstart.txt; echo $AGENTSH_SANDBOX; exit 7\n",
                 timeout=1800)
    assert proc.returncode == 7, proc.err[-3000:]
    assert proc.out.strip().startswith("ab-app-")
    assert (n.app / "quickstart.txt").read_text() == "from-the-sandbox\n"
    assert (n.app / "quickstart.txt").stat().st_uid == n.uid
    last = proc.err.strip().splitlines()[-1]
    assert last.startswith("agentsh: entering the sandbox of") and "ab exec" in last, proc.err
    assert (n.home / ".local" / "bin" / "ab").exists()
    assert "# agentsh: ~/.local/bin on PATH" in (n.home / ".bashrc").read_text()
    assert n.sh("command -v ab ab-hook").out.split() == [str(n.home / ".local/bin/ab"),
                                                          str(n.home / ".local/bin/ab-hook")]
    if n.rootless:  # a first-time user's empty vfs store moved to overlay
        assert "driver = \"overlay\"" in (n.home / ".config/containers/storage.conf").read_text()
        assert n.run("podman", "info", "--format", "{{.Store.GraphDriverName}}").out.strip() == "overlay"
    os.unlink(n.app / "quickstart.txt")


def cd_app(n, proc):
    assert proc.returncode == 0
    n.cwd = n.app


def up(n, proc):
    assert proc.returncode == 0 and proc.out.strip().startswith("ab-app-"), proc.err
    n.sandbox = proc.out.strip()


def make_test(n, proc):
    assert proc.returncode == 0, proc.err
    assert (n.app / "test-output.txt").read_text() == "built in the sandbox\n"  # through the mount
    assert (n.app / "hello").stat().st_uid == n.uid
    failing = n.sh("ab exec -- make no-such-target")
    assert failing.returncode == 2 and "No rule to make target" in failing.err  # make's own status
    # A commit made inside is the newcomer's, and reaches host git.
    commit = n.sh("ab exec -- sh -c 'git add hello.c Makefile test-output.txt && git commit -qm \"from the sandbox\"'")
    assert commit.returncode == 0, commit.err
    assert n.git("log", "-1", "--format=%s|%an|%ae") == f"from the sandbox|{IDENTITY[0]}|{IDENTITY[1]}"
    assert n.git("show", "HEAD:test-output.txt") == "built in the sandbox"


def interactive(n, proc):
    assert proc.returncode == 3 and proc.out == "inside /home/agent\n", proc.err


def pipes(n, proc):
    assert proc.returncode == 0 and proc.out.split() == ["0000000", "a", "\\0", "b", "0000003"], proc.out


def ls_json(n, proc):
    assert proc.returncode == 0 and n.sandbox in proc.out.split(), proc.err


def creds_import(n, proc):
    assert proc.returncode == 0, proc.err
    assert "CLAUDE_CREDENTIALS" in proc.out + proc.err


def agent_claude(n, proc):
    assert proc.returncode == 0 and "Claude Code" in proc.out, proc.out + proc.err


def agent_codex(n, proc):
    assert proc.returncode == 0 and "codex" in proc.out.lower(), proc.out + proc.err


def wt_new(n, proc):
    assert proc.returncode == 0, proc.err
    n.previous, n.cwd = n.cwd, Path(proc.out.strip())
    assert n.cwd.is_dir() and n.cwd != n.app
    assert n.run("git", "rev-parse", "--abbrev-ref", "HEAD").out.strip().endswith("search")


def agent_in_worktree(n, proc):
    agent_claude(n, proc)
    rows = json.loads(n.ok("ab ls --json").out)
    mine = {r["name"] for r in rows if r["project"].startswith(str(n.home))}
    assert len(mine) == 2 and n.sandbox in mine  # the worktree has a sandbox of its own


def cd_back(n, proc):
    assert proc.returncode == 0
    n.cwd, n.previous = n.previous, n.cwd
    assert n.cwd == n.app


def wt_ls(n, proc):
    assert proc.returncode == 0 and "search" in proc.out, proc.err


def hook_line(n, proc):
    assert proc.returncode == 0
    loaded = n.sh("type _agentsh_hook >/dev/null && echo loaded")
    assert loaded.out.strip() == "loaded" and "command not found" not in loaded.err, loaded.err


def project_file(n, proc):
    assert proc.returncode == 0 and (n.app / ".agentsh.toml").read_text() == 'memory = "8g"\n'


def allow(n, proc):
    assert proc.returncode == 0, proc.err


def status(n, proc):
    assert proc.returncode == 0, proc.err
    assert re.search(r"^trust\s+allowed", proc.out, re.M), proc.out
    assert "stale: it predates the config; run 'ab up' to recreate it" in proc.out, proc.out
    report = json.loads(n.ok("ab status --json").out)
    assert (report["state"], report["stale"], report["apply"]) == ("running", True, "ab up")


def down_rm(n, proc):
    assert proc.returncode == 0, proc.err
    assert n.sandbox not in n.ok("ab ls --json").out


def doctor(n, proc):
    assert proc.returncode == 0, proc.out + proc.err
    assert "FAIL" not in proc.out
    started = time.monotonic()
    n.ok("ab doctor")
    assert time.monotonic() - started < 3, "ab doctor took 3 s or more with the image present"


def not_run(n, proc):
    """Replaced by the stand-in line (see STAND_IN)."""


TOUR = [
    ("cd ~/src/app", cd_app),
    ("ab up", up),
    ("ab exec -- make test", make_test),
    ("ab exec", interactive),
    ("printf 'a\\0b' | ab exec -- cat | od -c", pipes),
    ("ab ls --json | jq -r '.[].name'", ls_json),
    ("ab creds import claude", creds_import),
    ("ab agent claude", agent_claude),
    ('ab agent codex --safe -- "fix the failing test"', agent_codex),
    ('cd "$(ab wt new search)"', wt_new),
    ("ab agent claude", agent_in_worktree),
    ("cd -", cd_back),
    ("ab wt ls", wt_ls),
    ("echo 'eval \"$(ab-hook bash)\"' >> ~/.bashrc", hook_line),
    ("echo 'memory = \"8g\"' > .agentsh.toml", project_file),
    ("ab allow", allow),
    ("ab status", status),
    ("ab down --rm", down_rm),
    ("ab doctor", doctor),
]
# What runs instead of a line that needs a real login, a terminal or shell state: (line, stdin).
STAND_IN = {
    "cd ~/src/app": ("true", None),
    "ab exec": ("ab exec", b"echo inside $HOME; exit 3\n"),
    "ab agent claude": ("ab agent claude -- --version", None),
    'ab agent codex --safe -- "fix the failing test"': ("ab agent codex --safe -- --version", None),
    'cd "$(ab wt new search)"': ("ab wt new search", None),
    "cd -": ("true", None),
}


def walk_the_tour(n):
    set_up(n)
    quickstart(n)
    for line, check in TOUR:
        typed, stdin = STAND_IN.get(line, (line, None))
        check(n, n.sh(typed, input=stdin))


# -- root and an ordinary user -----------------------------------------------------------------

def remove_root_sandboxes(prefix, names=()):
    """Root's sandboxes of projects under `prefix` (the app's and the worktree's) and their home volumes
    (`names`: sandboxes already removed, whose home volumes stay)."""
    rows = json.loads(podman("ps", "-a", "--filter", "label=io.agentsh.managed=true", "--format", "json").stdout
                      or "[]")
    names = set(names)
    for c in rows:
        if (c.get("Labels") or {}).get("io.agentsh.project", "").startswith(prefix):
            names.add(c["Names"][0])
            podman("rm", "-f", "-t", "0", c["Names"][0], check=False)
    for record in Path(prefix).glob("home/.local/state/agentsh/sandboxes/ab-*.json"):
        names.add(record.name[:-len(".json")])
    for name in names:
        podman("volume", "rm", "-f", f"{name}-home", check=False)


def kill_processes_with(marker):
    """End the processes whose environment names `marker` (the newcomer's HOME): a rootless pause process."""
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if marker.encode() not in f.read():
                    continue
            os.kill(int(entry), 9)
        except OSError:
            continue


@pytest.mark.skipif(os.geteuid() != 0, reason="the rootful newcomer needs root")
def test_the_readme_as_root(default_image, tmp_path):
    n = Newcomer(tmp_path / "root-newcomer")
    try:
        walk_the_tour(n)
    finally:
        remove_root_sandboxes(str(n.base), [getattr(n, "sandbox", "")] if getattr(n, "sandbox", "") else [])
        kill_processes_with(str(n.home))


@pytest.fixture
def ordinary_user(request):
    """As root: the rootless_user fixture's account. As anyone else: this user (the whole suite is rootless)."""
    return request.getfixturevalue("rootless_user") if os.geteuid() == 0 else None


@pytest.mark.rootless
def test_the_readme_as_an_ordinary_user(default_image, ordinary_user, tmp_path):
    base = ordinary_user.home / f"newcomer-{os.getpid()}" if ordinary_user else tmp_path / "user-newcomer"
    n = Newcomer(base, ordinary_user)
    archive = n.base / "agentsh-image.tar"
    podman("save", "-q", "-o", str(archive), DEFAULT_IMAGE)
    archive.chmod(0o644)
    n.env["AGENTSH_IMAGE_ARCHIVE"] = str(archive)
    try:
        walk_the_tour(n)
    finally:
        n.run("podman", "system", "reset", "-f", cwd=n.base, timeout=600)
        kill_processes_with(str(n.home))
        archive.unlink(missing_ok=True)
        subprocess.run(["rm", "-rf", str(n.base)], capture_output=True)

