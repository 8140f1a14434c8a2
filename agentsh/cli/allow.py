"""ab-allow / ab-deny: trust or block a project's .agentsh.toml (direnv-style)."""

import os

from .common import parser, run


def _project_file(directory):
    from .. import project
    from ..errors import AgentshError

    from ..trust import anchor

    proj = project.find(directory)
    path = anchor(proj)  # the project file, else a devcontainer.json (with the Dockerfile it names)
    if not path:
        raise AgentshError(f"no {project.PROJECT_FILE} (or .devcontainer/devcontainer.json) in {proj.root} or above it",
                           "nothing to allow; create one, or give the project's directory")
    return os.path.realpath(path)


def allow_body(argv):
    p = parser("ab-allow", "Trust the current content of the project's .agentsh.toml. Any later "
               "edit makes it untrusted again, until allowed again.",
               ["ab-allow            # the project holding .", "ab-allow ~/src/app",
                "ab-allow --session  # only until this shell exits (needs the cd hook: ab-hook)"])
    p.add_argument("dir", nargs="?", help="a directory inside the project (default: .)")
    p.add_argument("--session", action="store_true",
                   help="trust it for this shell session only (the AGENTSH_SESSION the cd hook exports)")
    args = p.parse_args(argv)

    from .. import trust
    from ..errors import AgentshError
    from ..state import Store

    session = None
    if args.session:
        session = trust.session_id()
        if not session:
            raise AgentshError("--session needs a shell session, and AGENTSH_SESSION is not set",
                               "load the cd hook first: eval \"$(ab-hook bash)\" (or zsh; xonsh: xontrib load agentsh)")
    path = _project_file(args.dir)
    trust.allow(Store(), path, session=session)
    print(f"allowed {path}" + (" for this shell session" if session else ""))
    return 0


def deny_body(argv):
    p = parser("ab-deny", "Block the project's .agentsh.toml whatever its content (the denial survives "
               "edits) until 'ab-allow'.", ["ab-deny", "ab-deny ~/src/untrusted-repo"])
    p.add_argument("dir", nargs="?", help="a directory inside the project (default: .)")
    args = p.parse_args(argv)

    from .. import trust
    from ..state import Store

    path = _project_file(args.dir)
    trust.deny(Store(), path)
    print(f"denied {path}")
    return 0


def allow_main():
    run("ab-allow", allow_body)


def deny_main():
    run("ab-deny", deny_body)
