"""One pipeline for everything that runs a command in a sandbox.

`ab-exec`, `ab-agent`, the cd hook's enter and `ab-wt` all call `run`, so
what must happen around a command happens the same way for each:

1. the sandbox runs (the locked one, when locked), started if it was not;
2. the command's environment is split: harmless host names (TERM, LANG...)
   ride on the exec as `-e NAME`; every value that may be secret (granted
   credentials, `-e NAME=VALUE`, config `env`) goes through a pipe into the
   sandbox's secrets tmpfs, which the in-sandbox `run` script reads and
   removes, so no value is kept in the engine's database or files;
3. the command runs through `run` (agentsh/data/sandbox/run), which keeps
   the sandbox's private git dir in step with the host's;
4. what the command committed is taken into the host repository
   (gitbridge.collect: a verified bundle, objects and refs only);
5. refreshed credential files are written back.
"""

import os
import time

from agentsh.base import layout
from agentsh.base.paths import data_dir
from agentsh.creds import delivery as inject
from agentsh.host import liveness
from agentsh.host.gitident import identity
from agentsh.sandbox import execute, lifecycle


class Request:
    """What to run: the command, where, with which extra environment."""

    def __init__(self, cmd, workdir, env_names=(), env_values=None, tty=False, locked=False, env_defaults=None):
        self.cmd, self.workdir, self.tty, self.locked = cmd, workdir, tty, locked
        self.env_defaults = dict(env_defaults or {})  # NAME -> value unless a credential or -e sets it
        self.env_names = list(env_names)  # host variables to pass by name (values may be secret)
        self.env_values = dict(env_values or {})  # NAME -> value set explicitly


def run(proj, cfg, engine, store, req, notify, delivery_for=None, fallback_hint=True):
    """Run `req` in the project's sandbox; returns the command's exit status.

    `delivery_for(recover)`: what credentials to hand over (default: the
    project's grants, none when locked); it may write credential files.
    """
    def recover():
        lifecycle.start(proj, cfg, engine, store, notify)  # the cfg in force (locked or not)

    if req.locked:  # make sure the running sandbox is the locked one, never a laxer one of the same name
        lifecycle.up(proj, cfg, engine, store, notify=notify)
    else:
        lifecycle.ensure_running(proj, cfg, engine, store, notify)  # a failed exec could swallow our stdin
    cmd = req.cmd
    fallback = getattr(cmd, "fallback", None)
    if fallback_hint and fallback and liveness.shell_hint(store, proj.sandbox) == fallback[0]:
        cmd = fallback  # this sandbox has been seen to lack the preferred shell

    if delivery_for is not None:
        delivery = delivery_for(recover)
    else:
        delivery = None if req.locked else inject.prepare(proj, cfg, store, notify)
    if delivery is not None and delivery.proxied:
        from agentsh.egress import network  # lazy: only when placeholders are handed over

        problem = network.passphrase_problem(store, proj.sandbox)
        if problem:
            notify(problem)
    token = execute.new_token()
    environ = os.environ
    dev = getattr(cfg, "devcontainer", None)  # its values made from host variables go like credentials, never at create time
    secret = {**(dev.exec_env if dev is not None and not req.locked else {}), **req.env_defaults,
              **{n: environ[n] for n in req.env_names if n in environ}}
    plain = {}  # values that are not secret: they may ride on the engine's exec -e
    if not req.locked and cfg.get("git_identity", "host") == "host":  # commits inside carry the user's name
        plain = {k: v for k, v in identity(store.root, proj.root).items() if k not in secret}
    if delivery is not None:
        secret.update(delivery.env_values)
    secret.update(req.env_values)  # an explicit -e NAME=VALUE wins
    files = list(delivery.files) if delivery is not None else []
    local = here(engine, store, proj.sandbox)
    conn = _server(engine, proj.sandbox, local)
    served = execute.server_runner(proj.sandbox) if conn is not None else None
    if files and conn is not None:  # credential files through the server too: one connection each
        conn.close()
        inject.write_files(engine, proj.sandbox, files, recover, run=served)
        files = []
        conn = _server(engine, proj.sandbox, local)
    if secret and conn is None:  # the engine's exec: values go by stdin into the tmpfs, not by exec -e
        files.append(inject.env_file(token, secret))
    if files:
        inject.write_files(engine, proj.sandbox, files, recover)
    dot_git = os.path.join(proj.root, ".git")
    had_git = os.path.lexists(dot_git)
    try:
        if conn is not None:  # the sandbox's exec server: no engine call at all
            env = {n: environ[n] for n in execute.host_env_names(environ)}
            env.update(plain)
            env.update(secret)
            env[execute.MARKER] = token
            status = execute.run_served(conn, cmd, req.workdir, env, req.tty, token)
        else:
            # A local engine's sandbox was checked (or started) just above: a "gone" answer now means it
            # went away during the command, which is never run a second time.
            status = execute.run(engine, proj.sandbox, cmd, req.workdir,
                                 [*execute.host_env_names(environ), *plain], plain, req.tty,
                                 None if local else recover, token=token)
    except execute.SandboxGone as e:
        status, gone = _went_away(proj, cfg, engine, store, e.status, e.held, notify, settle=True), True
    except execute.PidsLimit as e:
        return _cannot_start(proj, cfg, engine, store, e.status, e.held, notify)
    else:
        gone = status in KILLED and _state(engine, store, proj.sandbox) != "running"
        if gone:
            status = _went_away(proj, cfg, engine, store, status, None, notify)
    if getattr(cmd, "fell_back", False):
        try:
            liveness.remember_shell(store, proj.sandbox, cmd.fallback[0])
        except OSError:
            pass  # a hint only: the next exec tries the preferred shell first again
    if not had_git and os.path.lexists(dot_git):
        from agentsh.host.gittopo import set_aside  # lazy: only when the command made a .git; not on ab-exec's path

        set_aside(proj.root, notify)  # a repo the agent made: host git would run its config and hooks
    collect_git(proj, store, token, notify, req.locked)  # what it committed before it was cut short, too
    if delivery is not None and not gone:  # refreshed credential files: read from the sandbox, so not when gone
        inject.write_back(engine, proj.sandbox, delivery, store, notify, run=served)
    return status


KILLED = (137, 255)  # what an exec reports when its sandbox is killed, stopped or removed under it
GONE_STATUS = 137  # ab-exec's status when the sandbox went away during the command (128 + SIGKILL)


def _state(engine, store, sandbox):
    """"running", "stopped" or "removed", after an exec that failed (so an engine call is fine here)."""

    known = here(engine, store, sandbox) and os.path.exists(liveness.pid_file(store, sandbox))
    if known and liveness.sandbox_running(store, sandbox):
        return "running"
    try:
        info = engine.inspect(sandbox)
    except Exception:  # the engine itself failing here says nothing more about the sandbox
        return "unknown"
    if info is None:
        return "removed"
    if known:  # its init process is gone, whatever the engine has caught up with so far
        return "stopped"
    status = (info.get("State") or {}).get("Status")
    return "running" if status in ("running", "paused") else "stopped"


def _init_pid(engine, store, sandbox):

    try:
        with open(liveness.pid_file(store, sandbox), "rb") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(((engine.inspect(sandbox) or {}).get("State") or {}).get("Pid") or 0) or None
    except Exception:
        return None


STOPPED_SETTLE = 20  # tenths of a second a stopped sandbox is watched for its removal


def _went_away(proj, cfg, engine, store, status, held, notify, settle=False):
    """The command was cut short: its sandbox was removed or stopped, or its exec server went away. One line.

    `settle`: the connection or exec ended first; the sandbox's init may take a moment to be gone.
    """

    state = _state(engine, store, proj.sandbox)
    for _ in range(10 if settle else 0):
        if state != "running":
            break
        time.sleep(0.1)
        state = _state(engine, store, proj.sandbox)
    for _ in range(STOPPED_SETTLE if state == "stopped" else 0):
        # `rm -f` stops the sandbox first and removes it after: a stop seen at once may be a removal
        time.sleep(0.1)
        if _state(engine, store, proj.sandbox) == "removed":
            state = "removed"
            break
    if state in ("removed", "stopped"):
        notify(f"sandbox {proj.sandbox} was {state} while the command ran, which killed the command "
               f"(exit {GONE_STATUS}); it was not run again")
        return GONE_STATUS
    if state == "running" and execute.pids_at_limit(_init_pid(engine, store, proj.sandbox)):
        return _pids_message(proj, cfg, notify)
    if held is not None:
        os.write(2, held)
    notify(f"the command in sandbox {proj.sandbox} ended without an exit status (the engine or the exec "
           f"server went away); it may have run, and was not run again")
    return GONE_STATUS if status in KILLED else 125


def _cannot_start(proj, cfg, engine, store, status, held, notify):
    """The engine could not start the command's process (runc: "read init-p")."""
    if execute.pids_at_limit(_init_pid(engine, store, proj.sandbox)) is not False:
        return _pids_message(proj, cfg, notify)
    os.write(2, held)
    return status


def _pids_message(proj, cfg, notify):
    notify(f"the sandbox hit its pids limit (pids = {cfg.get('pids')}): no process could be started in "
           f"{proj.sandbox}; end some of its processes (ab-down, then ab-up, ends them all) or raise 'pids' "
           "in the config")
    return 125


def here(engine, store, sandbox):
    """Whether the sandbox's processes are this host's: a local engine, or a remote one's sandbox seen here."""
    return engine.is_local or liveness.sandbox_running(store, sandbox)


def _server(engine, sandbox, local=None):
    """A greeted connection to the sandbox's exec server, or None (the engine's exec is used)."""
    if not (engine.is_local if local is None else local) or os.environ.get("AGENTSH_EXEC_SERVER") == "0":
        return None
    from agentsh.sandbox import execd  # lazy: socket; the engine's exec (AGENTSH_EXEC_SERVER=0) needs none

    return execd.connect(sandbox)


def collect_git(proj, store, token, notify, locked=False):
    """Take into the host repository what command `token` committed in the sandbox."""
    if not _has_exports(proj.sandbox, token, locked):  # the common case: one directory listing
        return
    from agentsh.host import gittopo  # lazy: only when the command committed something
    from agentsh.sandbox import gitbridge  # lazy: shutil, subprocess: only when the command committed something

    gitbridge.collect(gittopo.recorded(store, proj), proj.sandbox, token, store, notify, locked)


def _has_exports(sandbox, token, locked):
    """Whether command `token` left an export list in the sandbox's private git dir (gitbridge.collect takes it)."""
    path = os.path.join(data_dir(), layout.private_git_dir(sandbox, locked), layout.GIT_EXPORT)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        prefix = f"{token}-"
        return any(n.startswith(prefix) and n.endswith(".refs") for n in os.listdir(fd))
    finally:
        os.close(fd)
