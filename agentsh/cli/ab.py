"""ab: the front command. `ab up ARGS` runs `ab-up ARGS`, as git does."""

import os
import sys

from agentsh import __version__

COMMANDS = {
    "up": "create or start the project's sandbox",
    "exec": "run a command (or a shell) in the project's sandbox",
    "down": "stop or remove sandboxes",
    "ls": "list sandboxes",
    "image": "build and list sandbox images",
    "allow": "trust the project's .agentsh.toml",
    "deny": "block the project's .agentsh.toml",
    "creds": "store credentials and grant them to projects",
    "wt": "git worktrees, one sandbox each (parallel agents on one repo)",
    "hook": "print the shell hook that enters the sandbox on cd",
    "status": "the project here: trust, sandbox, credentials",
    "doctor": "check the engine, image, CA bundle and state; say how to fix",
    "log": "the egress audit log: which hosts the sandbox reached or tried",
    "net": "network policy: show it, allow a host, propose an allowlist",
    "agent": "run a coding agent (claude, codex, gemini, opencode, aider) in the sandbox",
}


def usage():
    lines = ["usage: ab COMMAND [ARGS...]   (same as ab-COMMAND ARGS...)", "", "commands:"]
    lines += [f"  {name:<8} {text}" for name, text in COMMANDS.items()]
    lines += ["", "'ab COMMAND --help' (or ab-COMMAND --help) explains each one.",
              "example: ab up && ab exec -- make test"]
    return "\n".join(lines) + "\n"


def find_command(name):
    """ab-NAME beside this `ab` first (same install), else on PATH."""
    from agentsh.host.engine import which  # lazy: completion imports this module for COMMANDS; only dispatch needs it

    here = os.path.dirname(os.path.abspath(sys.argv[0]))
    beside = os.path.join(here, f"ab-{name}")
    if os.access(beside, os.X_OK):
        return beside
    return which(f"ab-{name}")


def main():
    argv = sys.argv[1:]
    if not argv or argv[0] in ("-h", "--help", "help"):
        if len(argv) > 1 and argv[0] == "help":
            argv = [argv[1], "--help"]
        else:
            sys.stdout.write(usage())
            sys.exit(0)
    if argv[0] == "--version":
        print(f"agentsh {__version__}")
        sys.exit(0)
    name = argv[0]
    if name.startswith("-") or "/" in name or not name.replace("-", "").isalnum():
        sys.stderr.write(f"ab: {name!r} is not a command\n" + usage())
        sys.exit(2)
    path = find_command(name)
    if path is None:
        sys.stderr.write(f"ab: unknown command '{name}'; run 'ab' for the list\n")
        sys.exit(2)
    os.execv(path, [f"ab-{name}", *argv[1:]])
