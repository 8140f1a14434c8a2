"""ab-allow / ab-deny: trust or block a project's .agentsh.toml (direnv-style).

ab-allow first checks the file (and its devcontainer) like user input and
says on stderr what it widens: host mounts, credentials, capabilities,
network, ports, CA bundle, env names, a devcontainer build and its context.
"""

import os
import sys

from agentsh.app.enter import recheck_file
from agentsh.base.errors import AgentshError
from agentsh.base.state import Store
from agentsh.cli import options
from agentsh.cli.common import run
from agentsh.cli.options import DIR, FLAG, OPTIONAL, Arg, Command, Option
from agentsh.host import project
from agentsh.policy import trust
from agentsh.policy.config import devcontainer_choice, review, widen_lines
from agentsh.policy.trust import anchor

_DIR_ARG = Arg("dir", nargs=OPTIONAL, help="a directory inside the project (default: .)", value=DIR)
ALLOW = Command(
    "ab-allow",
    "Trust the current content of the project's .agentsh.toml (and its devcontainer.json, Dockerfile and "
    "build context), after saying what it widens. Any later edit makes it untrusted again, until allowed again.",
    ["ab-allow            # the project holding .", "ab-allow ~/src/app",
     "ab-allow --session  # only until this shell exits (needs the cd hook: ab-hook)"],
    args=(_DIR_ARG,),
    options=(Option("--session", kind=FLAG,
                    help="trust it for this shell session only (the AGENTSH_SESSION the cd hook exports)"),
             Option("--devcontainer", metavar="NAME",
                    help="the devcontainer config .devcontainer/NAME/devcontainer.json (also config "
                         "'devcontainer')"),),
)
DENY = Command(
    "ab-deny",
    "Block the project's .agentsh.toml whatever its content (the denial survives edits) until 'ab-allow'.",
    ["ab-deny", "ab-deny ~/src/untrusted-repo"],
    args=(_DIR_ARG,),
)


def _project_file(directory, choice=None):

    proj = project.find(directory)
    path = anchor(proj, choice)  # the project file, else a devcontainer.json (with the Dockerfile it names)
    if not path:
        raise AgentshError(f"no {project.PROJECT_FILE} (or .devcontainer/devcontainer.json) in {proj.root} or above it",
                           "nothing to allow; create one, or give the project's directory")
    # The project root is a real path; the file itself is never followed if it is a symlink
    # (reading it refuses that), so trust is recorded for the path commands read.
    return path


def show_widens(path, widens, write):
    """What the project file adds to the sandbox, one `label  value` line each, before trust is recorded."""
    lines = widen_lines(widens)
    if not lines:
        write(f"{path} widens nothing beyond your own config\n")
        return
    write(f"{path} widens the sandbox:\n")
    for label, value in lines:
        write(f"  {label:<12} {value}\n")


def allow_body(argv):
    args = options.parse(ALLOW, argv)

    session = None
    if args.session:
        session = trust.session_id()
        if not session:
            raise AgentshError("--session needs a shell session, and AGENTSH_SESSION is not set",
                               "load the cd hook first: eval \"$(ab-hook bash)\" (or zsh; xonsh: xontrib load agentsh)")

    choice = devcontainer_choice(args.devcontainer)
    path = _project_file(args.dir, choice)

    # Read once, checked like user input (a bad value is refused, nothing recorded), shown, and
    # exactly those bytes (and that build context) recorded.
    seen = review(path, choice=choice)
    show_widens(path, seen.widens, sys.stderr.write)
    store = Store()
    trust.allow(store, path, session=session, covered=seen.covered, build=seen.build)
    print(f"allowed {path}" + (" for this shell session" if session else ""))
    _tell_the_hook(store, trust.session_id())
    return 0


def _tell_the_hook(store, session):
    """Leave word for this shell session's cd hook: blocked in a project, it decides again at the next
    prompt (agentsh.app.enter.recheck_file). Other shells sitting in the project enter on their next cd."""
    path = recheck_file(session, store.root)
    if path is None:
        return
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))
    except OSError:
        pass  # the hook then enters on the next cd into the project


def deny_body(argv):
    args = options.parse(DENY, argv)

    path = _project_file(args.dir)
    trust.deny(Store(), path)
    print(f"denied {path}")
    return 0


def allow_main():
    run("ab-allow", allow_body)


def deny_main():
    run("ab-deny", deny_body)
