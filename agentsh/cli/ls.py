"""ab-ls: list agentsh sandboxes."""

from agentsh.cli import options
from agentsh.cli.common import print_json, run
from agentsh.cli.options import FLAG, Command, Option
from agentsh.host.engine import Engine
from agentsh.policy import config
from agentsh.sandbox import lifecycle as sandbox

EXAMPLES = [
    "ab-ls",
    "ab-ls --json | jq -r '.[] | select(.state==\"running\") | .name'",
]
COLUMNS = ("name", "state", "image", "created", "project")
COMMAND = Command("ab-ls", "List every agentsh sandbox: name, project, state, image, created.", EXAMPLES,
                  options=(Option("--json", kind=FLAG, help="a JSON list of objects"),))


def body(argv):
    args = options.parse(COMMAND, argv)

    rows = sandbox.listing(Engine(config.load()["engine"]))
    if args.json:
        print_json(rows)
        return 0
    print_table(rows, COLUMNS)
    return 0


def print_table(rows, columns):
    widths = [max([len(c)] + [len(str(r[c])) for r in rows]) for c in columns]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths)).rstrip())
    for r in rows:
        print("  ".join(str(r[c]).ljust(w) for c, w in zip(columns, widths)).rstrip())


def main():
    run("ab-ls", body)
