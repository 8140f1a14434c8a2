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
        self.project = None  # the real path of the project directory we are in
        self.blocked = False  # its .agentsh.toml was blocked; an ab-allow in this session decides again
        self.marked = False
        self.unmarked_prompt = None  # $PROMPT without the mark
        self.marked_prompt = None  # the $PROMPT we set
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

        if hooks.disabled(self.env):
            # Off is --disable: nothing marked, no project remembered, so turning it on decides afresh.
            if self.project is not None or self.marked:
                self.forget()
            return
        how = "--enter"
        pwd = self.env.get("PWD") or os.getcwd()
        if self.blocked and _exists(hooks.recheck_file(self.env.get("AGENTSH_SESSION"))):
            how, self.project, self.blocked = "--recheck", None, False  # ab-allow ran in this session since
        elif pwd == self.last_dir:
            self.remark()
            return
        self.last_dir = pwd
        found = hooks.find_project_file(pwd, home=self.env.get("HOME", ""))
        if found != self.project:  # real paths: one directory reached by two paths is one project
            self.unmark()
            self.project = found
            self.blocked = False
            if found is not None:
                try:
                    status = subprocess.call([self.bin(), how, pwd], env=self.env.detype())
                except OSError as e:
                    print(f"agentsh: cannot run ab-hook: {e.strerror}")
                    return
                if status == hooks.ENTER_BLOCKED:
                    self.blocked = True
                elif status == hooks.ENTER_UP:
                    self.mark()
        self.remark()

    def mark(self):
        prompt = self.env.get("PROMPT", "")
        if callable(prompt):
            def marked():
                return _MARK + str(prompt())
        elif isinstance(prompt, str):
            marked = _MARK + prompt
        else:
            return
        self.marked, self.unmarked_prompt, self.marked_prompt = True, prompt, marked
        self.env["PROMPT"] = marked

    def remark(self):
        """Mark the prompt again when the user's prompt code replaced it (on every prompt while marked)."""
        if self.marked and self.env.get("PROMPT", "") != self.marked_prompt:
            self.mark()

    def unmark(self):
        if self.marked:
            if self.env.get("PROMPT", "") == self.marked_prompt:  # else the prompt code rebuilt it already
                self.env["PROMPT"] = self.unmarked_prompt
            self.marked, self.unmarked_prompt, self.marked_prompt = False, None, None

    def forget(self):
        self.unmark()
        self.project = None
        self.blocked = False
        self.last_dir = None

    def alias(self, args, stdin=None):
        """`ab-hook`: --disable/--enable change this shell; anything else runs ab-hook."""
        if args[:1] == ["--disable"]:
            self.env["AGENTSH_HOOK"] = "off"
            self.forget()
            return 0
        if args[:1] == ["--enable"]:
            self.env.pop("AGENTSH_HOOK", None)
            self.last_dir = None
            return 0
        return subprocess.call([self.bin(), *args], env=self.env.detype())


def _exists(path):
    return path is not None and os.path.exists(path)


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

    def agentsh_after_rc(**_):
        # Handlers run in the order they were added: once the rc file is read, move ours after the
        # ones it added, so the mark goes on a $PROMPT that the user's prompt code has already built.
        for event in _EVENTS:
            handlers = getattr(xsh.builtins.events, event)
            handlers.discard(agentsh_cd_hook)
            handlers.add(agentsh_cd_hook)

    xsh.builtins.events.on_post_rc(agentsh_after_rc)
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
