"""Where the shell hook and completion sources are (`ab-hook bash`, `ab-hook --completion zsh`, ...)."""

import os
import site
import sys


def resource_dirs(kind):
    """Where the shellhooks/ or completions/ sources are: beside the package in a
    checkout (or editable install), else where the wheel's data files went."""
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    script_base = os.path.dirname(os.path.dirname(os.path.realpath(sys.argv[0] or ".")))
    bases = [here, os.path.join(sys.prefix, "share", "agentsh"), os.path.join(script_base, "share", "agentsh")]
    try:
        bases.append(os.path.join(site.getuserbase(), "share", "agentsh"))
    except Exception:  # pragma: no cover - site customised away
        pass
    return [os.path.join(b, kind) for b in dict.fromkeys(bases)]


def resource_path(kind, name):
    """The path of a hook or completion source; a clear error when not installed."""
    from agentsh.base.errors import AgentshError  # lazy: the xontrib imports this module into xonsh at start-up

    for d in resource_dirs(kind):
        path = os.path.join(d, name)
        if os.path.isfile(path):
            return path
    raise AgentshError(f"{kind}/{name} is not installed with this agentsh",
                       "reinstall agentsh (pip install --force-reinstall agentsh)")


def read_resource(kind, name):
    with open(resource_path(kind, name), encoding="utf-8") as f:
        return f.read()
