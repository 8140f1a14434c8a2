"""ab-exec: run a command in the project's sandbox, like running it here."""

import os

from agentsh.cli.common import load_context, notice, parser, run

EXAMPLES = [
    "ab-exec -- make test                 # in the sandbox, in the same directory",
    "ab-exec --dir ~/src/app -- git status",
    "printf 'a\\0b' | ab-exec -- cat | od -c   # stdin/stdout pass byte for byte",
    "ab-exec -e DEBUG=1 -e GITHUB_TOKEN -- ./script.sh",
    "ab-exec                              # an interactive shell (bash, else sh)",
    "ab-exec --lockdown -e ANTHROPIC_API_KEY -- claude   # an untrusted repo: see docs/security.md",
]


# Options the fast parser understands; anything else goes to argparse.
_VALUED = {"--dir": "dir", "-e": "env", "--env": "env", "--image": "image", "--wt": "wt", "--network": "network"}
_FLAGS = {"-t": True, "--tty": True, "-T": False, "--no-tty": False}


class Args:
    def __init__(self):
        self.dir = self.image = self.wt = self.tty = None
        self.lockdown = False
        self.network = None
        self.env = []
        self.cmd = []


def fast_parse(argv):
    """The common `ab-exec [--dir D] [-e X]... [-t|-T] [--] CMD...` without argparse.

    argparse costs ~6 ms to import and set up, on a command that should cost
    little more than the engine's exec. Returns None for anything unusual
    (--help, unknown or malformed options), which argparse then explains.
    """
    args = Args()
    i = 0
    while i < len(argv):
        tok = argv[i]
        if tok == "--":
            args.cmd = argv[i + 1:]
            return args
        if not tok.startswith("-") or tok == "-":
            args.cmd = argv[i:]
            return args
        opt, eq, value = tok.partition("=")
        if opt in _VALUED:
            if not eq:
                if i + 1 >= len(argv):
                    return None
                i += 1
                value = argv[i]
            if _VALUED[opt] == "env":
                args.env.append(value)
            elif getattr(args, _VALUED[opt]) is not None:
                return None
            else:
                setattr(args, _VALUED[opt], value)
        elif tok in _FLAGS and args.tty is None:
            args.tty = _FLAGS[tok]
        elif tok == "--lockdown":
            args.lockdown = True
        else:
            return None
        i += 1
    return args


def parse(argv):
    import argparse

    p = parser("ab-exec", "Run CMD in the sandbox of the project holding DIR (default: .), in the same "
               "directory, starting the sandbox if needed. Exit status is CMD's (125: agentsh or the "
               "engine failed first; 127: CMD not found). Only TERM, LANG, LC_*, COLORTERM and TZ "
               "pass from the host, plus config 'env' and -e.", EXAMPLES)
    p.add_argument("--dir", help="run in the project holding DIR, in DIR (default: .)")
    p.add_argument("--wt", metavar="NAME", help="run in worktree NAME (ab-wt) of the repo holding DIR, at its top")
    p.add_argument("-e", "--env", action="append", default=[], metavar="NAME[=VALUE]",
                   help="pass a host variable (NAME) or set one (NAME=VALUE); repeatable")
    tty = p.add_mutually_exclusive_group()
    tty.add_argument("-t", "--tty", action="store_true", default=None, help="allocate a terminal")
    tty.add_argument("-T", "--no-tty", dest="tty", action="store_false", help="never allocate a terminal")
    p.add_argument("--image", help="image to use if the sandbox must be created")
    p.add_argument("--network", choices=("full", "none", "allow", "learn"),
                   help="network mode if the sandbox must be created (overrides config [network] mode)")
    p.add_argument("--lockdown", action="store_true",
                   help="for untrusted repos: no credentials but -e ones, network only to the agents' APIs, "
                        "ephemeral home, project behind a copy-on-write layer (also config 'lockdown')")
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD [ARG...]",
                   help="the command; default: an interactive shell")
    args = p.parse_args(argv)
    if args.cmd[:1] == ["--"]:
        args.cmd = args.cmd[1:]
    return args


def body(argv):
    args = fast_parse(argv) or parse(argv)
    if args.network not in (None, "full", "none", "allow", "learn"):
        parse(argv)  # argparse names the valid modes and exits 2
    if args.wt:
        from agentsh.app.worktree import path_of

        args.dir = path_of(args.wt, args.dir)

    from agentsh.app import session
    from agentsh.policy.shell import shell_command
    from agentsh.sandbox import execute

    proj, cfg, engine, store = load_context(args.dir, {"image": args.image,
                                                      "network": {"mode": args.network} if args.network else None})
    locked = args.lockdown or cfg.get("lockdown")
    if locked:
        from agentsh.policy.lockdown import lockdown

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
