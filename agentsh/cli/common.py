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
    """Call body(argv) and turn its outcome into an exit status."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        status = body(argv)
    except AgentshError as e:
        sys.stderr.write(f"{prog}: {e}\n")
        status = e.code
    except KeyboardInterrupt:
        status = 130
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): not an error worth a trace.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        status = 141
    sys.exit(status or 0)


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
