"""ab-log: the egress audit log of a project's sandbox (network modes "allow" and "learn")."""

import sys

from agentsh.base.state import Store
from agentsh.cli import options
from agentsh.cli.common import run
from agentsh.cli.options import DIR, FLAG, OPTIONAL, Arg, Command, Option
from agentsh.host import project

EXAMPLES = [
    "ab-log                     # every connection attempt of this project's sandbox",
    "ab-log --denied            # only the refused ones (then: ab-net allow HOST)",
    "ab-log --follow            # keep printing new attempts (Ctrl-C stops)",
    "ab-log --json ~/src/app    # a JSON list; with --follow, one JSON object per line",
]
COMMAND = Command(
    "ab-log",
    "Show the connection attempts the egress proxy saw for the sandbox of the project holding DIR (default: .): "
    "time, ALLOW/DENY, host:port, method, bytes, rule or reason. Allowed connections are written when they "
    "close, refused ones at once.",
    EXAMPLES,
    args=(Arg("dir", nargs=OPTIONAL, help="a directory inside the project (default: .)", value=DIR),),
    options=(
        Option("-f", "--follow", kind=FLAG, help="wait for new entries and print them"),
        Option("--denied", kind=FLAG, help="only refused attempts"),
        Option("--json", kind=FLAG,
               help="JSON: a list of entries (keys: time, sandbox, host, port, method, allowed, reason, "
                    "bytes_sent, bytes_received, ms; warning: true on a credential placeholder sent where it is not "
                    "replaced); with --follow one object per line"),
    ),
)


def body(argv):
    args = options.parse(COMMAND, argv)


    from agentsh.egress import audit, network  # lazy: json and re; not for --help or completion

    proj = project.find(args.dir)
    path = Store().path(network.audit_rel(proj.sandbox))
    # Entries hold what the sandbox sent: JSON escapes control and non-ASCII
    # characters (and DEL, see audit.ascii_json); text goes through audit.printable.
    show = audit.ascii_json if args.json else audit.format_entry
    if args.json and not args.follow:
        sys.stdout.write(audit.ascii_json(audit.read(path, args.denied), indent=2) + "\n")
        return 0
    for entry in audit.read(path, args.denied):
        print(show(entry))
    if args.follow:
        sys.stdout.flush()
        for entry in audit.follow(path, args.denied):
            print(show(entry), flush=True)
    return 0


def main():
    run("ab-log", body)
