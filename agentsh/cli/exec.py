"""ab-exec: run a command in the project's sandbox, like running it here."""

import os

from agentsh.cli import options
from agentsh.cli.common import load_context, notice, run
from agentsh.cli.options import (
    APPEND,
    DIR,
    FLAG,
    IMAGE,
    ISOLATIONS,
    NETWORK_MODES,
    OFF,
    REST,
    WORKTREE,
    Arg,
    Command,
    Option,
)

EXAMPLES = [
    "ab-exec -- make test                 # in the sandbox, in the same directory",
    "ab-exec --dir ~/src/app -- git status",
    "printf 'a\\0b' | ab-exec -- cat | od -c   # stdin/stdout pass byte for byte",
    "ab-exec -e DEBUG=1 -e GITHUB_TOKEN -- ./script.sh",
    "ab-exec                              # an interactive shell (bash, else sh)",
    "ab-exec --lockdown -e ANTHROPIC_API_KEY -- claude   # an untrusted repo: see docs/security.md",
]


COMMAND = Command(
    "ab-exec",
    "Run CMD in the sandbox of the project holding DIR (default: .), in the same directory, starting the "
    "sandbox if needed. Exit status is CMD's (125: agentsh or the engine failed first; 127: CMD not found; "
    "137: the sandbox was stopped or removed during CMD, which is never run twice). "
    "Only TERM, LANG, LC_*, COLORTERM and TZ pass from the host, plus config 'env' and -e.",
    EXAMPLES,
    options=(
        Option("--dir", help="run in the project holding DIR, in DIR (default: .)", value=DIR),
        Option("--wt", metavar="NAME", help="run in worktree NAME (ab-wt) of the repo holding DIR, at its top",
               value=WORKTREE),
        Option("-e", "--env", kind=APPEND, default=[], metavar="NAME[=VALUE]",
               help="pass a host variable (NAME) or set one (NAME=VALUE); repeatable"),
        Option("-t", "--tty", kind=FLAG, default=None, group="tty", help="allocate a terminal"),
        Option("-T", "--no-tty", dest="tty", kind=OFF, group="tty", help="never allocate a terminal"),
        Option("--image", help="image to use if the sandbox must be created", value=IMAGE),
        Option("--network", choices=NETWORK_MODES,
               help="network mode if the sandbox must be created (overrides config [network] mode)"),
        Option("--isolation", choices=ISOLATIONS,
               help="container or gvisor (a second kernel) if the sandbox must be created (overrides config "
                    "'isolation')"),
        Option("--lockdown", kind=FLAG,
               help="for untrusted repos: no credentials but -e ones, network only to the agents' APIs, "
                    "ephemeral home, project behind a copy-on-write layer (also config 'lockdown')"),
    ),
    args=(Arg("cmd", nargs=REST, metavar="-- CMD [ARG...]", help="the command; default: an interactive shell"),),
)


def fast_parse(argv):
    """The common `ab-exec [--dir D] [-e X]... [-t|-T] [--] CMD...` without argparse.

    argparse costs ~6 ms to import and set up, on a command that should cost
    little more than the engine's exec. None for anything unusual (--help,
    unknown or malformed options), which argparse then explains.
    """
    return options.fast_parse(COMMAND, argv)


def parse(argv):
    return options.parse(COMMAND, argv)


def body(argv):
    args = fast_parse(argv) or parse(argv)
    if args.tty and not args.cmd and not os.isatty(0):  # an interactive shell would wait on a pipe
        from agentsh.base.errors import UsageError  # lazy: only for this refusal (completion imports this module)

        raise UsageError("-t with no command needs a terminal on stdin, and stdin is not one",
                         "run it from a terminal, drop -t (the shell then reads commands from stdin), "
                         "or give a command: ab-exec -t -- CMD")
    if args.wt:
        from agentsh.app.worktree import path_of  # lazy: re and git calls, only for --wt

        args.dir = path_of(args.wt, args.dir)

    from agentsh.app import session  # lazy: not for --help or completion, which read only COMMAND
    from agentsh.policy.shell import shell_command  # lazy: not for --help or completion, which read only COMMAND
    from agentsh.sandbox import execute  # lazy: not for --help or completion, which read only COMMAND

    proj, cfg, engine, store = load_context(args.dir, {"image": args.image,
                                                      "network": {"mode": args.network} if args.network else None,
                                                      "isolation": args.isolation})
    locked = args.lockdown or cfg.get("lockdown")
    if locked:
        from agentsh.policy.lockdown import lockdown  # lazy: re and the network rules, only when locked

        cfg = lockdown(cfg)
    environ = os.environ
    names, values = execute.parse_env_args(args.env, environ)
    tty = args.tty if args.tty is not None else execute.stdio_is_terminal()
    req = session.Request(args.cmd or shell_command(cfg["shell"], tty),
                          os.path.realpath(args.dir if args.dir else os.getcwd()),
                          env_names=[*(n for n in cfg["env"] if n in environ), *names],
                          env_values=values, tty=tty, locked=locked)
    return session.run(proj, cfg, engine, store, req, notice)


def main():
    run("ab-exec", body)
