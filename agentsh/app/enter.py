"""What a shell's cd hook needs: is this directory in an allowed project, and what to do.

The shells do the common case themselves with builtins (walk up $PWD looking
for the project file; nothing when $PWD did not change) and only call in here
on entering a project, so this module is about being right, not about being
called often. It imports nothing heavy at load time because the xonsh hook
imports it into the user's shell and runs `find_project_file` at every cd.

The bash/zsh hooks call `ab-hook --enter DIR`, whose exit status tells them
what happened (the ENTER_* values below), so they never parse output and
never evaluate anything derived from a path.
"""

import os

PROJECT_FILE = ".agentsh.toml"
BLOCKED_MESSAGE = "agentsh: .agentsh.toml is blocked. Run 'ab-allow' to trust its content."
HOOK_ENV = "AGENTSH_HOOK"  # "off" disables the hook
SANDBOX_ENV = "AGENTSH_SANDBOX"  # set inside every sandbox: the hook never nests

# Decisions (what entering the directory should do).
NONE = "none"  # not a project with a project file, or on_enter = "none"
OFF = "off"  # hook disabled, or already inside a sandbox
BLOCKED = "blocked"  # project file present but not allowed (new, changed or denied)
SHELL = "shell"  # open an interactive shell in the sandbox
UP = "up"  # make sure the sandbox runs, mark the prompt

# Exit statuses of `ab-hook --enter`, read by the bash and zsh hooks.
ENTER_NOTHING = 0
ENTER_BLOCKED = 3
ENTER_LEFT_SHELL = 4  # a sandbox shell ran and the user left it
ENTER_UP = 5  # the sandbox runs: mark the prompt (125: agentsh failed, message on stderr)


def disabled(environ=None):
    """True when the hook must do nothing: opted out, or already in a sandbox."""
    environ = os.environ if environ is None else environ
    return environ.get(HOOK_ENV, "").lower() == "off" or bool(environ.get(SANDBOX_ENV))


def find_project_file(directory, home=None):
    """The real path of the nearest directory at or above `directory` holding the project file, or None.

    The same walk as the bash/zsh hooks and agentsh.host.project.find: on the
    real path (whatever symlink led to `directory`), skipping the home
    directory and / (never projects).
    """
    home = os.environ.get("HOME", "") if home is None else home
    home = os.path.realpath(home) if home else ""
    d = os.path.realpath(directory)
    while d != "/":
        if d != home and os.path.isfile(d + "/" + PROJECT_FILE):
            return d
        d = os.path.dirname(d)
    return None


RECHECK_DIR = "hook"  # in the state dir: <session>.allowed, left by ab-allow for its shell session's hook


def recheck_file(session, state_dir=None):
    """The file ab-allow leaves for shell session `session` (None for a malformed id).

    A hook blocked in a project looks for it before each prompt (one stat) and,
    when it is there, decides again (`ab-hook --recheck`, which removes it): an
    ab-allow takes effect at the next prompt of the shell it ran in.
    """
    if not session or not (session.isascii() and session.isalnum()) or len(session) > 64:
        return None
    if state_dir is None:
        from agentsh.base import paths  # lazy: the xontrib imports this module into xonsh at start-up

        state_dir = paths.state_dir()
    return os.path.join(state_dir, RECHECK_DIR, f"{session}.allowed")


class Decision:
    """What entering a directory means: action, project, trust and its reason."""

    def __init__(self, action, project=None, trust=None, config=None):
        self.action = action
        self.project = project
        self.trust = trust
        self.config = config

    def __repr__(self):
        return f"Decision({self.action!r}, {self.project!r}, trust={self.trust!r})"


def decide(directory, store=None, environ=None):
    """The Decision for entering `directory` (reads config and trust; no engine call)."""
    from agentsh.base.errors import AgentshError  # lazy: the xontrib imports this module into xonsh at start-up
    from agentsh.host import project  # lazy: the xontrib imports this module into xonsh at start-up
    from agentsh.policy import config, trust  # lazy: the xontrib imports this module into xonsh at start-up

    if disabled(environ):
        return Decision(OFF)
    try:
        proj = project.find(directory)
    except AgentshError:  # home, /, or a directory that went away
        return Decision(NONE)
    if not proj.config_file:
        return Decision(NONE, proj)
    cfg = config.load(proj, _store(store))
    if cfg.project_trust != trust.ALLOWED:
        return Decision(BLOCKED, proj, cfg.project_trust, cfg)
    return Decision(cfg["hook"]["on_enter"], proj, trust.ALLOWED, cfg)


STALE_MESSAGE = ("sandbox {name} predates your config (it changed after the sandbox was made): run 'ab up' to "
                 "recreate it, or set on_stale = \"recreate\" under [hook] to have cd do that")


def stale_spec(decision, engine, store):
    """The spec hash the config asks for when the project's sandbox runs under an older one, else None.

    From the sandbox record and /proc when they know its init process, else
    from one inspect. A sandbox that is not running is reconciled by its
    next start anyway.
    """
    from agentsh.base import (
        layout,  # lazy: app.enter loads with the xontrib at every xonsh start; this runs only on entering a project
    )
    from agentsh.base.errors import (
        AgentshError,  # lazy: app.enter loads with the xontrib at every xonsh start; this runs only on entering a project
    )
    from agentsh.host import (
        liveness,  # lazy: app.enter loads with the xontrib at every xonsh start; this runs only on entering a project
    )
    from agentsh.sandbox import (
        lifecycle,  # lazy: app.enter loads with the xontrib at every xonsh start; this runs only on entering a project
    )

    proj = decision.project
    try:
        record = store.read(layout.sandbox_record(proj.sandbox))
        if not record:
            return None  # not made by agentsh here: the next start makes it
        have, publish = record.get("spec"), record.get("publish", [])
        if not liveness.alive(record.get("pid"), record.get("pid_start")):
            info = engine.inspect(proj.sandbox)
            if not info or (info.get("State") or {}).get("Status") != lifecycle.RUNNING:
                return None
            have = ((info.get("Config") or {}).get("Labels") or {}).get(lifecycle.LABEL_SPEC)
            publish = lifecycle.kept_publish(info)
        want = lifecycle.spec(proj, decision.config, engine, publish)
    except AgentshError:
        return None
    return want.hash if have and want.hash != have else None


def say_stale_once(decision, want, store, notify, environ=None):
    """Tell the shell session once (per wanted spec) that its sandbox is stale."""
    from agentsh.base import (
        layout,  # lazy: app.enter loads with the xontrib at every xonsh start; this runs only on entering a project
    )
    from agentsh.base.errors import (
        AgentshError,  # lazy: app.enter loads with the xontrib at every xonsh start; this runs only on entering a project
    )

    environ = os.environ if environ is None else environ
    name = decision.project.sandbox
    seen = {"spec": want, "session": environ.get("AGENTSH_SESSION", "")}
    path = layout.stale_notice_record(name)
    try:
        said = store.read(path) or {}
        if {k: said.get(k) for k in seen} == seen:
            return False
    except AgentshError:
        pass
    notify(STALE_MESSAGE.format(name=name))
    try:
        store.write(path, seen)
    except OSError:
        pass
    return True


def session_id_for_shell():
    """A fresh random session id, for a hook that was loaded without one."""
    return os.urandom(12).hex()


def _store(store):
    if store is not None:
        return store
    from agentsh.base.state import Store  # lazy: the xontrib imports this module into xonsh at start-up

    return Store()
