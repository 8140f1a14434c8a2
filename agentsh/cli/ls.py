"""ab-ls: list agentsh sandboxes."""

from agentsh.cli.common import parser, print_json, run

EXAMPLES = [
    "ab-ls",
    "ab-ls --json | jq -r '.[] | select(.state==\"running\") | .name'",
]
COLUMNS = ("name", "state", "image", "created", "project")


def body(argv):
    p = parser("ab-ls", "List every agentsh sandbox: name, project, state, image, created.", EXAMPLES)
    p.add_argument("--json", action="store_true", help="a JSON list of objects")
    args = p.parse_args(argv)

    from agentsh.host.engine import Engine
    from agentsh.policy import config
    from agentsh.sandbox import lifecycle as sandbox

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
