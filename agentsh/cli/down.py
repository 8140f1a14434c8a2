"""ab-down: stop (and remove) sandboxes."""

from agentsh.base.state import Store
from agentsh.cli import options
from agentsh.cli.common import load_context, print_json, run
from agentsh.cli.options import DIR, FLAG, OPTIONAL, Arg, Command, Option
from agentsh.host.engine import Engine
from agentsh.policy import config
from agentsh.sandbox import lifecycle as sandbox

EXAMPLES = [
    "ab-down                 # stop this project's sandbox",
    "ab-down --rm            # remove it (the home volume stays for next time)",
    "ab-down --rm --volumes  # remove it and its home volume",
    "ab-down --all --rm      # remove every agentsh sandbox",
]
COMMAND = Command(
    "ab-down",
    "Stop the sandbox of the project holding DIR (default: .), or all with --all.",
    EXAMPLES,
    args=(Arg("dir", nargs=OPTIONAL, help="a directory inside the project (default: .)", value=DIR),),
    options=(
        Option("--all", kind=FLAG, help="every agentsh sandbox, not one project's"),
        Option("--rm", kind=FLAG, help="remove the container, not only stop it"),
        Option("--volumes", kind=FLAG, help="with --rm: also remove the home volume"),
        Option("--json", kind=FLAG, help="print the names acted on as a JSON list"),
    ),
)


def body(argv):
    p = options.argparser(COMMAND)
    args = p.parse_args(argv)
    if args.all and args.dir:
        p.error("give DIR or --all, not both")
    if args.volumes and not args.rm:
        p.error("--volumes needs --rm")

    if args.all:
        engine = Engine(config.load()["engine"])
        names = [r["name"] for r in sandbox.listing(engine)]
        volumes = [n + "-home" for n in names] if args.volumes else []
        store = Store()
    else:
        proj, _, engine, store = load_context(args.dir)
        names = [proj.sandbox]
        volumes = [proj.home_volume] if args.volumes else []
    done = sandbox.down(engine, names, remove=args.rm, volumes=volumes, store=store)
    if args.json:
        print_json(done)
    else:
        for name in done:
            print(name)
    return 0


def main():
    run("ab-down", body)
