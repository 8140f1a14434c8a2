"""Real interactive bash, zsh and xonsh in tmux, each with the agentsh hook loaded.

Each test gets its own tmux server (a private socket) running one shell with
an isolated HOME and the test's XDG dirs, so what the test sees on the pane is
what a user would see in a terminal after typing the same keys.
"""

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
SHELLS = ("bash", "zsh", "xonsh")
HOST_PROMPT = "HOST> "
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # podman needs sbin (iptables)


def shell_program(shell):
    return str(BIN / "xonsh") if shell == "xonsh" else shutil.which(shell)


class Terminal:
    """One shell in a tmux pane: type into it, read its screen, wait for text."""

    def __init__(self, socket, argv, env, cwd):
        self.socket = socket
        self._sync = 0
        command = " ".join(shlex.quote(a) for a in argv)
        self.tmux("new-session", "-d", "-s", "main", "-x", "200", "-y", "50", "-c", str(cwd), command)

    def tmux(self, *args):
        return subprocess.run(["tmux", "-L", self.socket, "-f", "/dev/null", *args], capture_output=True,
                              text=True, check=True)

    def type(self, text, enter=True):
        self.tmux("send-keys", "-t", "main", "-l", text)
        if enter:
            self.tmux("send-keys", "-t", "main", "Enter")

    def key(self, name):
        self.tmux("send-keys", "-t", "main", name)

    def screen(self):
        """Everything the pane showed (history included), wrapped lines joined."""
        return self.tmux("capture-pane", "-p", "-J", "-S", "-", "-t", "main").stdout

    def wait_for(self, text, count=1, timeout=60):
        """Wait until `text` appears `count` times on the screen; returns the screen."""
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if screen.count(text) >= count:
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} did not appear {count} time(s) within {timeout}s; screen:\n{screen}")
            time.sleep(0.1)

    def sync(self, timeout=60):
        """Run a no-op and wait for its output: everything typed before it has run."""
        self._sync += 1
        self.type(f"printf '%s-%s\\n' SYNC {self._sync}")
        return self.wait_for(f"SYNC-{self._sync}\n", timeout=timeout)

    def run(self, command, timeout=60):
        """Type a command at the host prompt, wait for the next one (the hook has run by
        then), and return the screen from the line the command was typed on.

        Waiting for the prompt rather than typing ahead matters: xonsh drops
        keys typed while a command runs.
        """
        prompts = self.screen().count(HOST_PROMPT)
        self.type(command)
        screen = self.wait_for(HOST_PROMPT, count=prompts + 1, timeout=timeout)
        start = screen.rfind(command.splitlines()[0] if command else "\n")
        return screen[screen.rfind("\n", 0, start) + 1:]

    def run_inside(self, command, timeout=60):
        """Type a command in a sandbox shell and return what it printed."""
        self.type(command)
        screen = self.sync(timeout)
        return screen[screen.rfind(command.splitlines()[0]):]

    def leave_sandbox(self):
        """Type `exit` in a sandbox shell and wait for the host shell's next prompt."""
        prompts = self.screen().count(HOST_PROMPT)
        self.type("exit")
        self.wait_for(HOST_PROMPT, count=prompts + 1)

    def kill(self):
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)


def rc_file(shell, directory, variables, before=(), after=()):
    """The startup file loading the hook the way docs/shell.md says, plus test variables.

    `before`: lines run before the hook is loaded (a user's own prompt code, say); `after`: lines at the end.
    """
    directory.mkdir(parents=True, exist_ok=True)
    if shell == "bash":
        lines = [f"PS1={shlex.quote(HOST_PROMPT)}", *before, 'eval "$(ab-hook bash)"']
        lines += [f"{k}={shlex.quote(v)}" for k, v in variables.items()]
        path = directory / "bashrc"
    elif shell == "zsh":
        lines = [f"PS1={shlex.quote(HOST_PROMPT)}", "autoload -Uz compinit && compinit -u -D", *before,
                 'eval "$(ab-hook zsh)"']
        lines += [f"{k}={shlex.quote(v)}" for k, v in variables.items()]
        path = directory / ".zshrc"
    else:
        lines = [f"$PROMPT = {HOST_PROMPT!r}", "$XONSH_SHOW_TRACEBACK = True", "$XONSH_HISTORY_BACKEND = 'dummy'",
                 *before, "xontrib load agentsh"]
        lines += [f"${k} = {v!r}" for k, v in variables.items()]
        path = directory / "rc.xsh"
    path.write_text("\n".join([*lines, *after]) + "\n")
    return path


def shell_argv(shell, rc):
    program = shell_program(shell)
    if shell == "bash":
        return [program, "--noprofile", "--rcfile", str(rc), "-i"]
    if shell == "zsh":
        return [program, "-d", "-i"]  # .zshrc from ZDOTDIR; no global rc files
    return [program, "--rc", str(rc), "-i"]


@pytest.fixture
def open_shell(tmp_path, isolated_dirs):
    """open_shell(shell, cwd, rc_before=(), rc_after=(), **variables) -> a Terminal at its first prompt."""
    opened = []

    def start(shell, cwd=None, rc_before=(), rc_after=(), **variables):
        if shutil.which("tmux") is None or shell_program(shell) is None:
            pytest.fail(f"tmux and {shell} are needed (scripts/test-setup installs them)")
        home = tmp_path / "home"
        home.mkdir(exist_ok=True)
        rc_dir = tmp_path / f"rc-{shell}-{len(opened)}"
        rc = rc_file(shell, rc_dir, variables, rc_before, rc_after)
        env = {
            "HOME": str(home), "TERM": "xterm-256color", "LANG": "C.UTF-8",
            "PATH": f"{BIN}:{SYSTEM_PATH}",
            **{k: str(v) for k, v in isolated_dirs.items()},
        }
        if os.environ.get("CONTAINERS_CONF"):
            env["CONTAINERS_CONF"] = os.environ["CONTAINERS_CONF"]
        if shell == "zsh":
            env["ZDOTDIR"] = str(rc_dir)
        if shell == "xonsh":
            env["XONSH_SUPPRESS_WELCOME"] = "1"
        argv = ["env", "-i", *(f"{k}={v}" for k, v in env.items()), *shell_argv(shell, rc)]
        term = Terminal(f"agentsh-test-{os.getpid()}-{os.urandom(4).hex()}", argv, env, cwd or home)
        opened.append(term)
        term.wait_for(HOST_PROMPT, timeout=60)
        return term

    yield start
    for term in opened:
        term.kill()


def blocked_lines(text):
    return len(re.findall(r"^agentsh: \.agentsh\.toml is blocked\. Run 'ab-allow' to trust its content\.[ \t]*$",
                          text, re.M))
