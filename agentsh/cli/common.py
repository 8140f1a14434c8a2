"""What every command shares: error exit, output, the project context. (Options: agentsh.cli.options.)"""

import os
import sys

from agentsh.base.errors import EXIT_FAILURE, EXIT_USAGE, AgentshError


def notice(message):
    """A one-line message for the user on stderr (never on stdout: it is for pipes)."""
    sys.stderr.write(f"agentsh: {message}\n")
    sys.stderr.flush()


def print_json(obj):
    import json  # lazy: json brings re along; only for --json

    sys.stdout.write(json.dumps(obj, indent=2) + "\n")


def run(prog, body, argv=None):
    """Call body(argv) and turn its outcome into an exit status: never a traceback.

    An OSError naming a file (one of agentsh's own: a full or read-only
    state dir, say) is one line with the path and the fix, exit 125; an
    unexpected exception is one line too (AGENTSH_DEBUG=1 shows its
    traceback). Once the status is known, further signals are ignored: a
    second Ctrl-C while the interpreter shuts down changes nothing.
    """
    argv = sys.argv[1:] if argv is None else argv
    try:
        status = body(argv)
    except AgentshError as e:
        status = _report(prog, e)
    except KeyboardInterrupt:
        status = 130
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): not an error worth a trace.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        status = 141
    except OSError as e:
        from agentsh.base.errors import from_os_error  # lazy: only on an OS error

        status = _report(prog, from_os_error(e))
    except Exception as e:
        if os.environ.get("AGENTSH_DEBUG") == "1":
            raise
        status = _report(prog, AgentshError(f"internal error: {type(e).__name__}: {str(e)[:200]}",
                                            "please report it; AGENTSH_DEBUG=1 shows the traceback"))
    if os.path.basename(sys.argv[0] or "").startswith("ab"):  # an ab-* process (not a test calling run())
        _settle()
    sys.exit(status or 0)


def _report(prog, e):
    try:
        sys.stderr.write(f"{prog}: {e}\n")
        sys.stderr.flush()
    except OSError:
        pass
    return e.code


def _settle():
    """Ignore the signals a user or a supervisor sends twice: the exit status is decided."""
    try:  # the C module: `signal` imports enum (~3 ms), on every command's way out
        import _signal as signal  # lazy: only at exit (the C module: no enum import)
    except ImportError:  # pragma: no cover - other interpreters
        import signal  # lazy: only at exit

    for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2"):
        try:
            signal.signal(getattr(signal, name), signal.SIG_IGN)
        except (OSError, ValueError):
            pass


def load_context(directory=None, flags=None, quiet=False):
    """The project for a directory, its config, the engine and the store."""
    from agentsh.base.state import Store  # lazy: not for --help or completion, which read only COMMAND
    from agentsh.host import project  # lazy: not for --help or completion, which read only COMMAND
    from agentsh.host.engine import Engine  # lazy: not for --help or completion, which read only COMMAND
    from agentsh.policy import config  # lazy: not for --help or completion, which read only COMMAND

    store = Store()
    proj = project.find(directory)
    cfg = config.load(proj, store, flags)
    if not quiet:
        for msg in cfg.notices:
            notice(msg)
    return proj, cfg, Engine(cfg["engine"]), store


__all__ = ["EXIT_FAILURE", "EXIT_USAGE", "notice", "print_json", "run", "load_context"]
