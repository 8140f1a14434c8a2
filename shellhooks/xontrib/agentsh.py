"""agentsh's cd hook for xonsh: `xontrib load agentsh` in ~/.xonshrc.

The same behaviour as the bash and zsh hooks. Before each prompt, in-process
(xonsh is Python, so the common case costs a string comparison and, after a
cd, a few stat calls): if $PWD is unchanged or no .agentsh.toml is above it,
nothing else happens. On entering a project, `ab-hook --enter DIR` decides and
acts with the terminal (the sandbox shell runs in a child process, as in bash),
and its exit status says what happened.
"""

import os
import subprocess

HOOK_BIN = None  # set by `ab-hook xonsh` to the absolute path of ab-hook
_MARK = "(ab) "
_EVENTS = ("on_pre_prompt_format", "on_pre_prompt")


class _Hook:
    """The per-shell state the bash hook keeps in _agentsh_* variables."""

    def __init__(self, xsh):
        self.xsh = xsh
        self.last_dir = None
        self.project = None
        self.marked_prompt = None
        self.handler = None

    @property
    def env(self):
        return self.xsh.env

    def bin(self):
        if HOOK_BIN:
            return HOOK_BIN
        from agentsh.host.engine import which

        for d in self.env.get("PATH", []):
            candidate = os.path.join(d, "ab-hook")
            if os.access(candidate, os.X_OK):
                return candidate
        return which("ab-hook") or "ab-hook"

    def on_pre_prompt(self):
        from agentsh.app import hooks

        pwd = self.env.get("PWD") or os.getcwd()
        if pwd == self.last_dir:
            return
        self.last_dir = pwd
        if hooks.disabled(self.env):
            return
        found = hooks.find_project_file(pwd, home=self.env.get("HOME", ""))
        if found == self.project:
            return
        self.unmark()
        self.project = found
        if found is None:
            return
        try:
            status = subprocess.call([self.bin(), "--enter", pwd], env=self.env.detype())
        except OSError as e:
            print(f"agentsh: cannot run ab-hook: {e.strerror}")
            return
        if status == hooks.ENTER_UP:
            self.mark()

    def mark(self):
        prompt = self.env.get("PROMPT", "")
        if isinstance(prompt, str):
            self.marked_prompt = prompt
            self.env["PROMPT"] = _MARK + prompt

    def unmark(self):
        if self.marked_prompt is not None:
            self.env["PROMPT"] = self.marked_prompt
            self.marked_prompt = None

    def alias(self, args, stdin=None):
        """`ab-hook`: --disable/--enable change this shell; anything else runs ab-hook."""
        if args[:1] == ["--disable"]:
            self.env["AGENTSH_HOOK"] = "off"
            self.unmark()
            self.project = None
            return 0
        if args[:1] == ["--enable"]:
            self.env.pop("AGENTSH_HOOK", None)
            self.last_dir = None
            return 0
        return subprocess.call([self.bin(), *args], env=self.env.detype())


_hook = None


def _load_xontrib_(xsh, **_):
    global _hook
    from agentsh.app import hooks

    if not xsh.env.get("AGENTSH_SESSION"):
        xsh.env["AGENTSH_SESSION"] = hooks.session_id_for_shell()
    _hook = _Hook(xsh)

    def agentsh_cd_hook(**_):  # events want a plain function, to tag it
        _hook.on_pre_prompt()

    _hook.handler = agentsh_cd_hook
    # Before the prompt is formatted, so a mark shows at once; older xonsh
    # lacks that event and gets on_pre_prompt (the second call is a no-op).
    for event in _EVENTS:
        getattr(xsh.builtins.events, event)(agentsh_cd_hook)
    xsh.aliases["ab-hook"] = _hook.alias
    from agentsh.cli.completion import register_xonsh

    register_xonsh()
    return {}


def _unload_xontrib_(xsh, **_):
    global _hook
    if _hook is not None:
        _hook.unmark()
        for event in _EVENTS:
            getattr(xsh.builtins.events, event).discard(_hook.handler)
        xsh.aliases.pop("ab-hook", None)
        xsh.completers.pop("agentsh", None)
        _hook = None
    return {}
