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

from agentsh.base import layout

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
    """The nearest directory at or above `directory` holding the project file, or None.

    The same walk as the bash/zsh hooks: on the logical path, skipping the
    home directory and / (never projects, see agentsh.host.project.find).
    """
    home = os.environ.get("HOME", "") if home is None else home
    d = directory.rstrip("/")
    while d:
        if d != home and os.path.isfile(d + "/" + PROJECT_FILE):
            return d
        d = d.rpartition("/")[0]
    return None


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
    from agentsh.base.errors import AgentshError
    from agentsh.host import project
    from agentsh.policy import config, trust

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


def session_id_for_shell():
    """A fresh random session id, for a hook that was loaded without one."""
    return os.urandom(12).hex()


def resource_dirs(kind):
    """Where the shellhooks/ or completions/ sources are: beside the package in a
    checkout (or editable install), else where the wheel's data files went."""
    import sys

    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    script_base = os.path.dirname(os.path.dirname(os.path.realpath(sys.argv[0] or ".")))
    bases = [here, os.path.join(sys.prefix, "share", "agentsh"), os.path.join(script_base, "share", "agentsh")]
    try:
        import site

        bases.append(os.path.join(site.getuserbase(), "share", "agentsh"))
    except Exception:  # pragma: no cover - site customised away
        pass
    return [os.path.join(b, kind) for b in dict.fromkeys(bases)]


def resource_path(kind, name):
    """The path of a hook or completion source; a clear error when not installed."""
    from agentsh.base.errors import AgentshError

    for d in resource_dirs(kind):
        path = os.path.join(d, name)
        if os.path.isfile(path):
            return path
    raise AgentshError(f"{kind}/{name} is not installed with this agentsh",
                       "reinstall agentsh (pip install --force-reinstall agentsh)")


def read_resource(kind, name):
    with open(resource_path(kind, name), encoding="utf-8") as f:
        return f.read()


# -- ab-status -------------------------------------------------------------------

TRUST_NONE = "none"  # no project file: nothing to trust
TRUST_SESSION = "session"  # allowed for this shell session only


def trust_of(store, config_file, check_build=False, build=None):
    """(trust, why) for a project's trust anchor: allowed, session, blocked, denied or none.

    With check_build, a devcontainer build whose Dockerfile or context changed
    since it was allowed makes the answer "blocked" (`build`: its digest,
    when the caller computed it already; else a walk of the context).
    """
    from agentsh.base.errors import AgentshError
    from agentsh.policy import trust

    if not config_file:
        return TRUST_NONE, f"no {PROJECT_FILE} here or above: the user config applies and the cd hook does nothing"
    try:
        data = trust.read_project_file(config_file)
    except AgentshError as e:
        return trust.BLOCKED, f"{e.message}; it is ignored"
    covered = trust.cover(config_file, data)

    def allowed(answer, record):
        problem = trust.build_problem(covered, record, build) if check_build else None
        return (trust.BLOCKED, problem) if problem else answer

    state, record = trust.status_record(store, config_file, data, session=False, covered=covered)
    if state == trust.ALLOWED:
        return allowed((trust.ALLOWED, "its current content was allowed with ab-allow"), record)
    if state == trust.DENIED:
        return trust.DENIED, "denied with ab-deny; ab-allow lifts the denial"
    state, record = trust.status_record(store, config_file, data, covered=covered)
    if state == trust.ALLOWED:
        return allowed((TRUST_SESSION, "allowed for this shell session only (ab-allow --session)"), record)
    if trust.was_allowed(store, config_file):
        return trust.BLOCKED, "changed since it was allowed; review it, then run ab-allow"
    return trust.BLOCKED, "never allowed; review it, then run ab-allow"


def status_report(directory=None, store=None, engine=True, environ=None, deep=True):
    """What ab-status prints: the project, its trust and why, what it widens, the sandbox, its credentials.

    With engine=False nothing is asked of the container engine (state is
    "unknown" unless no record says agentsh made the sandbox). With
    deep=False (the prompt) the project's devcontainer build context is not
    read: no "widens", and its trust is decided on the files the cd hook
    checks, so it is cheap enough to run at every prompt.
    """
    from agentsh.base.errors import AgentshError
    from agentsh.host import project
    from agentsh.policy import config, trust

    environ = os.environ if environ is None else environ
    store = _store(store)
    directory = os.path.realpath(directory or os.getcwd())
    report = {"directory": directory, "project": None, "project_file": None, "trust": None, "reason": None,
              "on_enter": None, "sandbox": None, "state": None, "credentials": [],
              "hook": "off" if disabled(environ) else "on", "inside_sandbox": environ.get(SANDBOX_ENV) or None,
              "ports": [], "error": None, "widens": None}
    try:
        proj = project.find(directory)
    except AgentshError as e:
        report["reason"] = e.message
        return report
    report.update(project=proj.root, project_file=proj.config_file, sandbox=proj.sandbox)
    anchor = trust.anchor(proj)  # the project file, else a devcontainer.json
    seen, review_error = None, None
    if deep and anchor:
        try:
            seen = config.review(anchor)
            report["widens"] = seen.widens
        except AgentshError as e:
            review_error = str(e)
    report["trust"], report["reason"] = trust_of(store, anchor, check_build=deep and seen is not None,
                                                 build=seen.build if seen else None)
    try:
        cfg = config.load(proj, store)
    except AgentshError as e:
        report["error"] = str(e)
        cfg = None
    if report["error"] is None and review_error:
        report["error"] = review_error
    if cfg is not None:
        report["on_enter"] = cfg["hook"]["on_enter"] if proj.config_file else None
        report["credentials"] = granted_credentials(proj, cfg, store)
    if engine and cfg is not None:
        from agentsh.host.engine import Engine

        info = Engine(cfg["engine"]).inspect(proj.sandbox)
        report["state"] = (info.get("State") or {}).get("Status", "unknown") if info else "absent"
        report["ports"] = published_ports(info)
    else:
        report["state"] = "unknown" if store.read(layout.sandbox_record(proj.sandbox)) else "absent"
    return report


def published_ports(info):
    """The sandbox's port mapping from its inspect dict: [{ip, host, container, proto}], sorted."""
    bindings = ((info or {}).get("HostConfig") or {}).get("PortBindings") or {}
    rows = []
    for key, hosts in bindings.items():
        container, _, proto = key.partition("/")
        for h in hosts or ():
            rows.append({"ip": h.get("HostIp") or "0.0.0.0", "host": int(h.get("HostPort") or 0),
                         "container": int(container), "proto": proto or "tcp"})
    return sorted(rows, key=lambda r: (r["container"], r["proto"], r["host"]))


def granted_credentials(proj, cfg, store):
    """Credential names the project receives; [] when the credential cache is not installed."""
    try:
        from agentsh.creds.delivery import wanted
    except ImportError:
        return []
    try:
        return sorted(wanted(proj, cfg, store))
    except (OSError, ValueError):
        return []


def _store(store):
    if store is not None:
        return store
    from agentsh.base.state import Store

    return Store()
