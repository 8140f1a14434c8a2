"""ab-up: create or start the project's sandbox and print its name."""

from agentsh.cli import options
from agentsh.cli.common import load_context, notice, print_json, run
from agentsh.cli.options import APPEND, DIR, FLAG, IMAGE, NETWORK_MODES, OPTIONAL, WORKTREE, Arg, Command, Option

EXAMPLES = [
    "ab-up                      # sandbox for the current project; prints its name",
    "ab-up ~/src/app --json     # name, id, project, image, state as JSON",
    "ab-up --image localhost/mytools:latest",
    "ab-up -p 5173 -p 127.0.0.1:8080:80   # publish ports (5173: a stable host port; see ab-status)",
]


COMMAND = Command(
    "ab-up",
    "Create or start the sandbox of the project holding DIR (default: .) and print its name. Idempotent: an "
    "unchanged running sandbox is reused; a changed spec (config, image name) recreates it.",
    EXAMPLES,
    args=(Arg("dir", nargs=OPTIONAL, help="a directory inside the project (default: .)", value=DIR),),
    options=(
        Option("--wt", metavar="NAME", help="the sandbox of worktree NAME (ab-wt) of the repo holding DIR",
               value=WORKTREE),
        Option("--image", help="image to run (overrides config 'image')", value=IMAGE),
        Option("--recreate", kind=FLAG, help="remove and recreate the sandbox even if unchanged"),
        Option("--json", kind=FLAG, help="print a JSON object instead of the name"),
        Option("--network", choices=NETWORK_MODES,
               help="network mode (overrides config [network] mode; see docs/config.md)"),
        Option("--lockdown", kind=FLAG,
               help="for untrusted repos: no credentials, network only to the agents' APIs, ephemeral home, "
                    "project behind a copy-on-write layer (also config 'lockdown')"),
        Option("-p", "--publish", kind=APPEND, metavar="[IP:][HOST:]CONTAINER[/PROTO]",
               help="publish a port (repeatable; on 127.0.0.1 unless IP is given; without HOST, a stable host "
                    "port for this project); kept until the next ab-up -p"),
    ),
)


def fast_parse(argv):
    """`ab-up [DIR] [--json] [--recreate] [--lockdown] ...` without argparse (~6 ms on a hot path).

    None for anything unusual (--help, mistakes): argparse handles and explains those.
    """
    return options.fast_parse(COMMAND, argv)


def parse(argv):
    return options.argparser(COMMAND).parse_args(argv)


def body(argv):
    args = fast_parse(argv) or parse(argv)
    if args.wt:
        from agentsh.app.worktree import path_of  # lazy: re and git calls, only for --wt

        args.dir = path_of(args.wt, args.dir)

    from agentsh.sandbox import lifecycle as sandbox  # lazy: not for --help or completion, which read only COMMAND

    proj, cfg, engine, store = load_context(args.dir, {"image": args.image,
                                                      "network": {"mode": args.network} if args.network else None})
    locked = args.lockdown or cfg.get("lockdown")
    if locked:
        from agentsh.policy.lockdown import lockdown  # lazy: not for --help or completion, which read only COMMAND

        cfg = lockdown(cfg)
    if args.publish:
        from agentsh.policy.ports import publish_args  # lazy: not for --help or completion, which read only COMMAND

        publish_args(args.publish, proj.root)  # a bad -p is a usage error (2) before anything runs
    record = sandbox.up(proj, cfg, engine, store, recreate=args.recreate, notify=notice, publish=args.publish)
    from agentsh.creds import delivery as inject  # lazy: not for --help or completion, which read only COMMAND

    if not locked:
        inject.deliver(proj, cfg, engine, store, notice, files_only=True)  # granted credential files
    if args.json:
        print_json(record)
    else:
        print(record["name"])
    return 0


def main():
    run("ab-up", body)
