"""`ab-status`: a directory's project, its trust and why, what it widens, its sandbox and credentials."""

import os

from agentsh.app.enter import PROJECT_FILE, SANDBOX_ENV, _store, disabled
from agentsh.base import layout
from agentsh.base.layout import EXECD

TRUST_NONE = "none"  # no project file: nothing to trust
TRUST_SESSION = "session"  # allowed for this shell session only


def trust_of(store, config_file, check_build=False, build=None, choice=None):
    """(trust, why) for a project's trust anchor: allowed, session, blocked, denied or none.

    With check_build, a devcontainer build whose Dockerfile or context changed
    since it was allowed makes the answer "blocked" (`build`: its digest,
    when the caller computed it already; else a walk of the context).
    """
    from agentsh.base.errors import AgentshError  # lazy: the xontrib imports this module into xonsh at start-up
    from agentsh.policy import trust  # lazy: the xontrib imports this module into xonsh at start-up

    if not config_file:
        return TRUST_NONE, f"no {PROJECT_FILE} here or above: the user config applies and the cd hook does nothing"
    try:
        data = trust.read_project_file(config_file)
    except AgentshError as e:
        return trust.BLOCKED, f"{e.message}; it is ignored"
    covered = trust.cover(config_file, data, choice)

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
    from agentsh.base.errors import AgentshError  # lazy: the xontrib imports this module into xonsh at start-up
    from agentsh.host import project  # lazy: the xontrib imports this module into xonsh at start-up
    from agentsh.policy import config, trust  # lazy: the xontrib imports this module into xonsh at start-up

    environ = os.environ if environ is None else environ
    store = _store(store)
    directory = os.path.realpath(directory or os.getcwd())
    report = {"directory": directory, "project": None, "project_file": None, "trust": None, "reason": None,
              "on_enter": None, "sandbox": None, "state": None, "credentials": [],
              "hook": "off" if disabled(environ) else "on", "inside_sandbox": environ.get(SANDBOX_ENV) or None,
              "ports": [], "error": None, "widens": None, "stale": None, "apply": None, "exec": None,
              "devcontainers": [], "devcontainer": None, "siblings": []}
    try:
        proj = project.find(directory)
    except AgentshError as e:
        report["reason"] = e.message
        return report
    report.update(project=proj.root, project_file=proj.config_file, sandbox=proj.sandbox)
    from agentsh.policy import devcontainer  # lazy: the devcontainer reader (json), only inside a project

    try:
        choice = config.devcontainer_choice()
    except AgentshError:
        choice = None  # config.load below says what is wrong with the user config
    # Every devcontainer config of the project, and the one in use (chosen, the top one, or the only one).
    report["devcontainers"] = [{"name": n or ".", "path": p} for n, p in devcontainer.configs(proj.root)]
    report["devcontainer"] = devcontainer.find(proj.root, choice)
    anchor = trust.anchor(proj, choice)  # the project file, else a devcontainer.json
    seen, review_error = None, None
    if deep and anchor:
        try:
            seen = config.review(anchor, choice=choice)
            report["widens"] = seen.widens
        except AgentshError as e:
            review_error = str(e)
    report["trust"], report["reason"] = trust_of(store, anchor, check_build=deep and seen is not None,
                                                 build=seen.build if seen else None, choice=choice)
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
        from agentsh.host.engine import Engine  # lazy: --prompt and --no-engine ask no engine

        eng = Engine(cfg["engine"])
        info = eng.inspect(proj.sandbox)
        report["state"] = (info.get("State") or {}).get("Status", "unknown") if info else "absent"
        report["ports"] = published_ports(info)
        if info is None and proj.sandbox in eng.storage_only(proj.sandbox):  # an ab-up killed half-way
            report["state"] = "half-made"
            report["error"] = report["error"] or (
                f"sandbox {proj.sandbox} exists only in the engine's storage (an interrupted ab-up); "
                "run 'ab-up' (it removes and remakes it) or 'ab-down --rm'")
        if os.path.exists(store.path(layout.compose_record(proj.sandbox))):  # a compose-based devcontainer's
            from agentsh.sandbox import compose  # lazy: only for a sandbox with compose siblings

            report["siblings"] = compose.siblings(eng, proj.sandbox)
        if info:
            report["stale"], report["exec"] = _staleness(proj, cfg, eng, info)
            if report["stale"]:  # how to bring the sandbox in line with the config
                try:
                    here = os.path.realpath(os.getcwd()) + "/"
                except OSError:
                    here = ""
                report["apply"] = "ab up" if here.startswith(proj.root.rstrip("/") + "/") else f"ab up {proj.root}"
    else:
        report["state"] = "unknown" if store.read(layout.sandbox_record(proj.sandbox)) else "absent"
    return report


def _staleness(proj, cfg, engine, info):
    """(whether the sandbox predates the config in force, "server" or "engine": how ab-exec reaches it)."""
    from agentsh.base.errors import AgentshError  # lazy: the xontrib imports this module into xonsh at start-up
    from agentsh.sandbox import lifecycle  # lazy: only with the engine's answer; not on --prompt's path

    config_ = info.get("Config") or {}
    labels = config_.get("Labels") or {}
    try:
        want = lifecycle.spec(proj, cfg, engine, lifecycle.kept_publish(info))
        stale = labels.get(lifecycle.LABEL_SPEC) != want.hash
    except AgentshError:
        stale = None
    cmd = config_.get("Cmd") or []
    return stale, "server" if cmd[:1] == [EXECD] else "engine"


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
        from agentsh.creds.delivery import wanted  # lazy: not on the cd hook's path
    except ImportError:
        return []
    try:
        return sorted(wanted(proj, cfg, store))
    except (OSError, ValueError):
        return []
