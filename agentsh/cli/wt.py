"""ab-wt: git worktrees under the user data dir, one sandbox each."""

import sys

from agentsh.cli import options
from agentsh.cli.common import print_json, run
from agentsh.cli.ls import print_table
from agentsh.cli.options import DIR, FLAG, OPTIONAL, WORKTREE, Arg, Command, Option

SUBCOMMANDS = {
    "new": "make a worktree (and branch) and print its path",
    "ls": "list the repo's worktrees: branch, HEAD, clean or dirty, sandbox state",
    "path": "print a worktree's path",
    "rm": "remove a worktree with its sandbox and home volume",
    "prune": "forget worktrees whose directories are gone, and their sandboxes",
}
EXAMPLES = [
    'cd "$(ab-wt new fix-login)" && ab-exec -- claude   # one agent per worktree',
    "ab-wt new feat/search --from origin/main",
    "ab-exec --wt fix-login -- git log --oneline -3",
    "ab-wt ls",
    "ab-wt rm fix-login --delete-branch",
]
_REPO_DIR = Arg("dir", nargs=OPTIONAL, help="a directory inside the repository (default: .)", value=DIR)
_REPO_DIR_OPTION = Option("--dir", help="a directory inside the repository (default: .)", value=DIR)
_WORKTREE = Arg("name", value=WORKTREE)
# ab-wt dispatches its subcommands itself (usage() lists them); each has its own table.
COMMAND = Command("ab-wt", subcommands=(
    Command("ab-wt new",
            "Make worktree NAME of the repo holding DIR (default: .) on branch BRANCH (default: NAME; made from REF, "
            "default HEAD, unless it exists, when it is checked out) and print its path, alone on stdout.",
            ['cd "$(ab-wt new fix-login)"', "ab-wt new review-42 --branch pr/42",
             "ab-wt new spike --from v1.2.0 ~/src/app"],
            help=SUBCOMMANDS["new"],
            args=(Arg("name", help="worktree name: letters, digits, '.', '_', '-', '/'"), _REPO_DIR),
            options=(Option("--from", dest="ref", metavar="REF", help="make the new branch from REF (default: HEAD)"),
                     Option("--branch", help="branch to make or check out (default: NAME)"),
                     Option("--json", kind=FLAG, help="print the worktree's record as JSON"))),
    Command("ab-wt ls",
            "List the worktrees agentsh made in the repo holding DIR (default: .): name, path, branch, HEAD, "
            "clean/dirty/missing and the sandbox's state.",
            ["ab-wt ls", "ab-wt ls --json | jq -r '.[] | select(.dirty) | .name'"],
            help=SUBCOMMANDS["ls"], args=(_REPO_DIR,),
            options=(Option("--json", kind=FLAG, help="a JSON list of objects"),)),
    Command("ab-wt path", "Print the directory of worktree NAME of the repo holding DIR (default: .).",
            ['cd "$(ab-wt path fix-login)"', "ab-exec --dir \"$(ab-wt path fix-login)\" -- git status"],
            help=SUBCOMMANDS["path"], args=(_WORKTREE,), options=(_REPO_DIR_OPTION,)),
    Command("ab-wt rm",
            "Remove worktree NAME together with its sandbox and home volume. Refuses a worktree with uncommitted "
            "or untracked changes, or with commits not merged into the main checkout's HEAD (or the branch's "
            "upstream), unless --force.",
            ["ab-wt rm fix-login", "ab-wt rm spike --force --delete-branch"],
            help=SUBCOMMANDS["rm"], args=(_WORKTREE,),
            options=(_REPO_DIR_OPTION,
                     Option("--force", kind=FLAG, help="remove even with changes or unmerged commits"),
                     Option("--delete-branch", kind=FLAG, help="also delete the worktree's branch"),
                     Option("--json", kind=FLAG, help="print what was removed as JSON"))),
    Command("ab-wt prune",
            "Forget the worktrees of the repo holding DIR (default: .) whose directories are gone, removing their "
            "sandboxes and home volumes. Their branches stay.",
            ["ab-wt prune", "ab-wt prune --all --json"],
            help=SUBCOMMANDS["prune"], args=(_REPO_DIR,),
            options=(Option("--all", kind=FLAG, help="every repository's worktrees, not one's"),
                     Option("--json", kind=FLAG, help="print the forgotten worktrees as a JSON list"))),
))


def usage():
    lines = ["usage: ab-wt COMMAND [ARGS...]", "",
             "Git worktrees of the repo holding the current directory, each its own project with its "
             "own sandbox; they live under the user data dir.", "", "commands:"]
    lines += [f"  {name:<6} {text}" for name, text in SUBCOMMANDS.items()]
    lines += ["", "'ab-wt COMMAND --help' explains each one.", "", "examples:"]
    lines += [f"  {line}" for line in EXAMPLES]
    return "\n".join(lines) + "\n"


def new(argv):
    args = options.parse(COMMAND.subcommands["new"], argv)

    from agentsh.app import worktree  # lazy: re and git calls; not for --help or completion

    record = worktree.create(args.name, args.dir, ref=args.ref, branch=args.branch)
    if args.json:
        print_json(record)
    else:
        print(record["path"])
    return 0


LS_COLUMNS = ("name", "branch", "head", "status", "sandbox", "path")


def ls(argv):
    args = options.parse(COMMAND.subcommands["ls"], argv)

    from agentsh.app import worktree  # lazy: re and git calls; not for --help or completion

    rows = worktree.listing(args.dir)
    if args.json:
        print_json(rows)
        return 0
    table = [{**r, "head": (r["head"] or "-")[:12], "branch": r["branch"] or "(detached)",
              "status": "missing" if not r["exists"] else "dirty" if r["dirty"] else "clean",
              "sandbox": r["sandbox_state"]} for r in rows]
    print_table(table, LS_COLUMNS)
    return 0


def path(argv):
    args = options.parse(COMMAND.subcommands["path"], argv)

    from agentsh.app import worktree  # lazy: re and git calls; not for --help or completion

    print(worktree.path_of(args.name, args.dir))
    return 0


def rm(argv):
    args = options.parse(COMMAND.subcommands["rm"], argv)

    from agentsh.app import worktree  # lazy: re and git calls; not for --help or completion

    done = worktree.remove(args.name, args.dir, force=args.force, delete_branch=args.delete_branch)
    if args.json:
        print_json(done)
    else:
        print(f"removed {done['name']} ({done['path']})" +
              (f"; deleted branch {done['branch']}" if done["branch_deleted"] else ""))
    return 0


def prune(argv):
    p = options.argparser(COMMAND.subcommands["prune"])
    args = p.parse_args(argv)
    if args.all and args.dir:
        p.error("give DIR or --all, not both")

    from agentsh.app import worktree  # lazy: re and git calls; not for --help or completion

    pruned = worktree.prune(args.dir, all_repos=args.all)
    if args.json:
        print_json(pruned)
    else:
        for record in pruned:
            print(f"forgot {record['name']} ({record['path']})")
    return 0


def body(argv):
    if not argv or argv[0] in ("-h", "--help", "help"):
        (sys.stdout if argv else sys.stderr).write(usage())
        return 0 if argv else 2
    command = {"new": new, "ls": ls, "path": path, "rm": rm, "prune": prune}.get(argv[0])
    if command is None:
        sys.stderr.write(f"ab-wt: unknown command {argv[0]!r}\n" + usage())
        return 2
    return command(argv[1:])


def main():
    run("ab-wt", body)
